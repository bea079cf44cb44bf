"""An append-only JSONL journal that a kill never corrupts.

Each event is one line written with one `write` to a file opened with O_APPEND. A process killed
mid-write leaves at most one torn line at the end: the next append starts a fresh line, and the
reader skips any line that is not complete JSON. The journal is bounded: past `max_bytes` the
file becomes `usage.1.jsonl` (replacing the older one), so at most twice that is kept.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAX_BYTES = 8_000_000
CURRENT = "usage.jsonl"
PREVIOUS = "usage.1.jsonl"


class Journal:
    def __init__(self, folder: Path, max_bytes: int = MAX_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.folder / CURRENT

    def append(self, event: dict[str, Any]) -> None:
        """Write `event` as one line (raises OSError when the disk refuses)."""
        data = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(data) > self.max_bytes:
                os.replace(self.path, self.folder / PREVIOUS)
                size = 0
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # the last append was torn: start a fresh line
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)

    def read(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every complete event, oldest first (those at or after `since`, a time.time())."""
        for name in (PREVIOUS, CURRENT):
            try:
                raw = (self.folder / name).read_bytes()
            except FileNotFoundError:
                continue
            for line in raw.split(b"\n")[:-1]:  # the last piece has no newline: torn or empty
                event = parse(line)
                if event is not None and (since is None or event.get("t", 0) >= since):
                    yield event

    def clear(self) -> None:
        for name in (PREVIOUS, CURRENT):
            (self.folder / name).unlink(missing_ok=True)


def parse(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None
