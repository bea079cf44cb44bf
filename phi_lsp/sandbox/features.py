"""Which sandbox layers are in force on this machine, asked of the machine itself.

`phi-lsp doctor` and the eval report show it, and docstring → body ranking runs candidates only
under kernel file confinement unless the user sets `generateRunDoctests` to `"always"`.
"""

from __future__ import annotations

import functools
from typing import Any

from phi_lsp.sandbox.disk import DISK_LIMIT_MB
from phi_lsp.sandbox.runner import FILE_LIMIT_MB, OUTPUT_CHARS, execute

# What the features probe runs: the imports (compiled modules included) and the temporary
# file of a typical doctest, so that a confinement that breaks Python shows as broken.
PROBE_PROGRAM = (
    "import datetime, decimal, doctest, json, math, random, re, tempfile\n"
    "with tempfile.TemporaryFile() as f:\n"
    "    f.write(b'x')\n"
)


@functools.cache
def sandbox_features() -> dict[str, Any]:
    """What the sandbox enforces on this machine (probed once, with a small program).

    `confinement` names the layers in force, e.g. "landlock ABI 7, seccomp, user+network
    namespaces, python guard", or "python guard only"; `files_confined` is whether a kernel
    mechanism keeps the program's writes in its run directory.
    """
    limits = {"memory": 512 * 2**20, "cpu": 10, "fsize": FILE_LIMIT_MB * 2**20}
    result, record = execute(PROBE_PROGRAM, 20.0, limits, OUTPUT_CHARS, probe=True)
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
