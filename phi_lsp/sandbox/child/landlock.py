"""Landlock (Linux >= 5.13), in the child: what this process may do with files, by path.

Read-only where Python and the C library live, read-write in the run directory, nothing
elsewhere; ABI 4+ also refuses TCP, ABI 6+ signals out of the sandbox. No maintained Python
binding exists and the child has no site-packages, so the three syscalls go through ctypes.
Standard library only: `phi_lsp.sandbox.runner` sends this source to the child (see
`bootstrap.py`), which imports nothing from disk of phi_lsp.
"""

from __future__ import annotations

import os
import sys
from typing import Any

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


def c_library() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


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
