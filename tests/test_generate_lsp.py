"""Docstring → body through a real server: code action, command, the edit, cancellation."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Union

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError
from pytest_lsp import LanguageClient

from testkit.lsp_session import inline_params, lsp_session, open_document, send_now, wait_for_loads
from testkit.tinymodel import TinyModel

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
# Run the doctests whatever confinement this machine's sandbox has (doctor tells).
DOCTESTS = {"generateRunDoctests": "always"}


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
    result = await client.text_document_code_action_async(code_action_params(uri, line))
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
    settings = {"model": str(model), "backend": backend, "generateCandidates": 2, **DOCTESTS}
    async with lsp_session(tmp_path, settings) as client:
        applied = record_apply_edits(client)
        read_code_actions_exactly(client)
        await wait_for_loads(client)
        uri = (tmp_path / "calc.py").as_uri()
        open_document(client, uri, SOURCE)
        assert await code_actions(client, uri, 13) == []  # not a stub
        (action,) = await code_actions(client, uri, STUB_LINE)
        assert action.kind == types.CodeActionKind.RefactorRewrite and action.command
        started = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(
                command=action.command.command, arguments=action.command.arguments
            )
        )
        assert started == {"function": "add"}
        (end,) = await wait_for_generations(client)
        assert end.startswith("add(): doctests 1/1")
    assert applied and applied[0].document_changes is not None
    (change,) = applied[0].document_changes
    assert isinstance(change, types.TextDocumentEdit) and change.text_document.uri == uri
    (text_edit,) = change.edits
    result = apply(SOURCE, text_edit)  # type: ignore[arg-type]
    assert result == SOURCE.replace('    """\n    pass\n', '    """\n    return a + b\n')


async def test_second_request_for_the_same_function_replaces_the_first(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    settings = {"model": str(trained_model.gguf_f32), "generateCandidates": 3, **DOCTESTS}
    async with lsp_session(tmp_path, settings) as client:
        applied = record_apply_edits(client)
        await wait_for_loads(client)
        uri = (tmp_path / "calc.py").as_uri()
        open_document(client, uri, SOURCE)
        params = generate_params(uri)
        # Sent back to back: the second reaches the server before the first can have asked
        # for its progress (messages from one client are read in order), let alone finished.
        first = send_now(client, types.WORKSPACE_EXECUTE_COMMAND, params)
        second = send_now(client, types.WORKSPACE_EXECUTE_COMMAND, params)
        assert await asyncio.wait_for(first, 60) == {"function": "add"}
        assert await asyncio.wait_for(second, 60) == {"function": "add"}
        *replaced, end = await wait_for_generations(client, until=REPLACED)
        assert end.startswith("add(): doctests 1/1")
        # The first had begun its progress (then it ends so) or not even that.
        assert replaced in ([], [REPLACED])
    assert len(applied) == 1
    log = (tmp_path / "server.log").read_text()
    assert log.count(f"generate add(): {REPLACED}") == 1
    assert " ERROR " not in log, log[-3000:]


REPLACED = "replaced by a newer request"


def generate_params(uri: str, line: int = STUB_LINE) -> types.ExecuteCommandParams:
    return types.ExecuteCommandParams(
        command="phiLsp.generateFunction", arguments=[uri, {"line": line, "character": 0}]
    )


WRITING = "phi-lsp: writing"


def generations(client: LanguageClient) -> list[list[Any]]:
    """The progress reports of each body generation (begin first), in the order they began."""
    return [
        reports
        for reports in client.progress_reports.values()
        if reports
        and isinstance(reports[0], types.WorkDoneProgressBegin)
        and reports[0].title.startswith(WRITING)
    ]


def generation_ends(client: LanguageClient) -> list[str]:
    return [
        r.message or ""
        for reports in generations(client)
        for r in reports
        if isinstance(r, types.WorkDoneProgressEnd)
    ]


async def wait_for_generations(
    client: LanguageClient, count: int = 1, until: str | None = None
) -> list[str]:
    """The end messages of the first `count` finished generations (a hang guard of 120 s),
    not counting those that end with `until`."""

    async def ended() -> list[str]:
        while len([e for e in generation_ends(client) if e != until]) < count:
            await asyncio.sleep(0.02)
        return generation_ends(client)

    return await asyncio.wait_for(ended(), 120)


async def test_the_command_answers_at_once_and_the_edit_follows(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    """Editors give up on a request after seconds (Emacs: 10 s); the generation takes minutes
    on a laptop CPU. So the answer comes first, the workspace/applyEdit after."""
    settings = {"model": str(trained_model.gguf_f32), "generateCandidates": 2, **DOCTESTS}
    async with lsp_session(tmp_path, settings) as client:
        events: list[str] = []

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
            events.append("applyEdit")
            return types.ApplyWorkspaceEditResult(applied=True)

        await wait_for_loads(client)
        uri = (tmp_path / "calc.py").as_uri()
        open_document(client, uri, SOURCE)
        answer = client.protocol.send_request(types.WORKSPACE_EXECUTE_COMMAND, generate_params(uri))
        # Runs as the answer is read, so `events` holds what had arrived before it.
        answer.add_done_callback(lambda _: events.append("answered"))
        (end,) = await wait_for_generations(client)
        assert events == ["answered", "applyEdit"]
        assert answer.result() == {"function": "add"}
        assert end.startswith("add(): doctests 1/1")


@asynccontextmanager
async def generation_answered(
    tmp_path: Path, model: TinyModel, apply_edit: Any
) -> AsyncIterator[tuple[LanguageClient, str, str]]:
    """A server whose client answers applyEdit with `apply_edit`, after one generateFunction:
    the command answered at once, then the generation's progress ended (its end message)."""
    settings = {"model": str(model.gguf_f32), "generateCandidates": 1, **DOCTESTS}
    features = {types.WORKSPACE_APPLY_EDIT: apply_edit}
    async with lsp_session(tmp_path, settings, client_features=features) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "calc.py").as_uri()
        open_document(client, uri, SOURCE)
        answer = client.workspace_execute_command_async(generate_params(uri))
        assert await asyncio.wait_for(answer, 60) == {"function": "add"}
        (end,) = await wait_for_generations(client)
        yield client, uri, end


