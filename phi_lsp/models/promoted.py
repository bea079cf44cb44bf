"""Which fine-tuned adapter is promoted: `PHI_LSP_HOME/finetune/promoted.json`.

`phi-lsp finetune` writes it (its promotion gate, or `--promote RUN` / `--rollback`); the server
reads it when the `adapter` setting is "promoted". The file holds `current` (the promoted run and
its adapter folder, or null) and `history` (the earlier ones, newest last, for `--rollback`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROMOTED = "promoted"  # the `adapter` setting value that follows this file


def promoted_path(home: Path | None = None) -> Path:
    from phi_lsp.models.source import phi_lsp_home

    return (home or phi_lsp_home()) / "finetune" / "promoted.json"


def read_promoted(home: Path | None = None) -> dict[str, Any]:
    """{"current": {...} | None, "history": [...]}; empty when the file is missing or bad."""
    try:
        data = json.loads(promoted_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"current": None, "history": []}
    if not isinstance(data, dict):
        return {"current": None, "history": []}
    current = data.get("current")
    history = data.get("history")
    return {
        "current": current if isinstance(current, dict) else None,
        "history": [h for h in history if isinstance(h, dict)] if isinstance(history, list) else [],
    }


def promoted_adapter(home: Path | None = None) -> Path | None:
    """The promoted adapter folder, or None (nothing promoted: the base model)."""
    current = read_promoted(home)["current"]
    adapter = current.get("adapter") if current else None
    return Path(adapter) if isinstance(adapter, str) and adapter else None


def promoted_stamp(home: Path | None = None) -> tuple[int, int, int] | None:
    """(mtime ns, inode, size) of the file, to notice a promotion (an atomic write is a new
    inode even within the clock's resolution); None when there is none."""
    try:
        st = promoted_path(home).stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)
