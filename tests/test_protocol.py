"""Every request gets an answer: malformed params and unknown methods get JSON-RPC errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from testkit.lsp_session import inline_completion, lsp_session, open_document, wait_for_loads
from testkit.tinymodel import TinyModel


def raw_request(client, method: str, params: object) -> asyncio.Future:  # type: ignore[no-untyped-def]
    """Send JSON the typed client would refuse to build (bypassing its own checks)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()
    msg_id = f"raw-{method}"
    client.protocol._request_futures[msg_id] = future  # noqa: SLF001 - the reply lands here
    client.protocol._send_data({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
    return future


async def test_malformed_params_and_unknown_methods_get_errors(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    async with lsp_session(tmp_path, {"model": str(tiny_model.gguf_f32)}) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "a.py").as_uri()
        open_document(client, uri, "def f(x):\n    return x")
        bad = {"textDocument": {"uri": uri}, "position": {"line": 1, "character": "eleven"}}
        with pytest.raises(JsonRpcException) as invalid:
            await asyncio.wait_for(raw_request(client, "textDocument/inlineCompletion", bad), 10)
        assert invalid.value.code == -32602
        with pytest.raises(JsonRpcException) as unknown:
            await asyncio.wait_for(raw_request(client, "phiLsp/noSuchMethod", {}), 10)
        assert unknown.value.code == -32601
        # and the server still serves
        assert isinstance(await inline_completion(client, uri, 1, 12), list)


async def test_a_client_answer_that_does_not_parse_ends_the_wait(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    """workspace/configuration answered with a number: the server must not wait forever.

    pygls drops a response it cannot structure, so the awaiting future never resolved and the
    model never loaded. The settings from initializationOptions must serve instead.
    """

    def configuration(params: types.ConfigurationParams) -> object:
        return 5  # not the list of sections the protocol asks for

    async with lsp_session(
        tmp_path,
        {},
        init_options={"model": str(tiny_model.gguf_f32), "backend": "llamacpp"},
        client_features={types.WORKSPACE_CONFIGURATION: configuration},
    ) as client:
        # A hang guard, not a speed assertion: before the fix nothing ever loaded.
        (message,) = await asyncio.wait_for(wait_for_loads(client), 60)
        assert "ready" in message
        uri = (tmp_path / "a.py").as_uri()
        open_document(client, uri, "def f(x):\n    return x")
        assert isinstance(await inline_completion(client, uri, 1, 12), list)
    log = (tmp_path / "server.log").read_text()
    assert "workspace/configuration" in log and "could not be read" in log


async def test_a_client_that_never_answers_does_not_stall_the_load_or_a_generation(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    """lsp-mode 8.0 loses a server request that arrives in the same read as the answer to its
    own synchronous request: neither the load (which asks for the settings and a progress) nor a
    body generation (which asks for a progress) may wait for such an answer forever."""
    never = asyncio.Event()

    async def no_answer(ls: Any, params: Any) -> None:
        await never.wait()

    applied: list[types.WorkspaceEdit] = []

    def apply_edit(ls: Any, params: types.ApplyWorkspaceEditParams) -> Any:
        applied.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    features = {
        types.WORKSPACE_CONFIGURATION: no_answer,
        types.WINDOW_WORK_DONE_PROGRESS_CREATE: no_answer,
        types.WORKSPACE_APPLY_EDIT: apply_edit,
    }
    model = {"model": str(trained_model.gguf_f32), "backend": "llamacpp"}
    async with lsp_session(tmp_path, {}, init_options=model, client_features=features) as client:
        uri = (tmp_path / "calc.py").as_uri()
        source = (
            'def add(a, b):\n    """Return the sum of a and b.\n\n'
            '    >>> add(2, 3)\n    5\n    """\n    pass\n'
        )
        open_document(client, uri, source)

        async def loaded() -> None:
            while not await inline_completion(client, uri, 6, 8):
                await asyncio.sleep(0.2)

        await asyncio.wait_for(loaded(), 60)  # a hang guard: it never loaded before
        params = types.ExecuteCommandParams(
            command="phiLsp.generateFunction", arguments=[uri, {"line": 0, "character": 0}]
        )
        assert await client.workspace_execute_command_async(params) == {"function": "add"}

        async def edited() -> None:
            while not applied:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(edited(), 60)
        never.set()
    log = (tmp_path / "server.log").read_text()
    assert "workspace/configuration failed: no answer from the editor" in log
    assert "work done progress refused: no answer from the editor" in log