@pytest.mark.parametrize("refusal", ["applied-false", "error"])
async def test_a_refused_edit_is_logged_not_shown(
    tmp_path: Path, trained_model: TinyModel, refusal: str
) -> None:
    """The user said no: eglot answers with an error, others with `applied: false`."""

    def apply_edit(ls: Any, params: types.ApplyWorkspaceEditParams) -> Any:
        if refusal == "error":
            raise JsonRpcInternalError(message="User cancelled server edit")
        return types.ApplyWorkspaceEditResult(applied=False, failure_reason="declined")

    async with generation_answered(tmp_path, trained_model, apply_edit) as (client, _, end):
        assert "not applied" in end
        assert [m for m in client.messages if m.type != types.MessageType.Info] == []
    log = (tmp_path / "server.log").read_text()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    (line,) = [x for x in log.splitlines() if "not applied" in x]
    assert " INFO " in line and ("User cancelled server edit" in line or "declined" in line)


async def test_an_unreadable_apply_edit_answer_ends_the_generation(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    """A client that answers workspace/applyEdit with null: pygls dropped that answer and the
    command waited forever; now the wait fails, the progress ends and the server serves on."""

    def apply_edit(ls: Any, params: types.ApplyWorkspaceEditParams) -> None:
        return None

    async with generation_answered(tmp_path, trained_model, apply_edit) as (client, uri, end):
        assert "workspace/applyEdit could not be read" in end
        params = code_action_params(uri, STUB_LINE)
        assert len(await client.text_document_code_action_async(params) or []) == 1  # serving


RANDOM_SOURCE = '''def area(radius):
    """Return the area of a circle."""
    pass


def scale(radius):
    return radius
'''
# The random tiny model writes the greedy candidate for `area` to the token limit (no early stop).
LONG = {"generateCandidates": 3, "generateMaxTokens": 256, "nThreads": 2}


async def test_cancelling_the_progress_stops_the_engine(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    async with lsp_session(tmp_path, {"model": str(tiny_model.gguf_f32), **LONG}) as client:
        applied = record_apply_edits(client)
        await wait_for_loads(client)
        uri = (tmp_path / "area.py").as_uri()
        open_document(client, uri, RANDOM_SOURCE)
        # A request stops the prefill of the opened file: the worker is idle for the command.
        await client.text_document_inline_completion_async(inline_params(uri, 6, 17))
        await client.workspace_execute_command_async(generate_params(uri, 0))
        token = await wait_for_candidate(client, 1)
        client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
        assert await wait_for_generations(client) == ["cancelled"]
        # The engine is free again: a completion is served.
        await client.text_document_inline_completion_async(inline_params(uri, 6, 17))
    assert applied == []
    log = (tmp_path / "server.log").read_text()
    (stopped,) = re.findall(r"area\(\): a candidate stopped after (\d+) tokens", log)
    assert int(stopped) < 256


async def wait_for_candidate(client: LanguageClient, number: int) -> str:
    """The progress token of the generation, once it reported writing candidate `number`."""
    return await wait_for_report(client, f"candidate {number} ")


async def wait_for_report(client: LanguageClient, start: str) -> str:
    """The progress token of the generation, once it reported a message starting so."""

    async def reported() -> str:
        while True:
            for token, reports in client.progress_reports.items():
                if reports in generations(client) and any(
                    isinstance(r, types.WorkDoneProgressReport)
                    and (r.message or "").startswith(start)
                    for r in reports
                ):
                    return str(token)
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(reported(), 60)


async def test_a_completion_does_not_wait_for_a_body_generation(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    """Candidates are written one job at a time: a completion asked meanwhile runs before the
    next candidate, so it is answered before the generation ends (it used to wait for all of
    it). Code actions never wait for the engine either."""
    async with lsp_session(tmp_path, {"model": str(tiny_model.gguf_f32), **LONG}) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "area.py").as_uri()
        open_document(client, uri, RANDOM_SOURCE)
        await client.workspace_execute_command_async(generate_params(uri, 0))
        await wait_for_candidate(client, 1)
        ended_first: list[bool] = []
        completion = client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 6, 17)
        )
        completion.add_done_callback(lambda _: ended_first.append(bool(generation_ends(client))))
        action = client.protocol.send_request(
            types.TEXT_DOCUMENT_CODE_ACTION, code_action_params(uri, 0)
        )
        action.add_done_callback(lambda _: ended_first.append(bool(generation_ends(client))))
        await wait_for_generations(client)
        assert ended_first == [False, False]
        assert completion.exception() is None and len(action.result()) == 1
    log = (tmp_path / "server.log").read_text()
    assert re.search(r"req \d+ \S+area\.py mode=", log)  # the completion ran the engine


