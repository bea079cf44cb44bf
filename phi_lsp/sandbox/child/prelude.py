"""The child side of the sandbox: confine this process, then run the program in it.

The child is `python -I -S -B -u -X utf8 -c BOOTSTRAP CONFIG SOURCES` (see `bootstrap.py`): it
gets this package's source text from the parent and reads nothing of phi_lsp from disk, and the
program sees only the standard library. `main` applies the layers in order: namespaces, then
Landlock (`landlock.py`), then the seccomp filter (`seccomp.py`) (each may need what the next one
takes away), then the resource limits, then the Python guard (`guard.py`), then the program.
Everything before the guard must not depend on the program; everything after it runs with it.

stdin carries one line, the run's nonce; the last line of stdout is `NONCE {record}`, written
only after the program has finished, with the outcome and the confinement that was in force.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import sys
from typing import Any

from phi_lsp.sandbox.child.guard import install_guard
from phi_lsp.sandbox.child.landlock import c_library, confine_files
from phi_lsp.sandbox.child.seccomp import filter_syscalls


def main() -> None:
    nonce = sys.stdin.readline().strip()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - stays open
    out_fd = os.dup(1)
    real_exit = os._exit
    config = json.loads(sys.argv[1])
    workdir = os.path.realpath(os.getcwd())
    features: list[str] = []
    if sys.platform.startswith("linux"):
        enter_namespaces(features)
        confine_files(workdir, features)
        filter_syscalls(features)
    set_limits(config, features)
    if config.get("probe"):
        probe_fork(features)
    violations: list[str] = []
    install_guard(workdir, violations)
    status, detail = run_program(os.path.join(workdir, config["program"]))
    if violations:
        status = "error"
        detail = f"blocked: {', '.join(dict.fromkeys(violations))}" + (
            f"; {detail}" if detail else ""
        )
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


# --- 1. Namespaces --------------------------------------------------------------------------------


def enter_namespaces(features: list[str]) -> None:
    """A new user + network namespace, or a network namespace alone, where the kernel allows.

    The user namespace drops our capabilities in the initial one; the network namespace leaves
    no interface but a down loopback.
    """
    clone_newuser, clone_newnet = 0x10000000, 0x40000000
    for flags, names in (
        (clone_newuser | clone_newnet, ("userns", "netns")),
        (clone_newnet, ("netns",)),
    ):
        try:
            unshare(flags)
        except (OSError, AttributeError):
            continue
        features.extend(names)
        return


def unshare(flags: int) -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
        return
    import ctypes

    if c_library().unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


# --- 2. Resource limits (Landlock and seccomp: their own modules) ---------------------------------


def set_limits(config: dict[str, Any], features: list[str]) -> None:
    """Kernel limits, hard = soft so that the program cannot raise them again."""
    try:
        import resource
    except ImportError:
        return
    limits = [
        ("RLIMIT_AS", config["memory"], config["memory"]),
        ("RLIMIT_CPU", config["cpu"], config["cpu"] + 1),
        ("RLIMIT_NPROC", 1, 1),
        ("RLIMIT_FSIZE", config["fsize"], config["fsize"]),
        ("RLIMIT_NOFILE", config["nofile"], config["nofile"]),
        ("RLIMIT_CORE", 0, 0),
    ]
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


def probe_fork(features: list[str]) -> None:
    """Whether the kernel refuses a new process here (asked once, by `sandbox_features`)."""
    fork = getattr(os, "fork", None)
    if fork is None:
        return
    try:
        pid = fork()
    except OSError:
        features.append("fork-refused")
        return
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


# --- 3. The program (after the guard, `guard.py`) -------------------------------------------------


def run_program(path: str) -> tuple[str, str]:
    """Run the program in a fresh namespace; (status, detail)."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
    status, detail = "passed", ""
    try:
        exec(compile(source, path, "exec"), namespace)
    except BaseException as exc:
        status, detail = classify(exc, path)
    namespace.clear()
    return status, detail


def classify(exc: BaseException, path: str) -> tuple[str, str]:
    """(status, detail) for an exception that ended the program."""
    import errno
    import traceback

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
