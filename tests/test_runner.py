"""The engine runner: its watchdog, and prefill-ahead jobs that yield to requests."""

from __future__ import annotations

import asyncio
import threading
import time

from phi_lsp.runner import EngineRunner


async def test_watchdog_stops_a_stuck_generation() -> None:
    runner = EngineRunner()
    runner.engine = object()  # type: ignore[assignment]  # the work below never touches it

    def stuck(engine: object, stop: threading.Event) -> str:
        while not stop.is_set():  # a generation that only ends when told to
            time.sleep(0.01)
        return "stopped"

    assert await runner.run("file:///a.py", stuck, timeout_s=0.2) == "stopped"
    runner.shutdown()


async def test_warm_runs_when_idle_and_a_request_stops_it() -> None:
    runner = EngineRunner()
    runner.engine = _Warms()  # type: ignore[assignment]  # only its `warms` flag is read
    started, pieces = threading.Event(), []

    def prefill(engine: object, stop: threading.Event) -> int:
        started.set()
        while not stop.is_set() and len(pieces) < 500:  # a long prefill, piece by piece
            pieces.append(1)
            time.sleep(0.01)
        return len(pieces)

    runner.warm(prefill)
    assert started.wait(5)
    assert await runner.run("file:///a.py", lambda engine, stop: len(pieces)) < 500
    runner.shutdown()


async def test_a_newer_warm_replaces_a_queued_one() -> None:
    runner = EngineRunner()
    runner.engine = _Warms()  # type: ignore[assignment]
    ran: list[str] = []
    gate = threading.Event()
    runner.warm(lambda engine, stop: gate.wait(5) and 0)  # holds the worker
    runner.warm(lambda engine, stop: ran.append("old") or 0)
    runner.warm(lambda engine, stop: ran.append("new") or 0)
    gate.set()
    await runner.run("file:///a.py", lambda engine, stop: None)
    assert ran == []  # both were stopped: the newer one by the request
    runner.warm(lambda engine, stop: ran.append("idle") or 0)
    await asyncio.sleep(0.2)
    assert ran == ["idle"]
    runner.shutdown()


class _Warms:
    warms = True


def test_warm_after_shutdown_is_a_no_op() -> None:
    runner = EngineRunner()
    runner.engine = _Warms()  # type: ignore[assignment]
    runner.shutdown()
    runner.warm(lambda engine, stop: 0)  # a didOpen that arrives after `shutdown`
