"""Initialization, settings and the model's lifetime."""

from __future__ import annotations

from lsprotocol import types

from phi_lsp.lsp.features import completion
from phi_lsp.lsp.server import PhiLanguageServer

RELOAD_COMMAND = "phiLsp.reloadModel"
DOCUMENT_TEXT = "phiLsp/documentText"


def register(ls: PhiLanguageServer) -> None:
    @ls.feature(types.INITIALIZE)
    def initialize(ls: PhiLanguageServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options)
        if completion.wants_fallback(ls.settings, params.capabilities):
            completion.register_fallback(ls)

    @ls.feature(types.INITIALIZED)
    async def initialized(ls: PhiLanguageServer, params: types.InitializedParams) -> None:
        raw = await ls.pull_settings()
        if raw is not None:
            ls.apply_settings(raw)
        ls.schedule_load()

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(
        ls: PhiLanguageServer, params: types.DidChangeConfigurationParams
    ) -> None:
        raw = await ls.pull_settings()
        if ls.apply_settings(raw if raw is not None else params.settings):
            ls.schedule_load()

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: PhiLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.prefill.opened(params.text_document.uri, params.text_document.text)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: PhiLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        ls.prefill.edited(uri)
        ls.completer.edited(uri)
        changes = [change_span(c) for c in params.content_changes]
        ls.usage.edited(uri, changes, ls.document_text(uri) or "")

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: PhiLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.completer.closed(params.text_document.uri)
        ls.usage.ended(params.text_document.uri, "closed")
        ls.stubs.forget(params.text_document.uri)

    @ls.command(RELOAD_COMMAND)
    def reload_model(ls: PhiLanguageServer, *args: object) -> None:
        """Load the model again (a file fixed on disk, an engine that failed mid-session)."""
        ls.schedule_load()

    @ls.feature(DOCUMENT_TEXT)
    def document_text(ls: PhiLanguageServer, params: object) -> dict[str, object]:
        """The server's copy of a document: lets tests and bug reports check it never drifts."""
        uri = getattr(params, "uri", None) or (
            params.get("uri") if isinstance(params, dict) else None
        )
        doc = ls.open_document(uri) if isinstance(uri, str) else None
        return {
            "uri": uri,
            "text": doc.source if doc else None,
            "version": doc.version if doc else None,
        }

    @ls.feature(types.SHUTDOWN)
    def shutdown(ls: PhiLanguageServer, params: None) -> None:
        ls.usage.close()
        ls.runner.shutdown()


def change_span(
    change: types.TextDocumentContentChangeEvent,
) -> tuple[tuple[int, int], tuple[int, int], str] | None:
    """A change as (start, end, text) for the usage recorder; None when it replaces everything."""
    if not isinstance(change, types.TextDocumentContentChangePartial):
        return None
    start, end = change.range.start, change.range.end
    return (start.line, start.character), (end.line, end.character), change.text
