"""What a test needs from the machine: skipped locally when missing, a failure in CI.

On a developer's machine a missing llama-cpp-python, Neovim or code-server skips the tests that
need it, and says how to get it. In CI (`CI=true`) everything the tests need is installed by
.ci/run, so a missing piece is a broken build, never a reason to turn end-to-end tests into
skips while CI stays green: `missing` fails the test (or the module) there.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(what: str, how: str) -> NoReturn:
    """Skip (locally) or fail (in CI) because `what` is not there; `how` says how to get it."""
    if in_ci():
        pytest.fail(f"CI=true and this is missing: {what}. {how}", pytrace=False)
    pytest.skip(f"missing: {what}. {how}", allow_module_level=True)


def need_module(name: str, how: str = "pip install -e '.[cpu,dev]'") -> ModuleType:
    """`import name`, else `missing` (pytest.importorskip that cannot hide a broken build in CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"the Python module {name}", f"{how} ({exc.__class__.__name__}: {exc})")
