"""The parent side of a sandboxed run: start the confined child, wait, kill, read its verdict.

The child is a fresh `python -I -S -B` in its own session and process group, in a fresh run
directory (also its `HOME` and `TMPDIR`), SIGKILLed as a whole when the program ends or the
wall-clock timeout expires; what it does to confine itself is in `child/`. The verdict is the
last output line, which carries a per-run random nonce and is written by the child after the
program has finished, so that a program that exits early (`os._exit(0)`) cannot claim a pass.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import json
import math
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from phi_lsp.sandbox.disk import DISK_ENTRIES, DISK_LIMIT_MB, DiskWatch

Status = Literal["passed", "failed", "timeout", "error"]
Ending = Literal["exited", "timeout", "disk"]

# Largest file (output included) the program may write, and how much of its output comes back.
FILE_LIMIT_MB = 8
OUTPUT_CHARS = 2000
OPEN_FILES = 64
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
PROGRAM_NAME = "program.py"
TMP_NAME = "tmp"
SANDBOX_EXEC = "/usr/bin/sandbox-exec"
# macOS only, untested here: deny the network and every write outside the run directory.
SEATBELT_PROFILE = """(version 1)
(allow default)
(deny network*)
(deny file-write*)
(allow file-write* (subpath (param "WORKDIR")) (literal "/dev/null"))
"""
# What the child is sent (see `child/bootstrap.py`): its packages, empty, and its modules, each
# after those it imports.
CHILD_PACKAGE = "phi_lsp.sandbox.child"
CHILD_PACKAGES = ("phi_lsp", "phi_lsp.sandbox", CHILD_PACKAGE)
CHILD_MODULES = ("landlock", "seccomp", "guard", "prelude")


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed program ended. `output` is the head of its stdout + stderr."""

    passed: bool
    status: Status
    detail: str
    seconds: float
    output: str = ""


def run_sandboxed(
    program: str,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    cpu_s: int | None = None,
    *,
    file_mb: int = FILE_LIMIT_MB,
    output_chars: int = OUTPUT_CHARS,
) -> SandboxResult:
    """Run `program` (Python source) in a confined child process and say how it ended.

    `passed` means it ran to its end without an exception and without touching anything the
    sandbox blocks. Safe to call from several threads at once.
    """
    cpu = cpu_s if cpu_s is not None else math.ceil(timeout_s) + 1
    limits = {"memory": memory_mb * 2**20, "cpu": max(1, cpu), "fsize": file_mb * 2**20}
    result, _ = execute(program, timeout_s, limits, output_chars)
    return result


@functools.cache
def child_code() -> tuple[str, str]:
    """The child's `-c` program and the JSON of its modules' sources, read once here: the child
    reads no file of phi_lsp (see `child/__init__.py`)."""
    files = importlib.resources.files(CHILD_PACKAGE)

    def read(module: str) -> str:
        return files.joinpath(f"{module}.py").read_text(encoding="utf-8")

    sources = dict.fromkeys(CHILD_PACKAGES, "")
    sources.update({f"{CHILD_PACKAGE}.{module}": read(module) for module in CHILD_MODULES})
    return read("bootstrap"), json.dumps(sources)


def execute(
    program: str, timeout_s: float, limits: dict[str, int], output_chars: int, probe: bool = False
) -> tuple[SandboxResult, dict[str, Any]]:
    """One sandboxed run: the result, and the prelude's record (which includes its features)."""
    nonce = secrets.token_hex(16)
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="phi-lsp-sandbox-"))
    config = {**limits, "nofile": OPEN_FILES, "program": PROGRAM_NAME, "probe": probe}
    bootstrap, sources = child_code()
    command = [sys.executable, "-I", "-S", "-B", "-u", "-X", "utf8", "-c", bootstrap]
    command += [json.dumps(config), sources]
    seatbelt = sys.platform == "darwin" and os.path.exists(SANDBOX_EXEC)
    if seatbelt:
        command = [SANDBOX_EXEC, "-D", f"WORKDIR={workdir}", "-p", SEATBELT_PROFILE, *command]
    env = {**CHILD_ENV, "HOME": workdir, "TMPDIR": os.path.join(workdir, TMP_NAME)}
    t0 = time.perf_counter()
    try:
        Path(workdir, PROGRAM_NAME).write_text(program, encoding="utf-8")
        os.mkdir(env["TMPDIR"])
        with tempfile.TemporaryFile() as out:
            ending, returncode = _run(command, workdir, env, nonce, out, timeout_s)
            seconds = time.perf_counter() - t0
            head, record, size = _read_output(out, nonce, output_chars)
    finally:
        _remove_tree(workdir)
    if seatbelt and record:
        record.setdefault("features", []).append("sandbox-exec")
    output_full = size >= limits["fsize"]
    result = _result(ending, returncode, record, head, seconds, timeout_s, output_full)
    return result, record


