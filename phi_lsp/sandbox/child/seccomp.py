"""seccomp (through libseccomp), in the child: system calls the program never needs.

No new process or thread, no exec, no chmod/chown/utime/xattr (Landlock does not cover file
metadata), no signals but to itself, no ptrace, mounts, namespaces, io_uring or bpf. This is the
process limit, and it holds for root too. libseccomp knows each architecture's numbers; it is
present wherever systemd or apt is. Standard library only (see `bootstrap.py`).
"""

from __future__ import annotations

import os
from typing import Any

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
