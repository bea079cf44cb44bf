"""The engine runner: its watchdog, and prefill-ahead jobs that yield to requests."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from needs import need_module

from phi_lsp.completion.service import COMPLETIONS, Completer
from phi_lsp.runtime.runner import EngineRunner, Priority, Superseded
from phi_lsp.settings import Settings
from testkit.tinymodel import TinyModel


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


async def test_a_completion_for_another_document_stops_the_one_in_flight() -> None:
    """Newest wins across documents: all completions share one key."""
    runner = EngineRunner()
    runner.engine = object()  # type: ignore[assignment]  # the work below never touches it
    started = threading.Event()

    def long_generation(engine: object, stop: threading.Event) -> str:
        started.set()
        while not stop.is_set():
            time.sleep(0.01)
        return "stopped"

    first = asyncio.ensure_future(runner.run(COMPLETIONS, long_generation))
    assert await asyncio.to_thread(started.wait, 5)
    assert await runner.run(COMPLETIONS, lambda engine, stop: "b.py's") == "b.py's"
    with pytest.raises(Superseded):
        await first
    runner.shutdown()


async def test_queued_completions_run_before_queued_background_work() -> None:
    runner = EngineRunner()
    runner.engine = object()  # type: ignore[assignment]
    gate, ran = threading.Event(), []
    holding = asyncio.ensure_future(
        runner.run("body", lambda engine, stop: gate.wait(5), priority=Priority.BACKGROUND)
    )
    await asyncio.sleep(0.05)  # the worker holds the gate job
    queued = [
        asyncio.ensure_future(
            runner.run(key, lambda engine, stop, key=key: ran.append(key), priority=priority)
        )
        for key, priority in [
            ("candidate 2", Priority.BACKGROUND),
            ("completion", Priority.COMPLETION),
        ]
    ]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(holding, *queued)
    assert ran == ["completion", "candidate 2"]
    runner.shutdown()


@pytest.fixture
def llama_settings(tiny_model: TinyModel) -> Settings:
    need_module("llama_cpp")
    return Settings(model=str(tiny_model.gguf_f32), backend="llamacpp", n_threads=2)


async def hold_worker(runner: EngineRunner) -> tuple[threading.Event, asyncio.Future[object]]:
    """Keep the worker busy until the returned event is set."""
    gate, busy = threading.Event(), threading.Event()

    def hold(engine: object, stop: threading.Event) -> bool:
        busy.set()
        return gate.wait(30)

    held = asyncio.ensure_future(runner.run("hold", hold, priority=Priority.BACKGROUND))
    assert await asyncio.to_thread(busy.wait, 30)
    return gate, held


async def test_a_superseded_load_does_not_start_and_its_failure_is_not_reported(
    tmp_path: Path, llama_settings: Settings
) -> None:
    runner = EngineRunner()
    await runner.load(llama_settings)
    gate, held = await hold_worker(runner)
    broken = llama_settings.model_copy(update={"model": str(tmp_path / "missing.gguf")})
    stale = asyncio.ensure_future(runner.load(broken))
    await asyncio.sleep(0)  # it took its ticket
    newer = asyncio.ensure_future(runner.load(llama_settings))
    await asyncio.sleep(0)
    gate.set()
    with pytest.raises(Superseded) as superseded:
        await stale
    assert superseded.value.__cause__ is None  # it never tried (it would fail: no such file)
    engine = await newer
    assert runner.ready and runner.engine is engine and runner.load_error is None
    with pytest.raises(Superseded):
        await held  # the load stopped it
    runner.shutdown()
    engine.close()


async def test_a_completion_during_a_reload_is_superseded_not_a_failure(
    llama_settings: Settings,
) -> None:
    runner = EngineRunner()
    await runner.load(llama_settings)
    reports: list[str] = []
    completer = Completer(runner, lambda: llama_settings, reports.append)
    gate, held = await hold_worker(runner)
    reload = asyncio.ensure_future(runner.load(llama_settings))
    await asyncio.sleep(0)  # the load began: the old engine is out, the new one not in yet
    assert runner.loading
    for _ in range(3):
        assert await completer.suggest("file:///a.py", "def f(x):\n    return x", 21) is None
    assert completer.failures == 0 and reports == []
    gate.set()
    engine = await reload
    with pytest.raises(Superseded):
        await held
    assert await completer.suggest("file:///a.py", "def f(x):\n    return x", 21) is not None
    runner.shutdown()
    engine.close()
