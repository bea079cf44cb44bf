"""What the commands share: one way to fail, one way to load an engine."""

from __future__ import annotations

import sys

from phi_lsp.runtime.engines.base import Engine


def fail(exc: Exception) -> int:
    """Print `phi-lsp: <why>` to stderr; the exit status 1."""
    print(f"phi-lsp: {exc}", file=sys.stderr)
    return 1


def load_for_cli(model: str | None, backend: str) -> Engine:
    """The engine for a command-line run: the settings' defaults, with --model/--backend."""
    from phi_lsp.runtime.engines.loader import load_engine
    from phi_lsp.settings import Settings

    settings = Settings(backend=backend, **({"model": model} if model else {}))
    return load_engine(settings)
