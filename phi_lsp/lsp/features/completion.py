"""Inline completion (LSP 3.18 ghost text) and the `textDocument/completion` fallback."""

from __future__ import annotations

import re
import time

from lsprotocol import types
from pygls.workspace import TextDocument

from phi_lsp.completion.pipeline import Suggestion
from phi_lsp.lsp.features.usage import accept_command
from phi_lsp.lsp.server import PhiLanguageServer
from phi_lsp.settings import Settings

WORD_BEFORE_CURSOR = re.compile(r"\w+$")


def register(ls: PhiLanguageServer) -> None:
    @ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: PhiLanguageServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        position = params.position
        found = await shown_suggestion(ls, params.text_document.uri, position)
        if found is None:
            return types.InlineCompletionList(items=[])
        item = types.InlineCompletionItem(
            insert_text=found[0].text,
            range=types.Range(start=position, end=position),
            command=accept_command(found[1]),
        )
        return types.InlineCompletionList(items=[item])


def wants_fallback(settings: Settings, capabilities: types.ClientCapabilities) -> bool:
    """Offer completion items only to clients without inline completion, unless told otherwise."""
    if settings.completion_fallback != "auto":
        return settings.completion_fallback == "always"
    text_document = capabilities.text_document
    return text_document is None or text_document.inline_completion is None


def register_fallback(ls: PhiLanguageServer) -> None:
    @ls.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["."]))
    async def completion(
        ls: PhiLanguageServer, params: types.CompletionParams
    ) -> types.CompletionList:
        uri, position = params.text_document.uri, params.position
        found = await shown_suggestion(ls, uri, position)
        doc = ls.open_document(uri)
        if found is None or doc is None:
            return types.CompletionList(is_incomplete=True, items=[])
        item = completion_item(doc, position, found[0].text, _markdown(ls))
        item.command = accept_command(found[1])
        return types.CompletionList(is_incomplete=True, items=[item])


def _markdown(ls: PhiLanguageServer) -> bool:
    """Whether the client renders Markdown documentation on completion items."""
    caps = ls.client_capabilities.text_document
    item = caps.completion.completion_item if caps and caps.completion else None
    return bool(
        item
        and item.documentation_format
        and types.MarkupKind.Markdown in item.documentation_format
    )


def completion_item(
    doc: TextDocument, position: types.Position, text: str, markdown: bool = False
) -> types.CompletionItem:
    """One plain-text item that inserts the whole suggestion.

    It carries `insertText` = the word before the cursor + the suggestion, not a `textEdit`:
    clients replace the word being typed with it (so filtering by that word keeps our item),
    and Neovim's built-in completion inserts all of an `insertText` but only the first word
    of a plain-text `textEdit`.
    """
    offset = doc.offset_at_position(position)
    line_prefix = doc.source[doc.source.rfind("\n", 0, offset) + 1 : offset]
    word_match = WORD_BEFORE_CURSOR.search(line_prefix)
    word = word_match.group(0) if word_match else ""
    first_line = text.splitlines()[0] if text.strip() else text
    return types.CompletionItem(
        label=(word + first_line).strip() + (" …" if "\n" in text.strip() else ""),
        kind=types.CompletionItemKind.Text,
        detail="phi-lsp",
        documentation=types.MarkupContent(
            kind=types.MarkupKind.Markdown, value=f"```python\n{line_prefix}{text}\n```"
        )
        if markdown
        else line_prefix + text,
        filter_text=word + text,
        insert_text=word + text,
        insert_text_format=types.InsertTextFormat.PlainText,
        sort_text="0",
    )


async def shown_suggestion(
    ls: PhiLanguageServer, uri: str, position: types.Position
) -> tuple[Suggestion, str | None] | None:
    """The suggestion to show at `position` and its usage id (None: record nothing), or None."""
    t0 = time.perf_counter()
    suggestion = await ls.suggestion_at(uri, position)
    if suggestion is None or not suggestion.text:
        return None
    return suggestion, ls.shown(uri, position, suggestion, (time.perf_counter() - t0) * 1000)
