"""The exceptions every layer shares: raised low (models, engines), reported high (lsp, cli)."""

from __future__ import annotations


class ModelLoadError(Exception):
    """A model that cannot be loaded; the message says what to do about it."""