def _run(
    command: list[str],
    workdir: str,
    env: dict[str, str],
    nonce: str,
    out: IO[bytes],
    timeout_s: float,
) -> tuple[Ending, int]:
    """Start the child, hand it the nonce, wait; kill its process group in every case."""
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    try:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.write(f"{nonce}\n".encode())
            proc.stdin.close()
        ending = _wait_exited(proc, timeout_s, DiskWatch(workdir))
    finally:
        # The leader is not reaped yet (zombie at most), so its group id cannot be reused.
        _kill_group(proc.pid)
        returncode = proc.wait()
    return ending, returncode


def _wait_exited(proc: subprocess.Popen[bytes], timeout_s: float, watch: DiskWatch) -> Ending:
    """Wait until the child has exited, without reaping it, or the timeout, or the disk limit."""
    deadline = time.monotonic() + timeout_s
    pidfd = -1
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        with contextlib.suppress(OSError):
            pidfd = pidfd_open(proc.pid)
    try:
        while True:
            left = deadline - time.monotonic()
            if pidfd >= 0:
                if select.select([pidfd], [], [], max(0.0, min(left, 0.1)))[0]:
                    return "exited"
            else:  # no pidfd (macOS, old kernels): poll without reaping
                if _exited(proc):
                    return "exited"
                time.sleep(max(0.0, min(left, 0.02)))
            if watch.exceeded():
                return "disk"
            if time.monotonic() >= deadline:
                return "exited" if _exited(proc) else "timeout"
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return proc.poll() is not None
    flags = os.WEXITED | os.WNOWAIT | os.WNOHANG
    return waitid(os.P_PID, proc.pid, flags) is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _read_output(out: IO[bytes], nonce: str, output_chars: int) -> tuple[str, dict[str, Any], int]:
    """The head of the output (without the nonce line), the prelude's record, the size."""
    size = out.seek(0, os.SEEK_END)
    tail_start = max(0, size - 64 * 1024)
    out.seek(tail_start)
    tail = out.read().decode("utf-8", "replace")
    record: dict[str, Any] = {}
    marker = f"\n{nonce} "
    at = tail.rfind(marker)
    cut = size
    if at >= 0:
        with contextlib.suppress(ValueError):
            record = json.loads(tail[at + len(marker) :].splitlines()[0])
        cut = tail_start + len(tail[:at].encode("utf-8", "replace"))
    out.seek(0)
    head = out.read(min(cut, output_chars * 4)).decode("utf-8", "replace")
    if len(head) > output_chars or cut > output_chars * 4:
        head = head[:output_chars] + "\n[... output truncated]"
    return head, record, size


def _result(
    ending: Ending,
    returncode: int,
    record: dict[str, Any],
    output: str,
    seconds: float,
    timeout_s: float,
    output_full: bool,
) -> SandboxResult:
    def result(status: Status, detail: str) -> SandboxResult:
        return SandboxResult(status == "passed", status, detail, seconds, output)

    if ending == "timeout":
        return result("timeout", f"no result after {timeout_s:g} s (wall clock); killed")
    if ending == "disk":
        limit = f"{DISK_LIMIT_MB} MB or {DISK_ENTRIES} files"
        return result("error", f"disk limit: the run directory grew past {limit}; killed")
    if record.get("status") in ("passed", "failed", "error", "timeout"):
        return result(record["status"], str(record.get("detail", "")))
    if returncode < 0:
        sig = -returncode
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return result("timeout", f"CPU time limit (killed by signal {sig})")
        name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        return result("error", f"killed by {name}")
    if output_full:
        return result("error", "output reached the file size limit")
    if returncode == 0:
        return result("error", "exited before the end of the program")
    return result("error", f"exit status {returncode}: {output[-500:].strip()}")


def _remove_tree(path: str) -> None:
    """Delete the working directory even where the program removed our permissions."""

    def onerror(func: Any, target: str, exc_info: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target) or target, stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            func(target)

    shutil.rmtree(path, onerror=onerror)  # noqa: B026 - onerror: Python 3.10/3.11 too
