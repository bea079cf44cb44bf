"""Acceptance and retention: the accept command, saves and closes, the session's figures.

Each suggestion shown carries `phiLsp.accepted` with its id as the item's `command`: the client
runs it after inserting the item (LSP 3.18), with a second argument when it knows that only part
was inserted. The recorder (`phi_lsp.usage`) then follows the text until the file is saved or
closed, and writes the journal under PHI_LSP_HOME/usage, which never leaves the machine.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from phi_lsp.lsp.server import PhiLanguageServer

ACCEPTED_COMMAND = "phiLsp.accepted"
USAGE_STATS = "phiLsp/usageStats"


def register(ls: PhiLanguageServer) -> None:
    @ls.command(ACCEPTED_COMMAND)
    def accepted(ls: PhiLanguageServer, *args: Any) -> bool:
        """`[id]` or `[id, insertedText]`; False for an unknown id (nothing to follow)."""
        shown_id = args[0] if args and isinstance(args[0], str) else None
        inserted = args[1] if len(args) > 1 and isinstance(args[1], str) else None
        return shown_id is not None and ls.accepted(shown_id, inserted)

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: PhiLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        text = ls.document_text(params.text_document.uri)
        if text is not None:
            ls.usage.ended(params.text_document.uri, "saved", text)

    @ls.feature(USAGE_STATS)
    def usage_stats(ls: PhiLanguageServer, params: object) -> dict[str, Any]:
        """This session's figures (the status bar tooltip, :PhiStatus)."""
        return {"enabled": ls.settings.usage, **ls.usage.session.summary()}


def accept_command(shown_id: str | None) -> types.Command | None:
    if shown_id is None:
        return None
    return types.Command(title="phi-lsp: accepted", command=ACCEPTED_COMMAND, arguments=[shown_id])
