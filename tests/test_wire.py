"""The byte stream: broken JSON and a wrong Content-Length are survived."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def frame(body: bytes, length: int | None = None) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body


def message(payload: dict[str, object]) -> bytes:
    return frame(json.dumps(payload).encode())


def read_responses(out: bytes) -> list[dict[str, object]]:
    found = []
    while b"\r\n\r\n" in out:
        header, _, rest = out.partition(b"\r\n\r\n")
        fields = dict(line.split(b":", 1) for line in header.split(b"\r\n") if b":" in line)
        length = int(fields[b"Content-Length"])
        found.append(json.loads(rest[:length]))
        out = rest[length:]
    return found


def test_broken_json_and_wrong_content_length_are_survived(tmp_path: Path) -> None:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phi_lsp",
            "serve",
            "--model",
            str(tmp_path / "none.gguf"),
            "--log-file",
            str(tmp_path / "log"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PHI_LSP_HOME": str(tmp_path / "home")},
    )
    assert server.stdin is not None
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"processId": None, "rootUri": None, "capabilities": {}},
    }
    server.stdin.write(message(init))
    server.stdin.write(frame(b'{"jsonrpc": "2.0", "id": 2, "method": "initia'))  # broken JSON
    server.stdin.write(frame(b'{"jsonrpc": "2.0"}', length=5))  # Content-Length too short
    server.stdin.write(b"this line is not a header\r\n")
    for i in (3, 4):
        server.stdin.write(message({"jsonrpc": "2.0", "id": i, "method": "shutdown"}))
    server.stdin.flush()
    time.sleep(3)  # the server answers what it can; then the stream ends
    server.stdin.write(message({"jsonrpc": "2.0", "method": "exit"}))
    server.stdin.close()
    out = server.stdout.read() if server.stdout else b""
    server.wait(timeout=60)
    ids = {r.get("id") for r in read_responses(out)}
    assert 1 in ids and 4 in ids  # initialize answered, and a later request after the junk