GATED_SOURCE = '''import os


def add(a, b):
    """Return the sum of a and b.

    >>> add(2, 3)
    5
    >>> import os, time
    >>> while not os.path.exists(r"{gate}"): time.sleep(0.01)
    """
    pass
'''


async def test_doctests_run_off_the_engine_worker(tmp_path: Path, trained_model: TinyModel) -> None:
    """The candidate's doctest waits for a file that the test writes only after a completion
    asked during the doctests was answered: that works only if the doctests do not hold the
    engine's worker (otherwise the sandbox's 5 s timeout fails them)."""
    gate = tmp_path / "gate"
    source = GATED_SOURCE.format(gate=gate)
    settings = {"model": str(trained_model.gguf_f32), "generateCandidates": 1, **DOCTESTS}
    async with lsp_session(tmp_path, settings) as client:
        applied = record_apply_edits(client)
        await wait_for_loads(client)
        uri = (tmp_path / "calc.py").as_uri()
        open_document(client, uri, source)
        await client.workspace_execute_command_async(generate_params(uri))
        await wait_for_report(client, "doctests of candidate 1")
        await asyncio.wait_for(
            client.text_document_inline_completion_async(inline_params(uri, 3, 14)), 60
        )
        gate.touch()
        (end,) = await wait_for_generations(client)
    assert end.startswith("add(): doctests 3/3"), end
    assert len(applied) == 1


def code_action_params(uri: str, line: int) -> types.CodeActionParams:
    here = types.Position(line=line, character=4)
    return types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=here, end=here),
        context=types.CodeActionContext(diagnostics=[]),
    )


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
