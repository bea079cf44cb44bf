"""Docstring → body through a real server: code action, command, the edit, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, Union

import pytest
from lsp_session import lsp_session, open_document, wait_for_loads
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled
from pytest_lsp import LanguageClient
from tinymodel import TinyModel

SOURCE = '''import os


def add(a, b):
    """Return the sum of a and b.

    >>> add(2, 3)
    5
    """
    pass


def untouched():
    return "the rest of the file stays byte-identical ✓"
'''
STUB_LINE = 3


def apply(text: str, edit: types.TextEdit) -> str:
    """Apply one edit (positions here are ASCII-only lines, so UTF-16 = str index)."""
    lines = text.splitlines(keepends=True)

    def offset(p: types.Position) -> int:
        return sum(len(x) for x in lines[: p.line]) + p.character

    return text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end) :]


def record_apply_edits(client: LanguageClient) -> list[types.WorkspaceEdit]:
    applied: list[types.WorkspaceEdit] = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        applied.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    return applied


async def code_actions(client: LanguageClient, uri: str, line: int) -> list[types.CodeAction]:
    here = types.Position(line=line, character=4)
    result = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=here, end=here),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    return [a for a in result or [] if isinstance(a, types.CodeAction)]


def read_code_actions_exactly(client: LanguageClient) -> None:
    """lsprotocol's client-side hook reads any item with a "command" key as a Command, so a
    CodeAction that carries a command loses its kind; tell the two apart by `title`+`kind`."""
    converter = client.protocol._converter

    def hook(obj: Any, _: type) -> types.Command | types.CodeAction:
        if isinstance(obj.get("command"), str):
            return converter.structure(obj, types.Command)
        return converter.structure(obj, types.CodeAction)

    converter.register_structure_hook(types.Command | types.CodeAction, hook)  # type: ignore[arg-type]
    converter.register_structure_hook(Union[types.Command, types.CodeAction], hook)  # noqa: UP007


@pytest.mark.parametrize("backend", ["llamacpp", "transformers"])
async def test_generate_body_replaces_exactly_the_body(
    tmp_path: Path, trained_model: TinyModel, backend: str
) -> None:
    model = trained_model.gguf_f32 if backend == "llamacpp" else trained_model.hf_dir
    settings = {"model": str(model), "backend": backend, "generateCandidates": 2}
    async with lsp_session(tmp_path, settings) as client:
        applied = record_apply_edits(client)
        read_code_actions_exactly(client)
        await wait_for_loads(client)
        uri = (tmp_path / "calc.py").as_uri()
        open_document(client, uri, SOURCE)
        assert await code_actions(client, uri, 13) == []  # not a stub
        (action,) = await code_actions(client, uri, STUB_LINE)
        assert action.kind == types.CodeActionKind.RefactorRewrite and action.command
        edit = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command=action.command.command, arguments=action.command.arguments
            )
        )
    assert applied and applied[0].document_changes is not None
    (change,) = applied[0].document_changes
    assert isinstance(change, types.TextDocumentEdit) and change.text_document.uri == uri
    (text_edit,) = change.edits
    result = apply(SOURCE, text_edit)  # type: ignore[arg-type]
    assert result == SOURCE.replace('    """\n    pass\n', '    """\n    return a + b\n')
    assert edit is not None


async def test_second_request_for_the_same_function_cancels_the_first(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    settings = {"model": str(trained_model.gguf_f32), "generateCandidates": 3}
    async with lsp_session(tmp_path, settings) as client:
        applied = record_apply_edits(client)
        await wait_for_loads(client)
        uri = (tmp_path / "calc.py").as_uri()
        open_document(client, uri, SOURCE)
        params = types.ExecuteCommandParams(
            command="phiLsp.generateFunction",
            arguments=[uri, {"line": STUB_LINE, "character": 0}],
        )
        first = client.protocol.send_request_async(types.WORKSPACE_EXECUTE_COMMAND, params)
        second = client.protocol.send_request_async(types.WORKSPACE_EXECUTE_COMMAND, params)
        with contextlib.suppress(JsonRpcRequestCancelled):
            await asyncio.wait_for(first, 60)
        second_result = await asyncio.wait_for(second, 60)
        assert second_result is not None
        # The first either lost (no edit) or finished before the second arrived.
        assert len(applied) in (1, 2)


async def test_bad_command_arguments_get_an_error_not_a_hang(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    async with lsp_session(tmp_path, {"model": str(trained_model.gguf_f32)}) as client:
        await wait_for_loads(client)
        with pytest.raises(Exception, match="uri, position"):
            await asyncio.wait_for(
                client.workspace_execute_command_async(
                    types.ExecuteCommandParams(command="phiLsp.generateFunction", arguments=[42])
                ),
                30,
            )
