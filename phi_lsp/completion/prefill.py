"""Prefill ahead: the engine evaluates the prompt the user is typing towards while it is idle.

All of it is here, for three moments:

- a document is opened (or the model becomes ready with one in focus): its start, as much as
  one prompt holds (`warm_document`);
- the user types in a burst: the lines above the cursor, during the debounce (`warm`);
- the user moves to another document: it becomes the focus.

The prompt is `pipeline.engine_prompt`'s, so the engine's prefix cache matches the request that
follows. The mechanism sits below: `EngineRunner.warm` runs the work when the worker is idle and
every request stops it, `Engine.warm` evaluates in pieces and checks the stop between them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from phi_lsp.completion.pipeline import engine_prompt, prompt_budget
from phi_lsp.completion.prompt import CHARS_PER_TOKEN_CAP
from phi_lsp.runtime.engines.base import Engine
from phi_lsp.runtime.runner import EngineRunner
from phi_lsp.settings import Settings

log = logging.getLogger(__name__)


class Prefill:
    """When to prefill what; the runner's idle slot does the work."""

    def __init__(self, runner: EngineRunner, settings: Callable[[], Settings]) -> None:
        self.runner = runner
        self.settings = settings
        # The document last opened or edited: the one to prefill when the model becomes ready.
        self.focus: str | None = None

    def opened(self, uri: str, text: str) -> None:
        """A document was opened: it is the focus; prefill its start."""
        self.focus = uri
        self._schedule(
            uri, lambda engine, settings, stop: warm_document(engine, text, settings, stop)
        )

    def edited(self, uri: str) -> None:
        self.focus = uri

    def typing(self, uri: str, text: str, offset: int) -> None:
        """Prefill the lines above the cursor while the user types on its line."""
        self._schedule(
            uri, lambda engine, settings, stop: warm(engine, text, offset, settings, stop)
        )

    def model_ready(self, text_of: Callable[[str], str | None]) -> None:
        """The model just loaded: prefill the document in focus (`text_of` reads it)."""
        text = text_of(self.focus) if self.focus else None
        if self.focus and text is not None:
            self.opened(self.focus, text)

    def _schedule(
        self, uri: str, prefill: Callable[[Engine, Settings, threading.Event], int]
    ) -> None:
        """Hand `prefill` to the runner as idle-time work (unless the prefix cache is off)."""
        settings = self.settings()
        if not (settings.prefix_cache and settings.enable):
            return

        def work(engine: Engine, stop: threading.Event) -> int:
            t0 = time.perf_counter()
            evaluated = prefill(engine, settings, stop)
            if evaluated:
                log.info(
                    "warm %s evaluated=%d %.0fms", uri, evaluated, (time.perf_counter() - t0) * 1000
                )
            return evaluated

        self.runner.warm(work)


def warm(engine: Engine, text: str, offset: int, settings: Settings, stop: threading.Event) -> int:
    """Prefill the prompt up to the start of the cursor's line; the tokens evaluated.

    Called while the user types (no request reaches the engine during a burst), so that when
    they pause only the current line is left to evaluate. The prompt comes from the same
    `engine_prompt` as `suggest`'s, so the engine's prefix cache matches.
    """
    prompt = engine_prompt(engine, text[:offset], settings)
    stable = prompt[: prompt.rfind("\n") + 1]
    return engine.warm(stable, stop) if stable else 0


def warm_document(engine: Engine, text: str, settings: Settings, stop: threading.Event) -> int:
    """Prefill the start of a document the user just opened: as much as one prompt holds.

    Every prompt inside that part of the file starts with those tokens, so wherever the user
    then types (above the budget's end) only the lines near the cursor are left to evaluate.
    """
    budget = prompt_budget(engine, settings)
    end = used = 0
    # Line by line: the sum over lines is at least the tokens of the lines together.
    for line in text[: budget * CHARS_PER_TOKEN_CAP].splitlines(keepends=True):
        used += len(engine.tokenize(line))
        if used > budget or stop.is_set():
            break
        end += len(line)
    return warm(engine, text, end, settings, stop)
