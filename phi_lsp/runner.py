"""The engine's home: one worker thread, background loading, newest-request-wins.

The event loop never runs model code. Loading and generating happen on a single worker thread,
so a generation never overlaps a load or another generation. Each document has at most one
request that counts: a new one sets the previous one's stop flag, and the engine checks that
flag after every token. When nothing else is queued the worker may prefill the prompt the
user is typing towards (`warm`); any request stops that within one prefill piece.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from phi_lsp.engines.base import Engine
from phi_lsp.engines.loader import load_engine
from phi_lsp.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Superseded(Exception):
    """A newer request for the same document took this one's place."""


class EngineRunner:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phi-engine")
        self.engine: Engine | None = None
        self.loading = False
        self.load_error: str | None = None
        self._in_flight: dict[str, threading.Event] = {}
        self._load_generation = 0
        self._warm_stop = threading.Event()

    @property
    def ready(self) -> bool:
        return self.engine is not None and not self.loading

    async def load(self, settings: Settings) -> Engine:
        """Load the engine for `settings` on the worker thread, replacing the current one.

        Raises ModelLoadError (or any loading error); the previous engine is closed either way,
        since its settings are no longer the ones in force.
        """
        self._load_generation += 1
        ticket = self._load_generation
        self.loading, self.load_error = True, None
        self._warm_stop.set()
        for stop in self._in_flight.values():
            stop.set()
        old, self.engine = self.engine, None
        loop = asyncio.get_running_loop()
        try:
            if old is not None:
                await loop.run_in_executor(self._executor, old.close)
            engine = await loop.run_in_executor(self._executor, load_engine, settings)
        except BaseException as exc:
            if ticket == self._load_generation:
                self.loading, self.load_error = False, str(exc)
            raise
        if ticket != self._load_generation:  # a newer load started meanwhile: it wins
            await loop.run_in_executor(self._executor, engine.close)
            raise Superseded("a newer model load replaced this one")
        self.engine, self.loading = engine, False
        return engine

    async def run(
        self, key: str, work: Callable[[Engine, threading.Event], T], timeout_s: float = 120.0
    ) -> T:
        """Run `work(engine, stop)` on the worker; a newer run for `key` stops this one.

        A watchdog sets the stop flag after `timeout_s`, so a stuck generation cannot hold the
        engine (and every later request) forever.

        Raises Superseded when a newer request for `key` arrived before this one finished, and
        CancelledError (after setting the stop flag) when the client cancels.
        """
        engine = self.engine
        if engine is None:
            raise RuntimeError("no model is loaded")
        self._warm_stop.set()
        stop = threading.Event()
        previous = self._in_flight.get(key)
        if previous is not None:
            previous.set()
        self._in_flight[key] = stop
        loop = asyncio.get_running_loop()
        watchdog = loop.call_later(timeout_s, _expire, key, stop)
        try:
            if stop.is_set():
                raise Superseded(key)
            result = await loop.run_in_executor(self._executor, _guarded, work, engine, stop)
        except asyncio.CancelledError:
            stop.set()
            raise
        finally:
            watchdog.cancel()
            if self._in_flight.get(key) is stop:
                del self._in_flight[key]
        if stop.is_set() and not getattr(stop, "expired", False):
            raise Superseded(key)
        return result

    def warm(self, work: Callable[[Engine, threading.Event], int]) -> None:
        """Run `work(engine, stop)` on the worker when no request needs it (fire and forget).

        A newer warm job replaces this one, and every `run` stops it; either way it ends within
        one prefill piece. It never runs during a model load.
        """
        engine = self.engine
        if engine is None or self.loading or not engine.warms:
            return
        self._warm_stop.set()
        self._warm_stop = stop = threading.Event()
        try:
            future = self._executor.submit(_guarded, work, engine, stop)
        except RuntimeError:  # shut down: nothing more will run
            return
        future.add_done_callback(_log_warm_failure)

    def forget(self, key: str) -> None:
        """Stop and drop the request for a closed document."""
        stop = self._in_flight.pop(key, None)
        if stop is not None:
            stop.set()

    def shutdown(self) -> None:
        self._warm_stop.set()
        for stop in self._in_flight.values():
            stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _expire(key: str, stop: threading.Event) -> None:
    log.warning("watchdog: the request for %s ran too long; stopping it", key)
    stop.expired = True  # type: ignore[attr-defined]
    stop.set()


def _log_warm_failure(future: Future[int]) -> None:
    if not future.cancelled() and not isinstance(future.exception(), Superseded | type(None)):
        log.warning("prefill ahead failed: %s", future.exception())


def _guarded(
    work: Callable[[Engine, threading.Event], T], engine: Engine, stop: threading.Event
) -> T:
    """Skip work that was superseded while it waited in the queue."""
    if stop.is_set():
        raise Superseded("superseded while queued")
    return work(engine, stop)
