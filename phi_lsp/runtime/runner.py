"""The engine's home: one worker thread, background loading, newest-request-wins.

The event loop never runs model code. Loading and generating happen on a single worker thread,
so a generation never overlaps a load or another generation. Each key (all completions share
one) has at most one request that counts: a new one sets the previous one's stop flag, and the
engine checks that flag after every token. Queued jobs run by priority: loads, then
completions, then background work (docstring→body candidates, one job each, so a completion
waits at most for the candidate being written), then prefill. When nothing else is queued the
worker may prefill the prompt the user is typing towards (`warm`); any request stops that
within one prefill piece.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import IntEnum
from typing import Any, TypeVar

from phi_lsp.runtime.engines.base import Engine
from phi_lsp.runtime.engines.loader import load_engine
from phi_lsp.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Superseded(Exception):
    """A newer request (or a model load) took this one's place."""


class Priority(IntEnum):
    """Which queued job the worker takes first (lower first; FIFO within one priority)."""

    LOAD = 0
    COMPLETION = 1
    BACKGROUND = 2
    WARM = 3


class PriorityWorker:
    """One worker thread whose queue is ordered by `Priority`.

    Each submitted job also submits one "run the most urgent queued job" step to a
    single-thread executor, so every job runs exactly once, most urgent first, and the
    executor's shutdown and interpreter-exit handling still apply.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phi-engine")
        self._queue: list[tuple[int, int, Callable[[], Any], Future[Any]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, priority: Priority, job: Callable[[], T]) -> Future[T]:
        """Queue `job`; RuntimeError once shut down."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine worker is shut down")
            heapq.heappush(self._queue, (priority, next(self._order), job, future))
            self._executor.submit(self._run_next)
        return future

    async def call(self, priority: Priority, job: Callable[[], T]) -> T:
        """Run `job` on the worker and wait for it; cancelling the wait drops a queued job."""
        return await asyncio.wrap_future(self.submit(priority, job))

    def _run_next(self) -> None:
        with self._lock:
            if not self._queue:
                return
            _, _, job, future = heapq.heappop(self._queue)
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(job())
        except BaseException as exc:  # handed to whoever awaits the job
            future.set_exception(exc)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            queued, self._queue = self._queue, []
        for *_, future in queued:
            future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class EngineRunner:
    def __init__(self) -> None:
        self._worker = PriorityWorker()
        self.engine: Engine | None = None
        self.loading = False
        self.load_error: str | None = None
        self._in_flight: dict[str, threading.Event] = {}
        self._load_generation = 0
        self._warm_stop = threading.Event()

    @property
    def ready(self) -> bool:
        return self.engine is not None and not self.loading

    def reserve_load(self) -> int:
        """A ticket for a load about to begin: every load asked for before is superseded."""
        self._load_generation += 1
        return self._load_generation

    async def load(self, settings: Settings, ticket: int | None = None) -> Engine:
        """Load the engine for `settings` on the worker thread, replacing the current one.

        Raises ModelLoadError (or any loading error); the previous engine is closed either way,
        since its settings are no longer the ones in force. `ticket` is from `reserve_load`
        (default: a new one). Raises Superseded when a newer load was asked for before this
        one finished: then this one does not load at all if it had not begun, and its failure,
        if it fails, is not reported (the newer load's result counts).
        """
        ticket = self.reserve_load() if ticket is None else ticket
        if ticket != self._load_generation:
            raise Superseded("a newer model load was asked for before this one began")
        self.loading, self.load_error = True, None
        self._warm_stop.set()
        for stop in self._in_flight.values():
            stop.set()
        old, self.engine = self.engine, None
        try:
            if old is not None:
                await self._worker.call(Priority.LOAD, old.close)
            engine = await self._worker.call(
                Priority.LOAD, functools.partial(self._load_if_current, ticket, settings)
            )
        except Superseded:
            raise
        except BaseException as exc:
            if ticket != self._load_generation:
                raise Superseded("a newer model load replaced this one") from exc
            self.loading, self.load_error = False, str(exc)
            raise
        if ticket != self._load_generation:  # a newer load started meanwhile: it wins
            await self._worker.call(Priority.LOAD, engine.close)
            raise Superseded("a newer model load replaced this one")
        self.engine, self.loading = engine, False
        return engine

    def _load_if_current(self, ticket: int, settings: Settings) -> Engine:
        """On the worker: load, unless a newer load was asked for while this one queued."""
        if ticket != self._load_generation:
            raise Superseded("a newer model load replaced this one before it started")
        return load_engine(settings)

    async def run(
        self,
        key: str,
        work: Callable[[Engine, threading.Event], T],
        timeout_s: float = 120.0,
        priority: Priority = Priority.COMPLETION,
    ) -> T:
        """Run `work(engine, stop)` on the worker; a newer run for `key` stops this one.

        A watchdog sets the stop flag after `timeout_s`, so a stuck generation cannot hold the
        engine (and every later request) forever.

        Raises Superseded when a newer request for `key` arrived before this one finished or a
        model load is under way, and CancelledError (after setting the stop flag) when the
        client cancels.
        """
        engine = self.engine
        if engine is None:
            if self.loading:
                raise Superseded("the model is loading")
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
            job = functools.partial(_guarded, work, engine, stop)
            result = await self._worker.call(priority, job)
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
            future = self._worker.submit(
                Priority.WARM, functools.partial(_guarded, work, engine, stop)
            )
        except RuntimeError:  # shut down: nothing more will run
            return
        future.add_done_callback(_log_warm_failure)

    def forget(self, key: str) -> None:
        """Stop and drop the request for `key` (e.g. of a closed document)."""
        stop = self._in_flight.pop(key, None)
        if stop is not None:
            stop.set()

    def shutdown(self) -> None:
        self._warm_stop.set()
        for stop in self._in_flight.values():
            stop.set()
        self._worker.shutdown()


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
