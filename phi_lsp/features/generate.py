"""Docstring → function body: a code action and the `phiLsp.generateFunction` command."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from lsprotocol import types

from phi_lsp.bodygen import BodyResult, best_body, doctest_runner
from phi_lsp.docfunc import Stub, find_stub
from phi_lsp.engines.base import Engine
from phi_lsp.runner import Superseded
from phi_lsp.server import PhiLanguageServer, log

COMMAND = "phiLsp.generateFunction"
TITLE = "Generate body from docstring (phi-lsp)"


def register(ls: PhiLanguageServer) -> None:
    @ls.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite]),
    )
    def code_action(
        ls: PhiLanguageServer, params: types.CodeActionParams
    ) -> list[types.CodeAction]:
        doc = ls.open_document(params.text_document.uri)
        if doc is None or find_stub(doc.source, params.range.start.line) is None:
            return []
        arguments = [params.text_document.uri, params.range.start]
        return [
            types.CodeAction(
                title=TITLE,
                kind=types.CodeActionKind.RefactorRewrite,
                command=types.Command(title=TITLE, command=COMMAND, arguments=arguments),
            )
        ]

    @ls.command(COMMAND)
    async def generate_function(ls: PhiLanguageServer, *args: Any) -> types.WorkspaceEdit | None:
        uri, position = _parse_arguments(list(args))
        edit = await generate_edit(ls, uri, position)
        if edit is not None:
            await ls.workspace_apply_edit_async(
                types.ApplyWorkspaceEditParams(edit=edit, label=TITLE)
            )
        return edit


def _parse_arguments(args: Any) -> tuple[str, types.Position]:
    """`[uri, position]` or `[{"uri":…, "position":…}]`, as different clients send them."""
    if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict):
        args = [args[0].get("uri"), args[0].get("position")]
    if not (isinstance(args, list) and len(args) == 2 and isinstance(args[0], str)):
        raise ValueError(f"{COMMAND} takes [uri, position]")
    pos = args[1]
    if isinstance(pos, types.Position):
        return args[0], pos
    if isinstance(pos, dict) and isinstance(pos.get("line"), int):
        return args[0], types.Position(line=pos["line"], character=int(pos.get("character", 0)))
    raise ValueError(f"{COMMAND}: position must be {{line, character}}")


async def generate_edit(
    ls: PhiLanguageServer, uri: str, position: types.Position
) -> types.WorkspaceEdit | None:
    """Generate the stub's body and return the edit that replaces only the body."""
    doc = ls.open_document(uri)
    stub = find_stub(doc.source, position.line) if doc is not None else None
    if doc is None or stub is None:
        ls.show("phi-lsp: no function whose body is only a docstring here.")
        return None
    if not ls.runner.ready:
        ls.show("phi-lsp: the model is not loaded yet.", types.MessageType.Warning)
        return None
    settings, version = ls.settings, doc.version
    token = await ls.begin_progress(f"phi-lsp: writing {stub.name}()", cancellable=True)
    _cancel_with_progress(ls, token)

    def work(engine: Engine, stop: threading.Event) -> BodyResult:
        runner, not_run = doctest_runner(settings.generate_run_doctests)
        return best_body(
            engine,
            stub,
            n=settings.generate_candidates,
            stop=stop,
            temperature=settings.generate_temperature,
            max_new_tokens=settings.generate_max_tokens,
            run_doctests=runner,
            not_run=not_run,
        )

    message = "cancelled"
    try:
        # One key per function: a second request for the same function cancels the first.
        result = await ls.runner.run(f"{uri}#def:{stub.start[0]}", work, timeout_s=600)
        if result.chosen is None:
            message = "no candidate parsed and fit the signature"
            return None
        message = f"{stub.name}(): {result.chosen.evidence}"
        if result.note:
            message += f"; {result.note}"
        log.info("generated %s: %s", stub.name, message)
        if ls.workspace.get_text_document(uri).version != version:
            message = "the document changed meanwhile; not applied"
            return None
        return body_edit(ls, uri, stub, result.chosen.body, version)
    except Superseded:
        return None
    finally:
        ls.end_progress(token, message)


def _cancel_with_progress(ls: PhiLanguageServer, token: str | None) -> None:
    """Cancelling the progress in the editor cancels the generation."""
    task = asyncio.current_task()
    future = ls.work_done_progress.tokens.get(token) if token else None
    if task is None or future is None:
        return
    loop = asyncio.get_running_loop()
    future.add_done_callback(
        lambda f: loop.call_soon_threadsafe(task.cancel) if f.cancelled() else None
    )


def body_edit(
    ls: PhiLanguageServer, uri: str, stub: Stub, body: str, version: int | None
) -> types.WorkspaceEdit:
    """Replace from the end of the docstring to the end of the stub with the new body."""
    doc = ls.workspace.get_text_document(uri)
    codec, lines = doc.position_codec, doc.lines
    start = codec.position_to_client_units(lines, types.Position(*stub.start))
    end = codec.position_to_client_units(lines, types.Position(*stub.end))
    eol = "\r\n" if "\r\n" in doc.source else "\n"
    edit = types.TextEdit(
        range=types.Range(start=start, end=end), new_text=eol + body.replace("\n", eol)
    )
    return types.WorkspaceEdit(
        document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=uri, version=version
                ),
                edits=[edit],
            )
        ]
    )
