"""Start a real `phi-lsp serve` subprocess and drive it with pytest-lsp's client."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.protocol import default_converter
from pytest_lsp import ClientServerConfig, LanguageClient
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, make_test_lsp_client, register_lsp_features

LOAD_TIMEOUT_S = 120  # a hang guard, not a speed assertion


def capabilities(inline: bool = True) -> types.ClientCapabilities:
    """A client like VS Code (inline completion) or like Neovim 0.11 (completion only)."""
    return types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            completion=types.CompletionClientCapabilities(),
            inline_completion=types.InlineCompletionClientCapabilities() if inline else None,
        ),
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(
            configuration=True,
            did_change_configuration=types.DidChangeConfigurationClientCapabilities(),
        ),
    )


@asynccontextmanager
async def lsp_session(
    tmp_path: Path,
    settings: dict[str, Any],
    *,
    inline: bool = True,
    init_options: dict[str, Any] | None = None,
    home: Path | None = None,
    caps: types.ClientCapabilities | None = None,
    client_features: dict[str, Callable[..., Any]] | None = None,
) -> AsyncIterator[LanguageClient]:
    """A server initialized with `settings` served through workspace/configuration.

    `client_features` replace the test client's own handlers of server requests (e.g. a client
    that answers workspace/configuration with something malformed).
    """
    env = {**os.environ, "PHI_LSP_HOME": str(home or tmp_path / "home")}
    command = [sys.executable, "-m", "phi_lsp", "serve", "--log-file", str(tmp_path / "server.log")]

    def make_client() -> LanguageClient:
        if not client_features:
            return make_test_lsp_client()
        client = LanguageClient(converter_factory=default_converter)
        register_lsp_features(client, {**DEFAULT_CLIENT_FEATURES, **client_features})
        return client

    config = ClientServerConfig(server_command=command, server_env=env, client_factory=make_client)
    client = await config.start()
    assert isinstance(client, LanguageClient)
    client.set_configuration(settings, section="phiLsp")
    client.init_result = await client.initialize_session(  # type: ignore[attr-defined]
        types.InitializeParams(
            capabilities=caps or capabilities(inline),
            root_uri=tmp_path.as_uri(),
            initialization_options=init_options,
        )
    )
    try:
        yield client
    finally:
        await client.shutdown_session()
        await client.stop()


def load_results(client: LanguageClient) -> list[str]:
    """The end messages of every finished model load, in order."""
    ends = []
    for reports in client.progress_reports.values():
        ends += [r.message or "" for r in reports if isinstance(r, types.WorkDoneProgressEnd)]
    return ends


async def wait_for_loads(client: LanguageClient, count: int = 1) -> list[str]:
    async def loaded() -> list[str]:
        while len(load_results(client)) < count:
            await asyncio.sleep(0.05)
        return load_results(client)

    return await asyncio.wait_for(loaded(), LOAD_TIMEOUT_S)


def open_document(client: LanguageClient, uri: str, text: str, version: int = 1) -> None:
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=version, text=text
            )
        )
    )


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic
        ),
    )


async def inline_completion(
    client: LanguageClient, uri: str, line: int, character: int
) -> list[types.InlineCompletionItem]:
    result = await client.text_document_inline_completion_async(inline_params(uri, line, character))
    if result is None:
        return []
    return list(result.items if isinstance(result, types.InlineCompletionList) else result)


def send_now(client: LanguageClient, method: str, params: Any) -> asyncio.Future[Any]:
    """Send a request at once and return its answer's future.

    pytest-lsp's `send_request_async` is a coroutine: it sends only when awaited, so two of
    them created back to back are sent one after the other's answer.
    """
    return asyncio.wrap_future(client.protocol.send_request(method, params))
