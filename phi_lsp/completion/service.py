"""From a completion request to a suggestion: typed-ahead cache, debounce, engine, logging.

The handlers call `Completer.suggest`; it answers from the cache when the user is typing into a
suggestion already shown, waits out fast typing bursts, and otherwise runs the pipeline on the
engine's worker. The newest request wins across all documents: the user has one cursor, and a
request for another file must not wait for the previous file's generation.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable

from phi_lsp.completion.cache import SuggestionCache
from phi_lsp.completion.debounce import TypingRhythm
from phi_lsp.completion.pipeline import Suggestion, suggest
from phi_lsp.completion.prefill import Prefill
from phi_lsp.runtime.engines.base import Engine
from phi_lsp.runtime.runner import EngineRunner, Priority, Superseded
from phi_lsp.settings import Settings

log = logging.getLogger(__name__)

# Most an adaptive debounce waits.
MAX_DEBOUNCE_S = 0.15
# The runner key all completions share: a new one stops the previous one, whatever its document.
COMPLETIONS = "completions"


class Completer:
    def __init__(
        self,
        runner: EngineRunner,
        settings: Callable[[], Settings],
        report: Callable[[str], None] = lambda message: None,
        prefill: Prefill | None = None,
    ) -> None:
        self.runner = runner
        # Prefill during the debounce (the server shares one Prefill with its document events).
        self.prefill = prefill or Prefill(runner, settings)
        self.settings = settings
        # Tells the editor when the engine keeps failing, once per failure streak.
        self.report = report
        self.failures = 0
        self.cache = SuggestionCache()
        self._rhythms: dict[str, TypingRhythm] = {}
        # The newest request (its id and document): any older one is superseded.
        self._latest: tuple[int, str] | None = None
        self._ids = itertools.count(1)
        self.model_calls = 0
        self.cache_hits = 0

    def edited(self, uri: str) -> None:
        """A didChange arrived: it feeds the typing rhythm."""
        self._rhythms.setdefault(uri, TypingRhythm()).keystroke(time.monotonic())

    def closed(self, uri: str) -> None:
        self.cache.forget(uri)
        self._rhythms.pop(uri, None)
        if self._latest is not None and self._latest[1] == uri:
            self._latest = None
            self.runner.forget(COMPLETIONS)

    async def suggest(self, uri: str, text: str, offset: int) -> Suggestion | None:
        """The suggestion at `offset`, or None when superseded, cancelled or failed."""
        request_id = next(self._ids)
        t0 = time.perf_counter()
        prefix = text[:offset]
        line_end = text.find("\n", offset)
        line_suffix = text[offset : None if line_end < 0 else line_end].rstrip("\r")
        cached = (
            self.cache.get(uri, prefix, line_suffix) if self.settings().typed_ahead_cache else None
        )
        if cached is not None:
            self.cache_hits += 1
            log.info(
                "req %d %s cache hit chars=%d total=%.1fms", request_id, uri, len(cached), _ms(t0)
            )
            return Suggestion(cached, mode="cache", cached=True)
        self._latest = (request_id, uri)
        if not await self._debounce(uri, request_id, text, offset):
            log.info("req %d superseded while debouncing", request_id)
            return None
        settings = self.settings()

        def work(engine: Engine, stop: threading.Event) -> Suggestion:
            # Logged here, on the worker, so a cancelled generation is logged when it stops.
            result = suggest(engine, text, offset, settings, stop)
            _log_request(request_id, uri, result, _ms(t0))
            return result

        try:
            self.model_calls += 1
            result = await self.runner.run(COMPLETIONS, work, priority=Priority.COMPLETION)
        except Superseded:
            log.info("req %d superseded after %.0f ms", request_id, _ms(t0))
            return None
        except asyncio.CancelledError:
            log.info("req %d cancelled after %.0f ms", request_id, _ms(t0))
            raise
        except Exception as exc:
            self._failed(request_id, exc)
            return None
        if self.failures:
            log.info("the engine answers again after %d failure(s)", self.failures)
            self.failures = 0
        healed = "" if result.forced else result.healed
        self.cache.put(uri, prefix, line_suffix, result.text, healed)
        return result

    def _failed(self, request_id: int, exc: Exception) -> None:
        """One log line per failure; one editor message when failures repeat."""
        self.failures += 1
        log.warning("req %d failed: %s: %s", request_id, exc.__class__.__name__, exc)
        if self.failures == 2:
            self.report(f"phi-lsp: completions are failing: {exc}")

    async def _debounce(self, uri: str, request_id: int, text: str, offset: int) -> bool:
        """Wait as the settings say; False when a newer request (any document) arrived meanwhile.

        The engine prefills the lines above the cursor during the wait (a request that does not
        wait would stop that prefill before it began).
        """
        setting = self.settings().debounce_ms
        rhythm = self._rhythms.get(uri)
        if setting is not None:
            wait = setting / 1000
        else:
            wait = rhythm.delay(time.monotonic(), MAX_DEBOUNCE_S) if rhythm else 0.0
        if wait > 0:
            self.prefill.typing(uri, text, offset)
            await asyncio.sleep(wait)
        return self._latest == (request_id, uri)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def _log_request(request_id: int, uri: str, result: Suggestion, total_ms: float) -> None:
    gen = result.generation
    timings = " ".join(f"{k}={v:.0f}ms" for k, v in result.timings_ms.items())
    if gen is None:
        log.info("req %d %s mode=%s skipped total=%.0fms", request_id, uri, result.mode, total_ms)
        return
    log.info(
        "req %d %s mode=%s prompt_tokens=%d evaluated=%d generated=%d stopped=%s chars=%d "
        "%s total=%.0fms",
        request_id,
        uri,
        result.mode,
        gen.prompt_tokens,
        gen.evaluated_tokens,
        gen.generated_tokens,
        gen.stopped,
        len(result.text),
        timings,
        total_ms,
    )
