"""Every request gets an answer: malformed params and unknown methods get JSON-RPC errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from lsp_session import inline_completion, lsp_session, open_document, wait_for_loads
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from tinymodel import TinyModel


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
