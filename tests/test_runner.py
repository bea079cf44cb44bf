"""The engine runner's watchdog: a generation that never ends on its own is stopped."""

from __future__ import annotations

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
