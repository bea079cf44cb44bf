"""How much the run directory holds, checked from the parent while the program runs.

The kernel limits cap each file (RLIMIT_FSIZE) but not how many files the program writes, so
the parent stops a run whose directory grows past `DISK_LIMIT_MB` or `DISK_ENTRIES` files.
"""

from __future__ import annotations

import contextlib
import os
import stat

# Most the run directory may hold.
DISK_LIMIT_MB = 64
DISK_ENTRIES = 10_000


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
