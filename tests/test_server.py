"""End to end: a real `phi-lsp serve` process, real engines, the tiny phi model.

For both engines, what the server returns must be exactly what the engine produces for the
same prompt when called directly, post-processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from needs import need_module
from pygls.exceptions import JsonRpcRequestCancelled

from phi_lsp.completion.context import cursor_context, should_complete
from phi_lsp.completion.postprocess import postprocess
from phi_lsp.runtime.engines.base import Engine, GenerationRequest
from phi_lsp.settings import Settings
from testkit.lsp_session import (
    capabilities,
    inline_completion,
    inline_params,
    load_results,
    lsp_session,
    open_document,
    send_now,
    wait_for_loads,
)
from testkit.tinymodel import TinyModel

SOURCE = '''import math


def area(radius):
    """Return the area of a circle."""
    return math.pi * radius


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.
'''
# (line, character) cursors: end of a line, mid-expression, an empty block line, a "def" line.
CURSORS = [(16, 26), (5, 18), (5, 11), (13, 19), (10, 8), (3, 4)]
MAX_NEW_TOKENS = 24

BACKENDS = ["llamacpp", "transformers"]
DEFAULT_HEAL = Settings().token_healing  # what the server does unless told otherwise


def model_path(tiny_model: TinyModel, backend: str) -> str:
    return str(tiny_model.gguf_f32 if backend == "llamacpp" else tiny_model.hf_dir)


def settings_for(tiny_model: TinyModel, backend: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model_path(tiny_model, backend),
        "backend": backend,
        "maxNewTokens": MAX_NEW_TOKENS,
        "nThreads": 2,
        **extra,
    }


def direct_engine(tiny_model: TinyModel, backend: str) -> Engine:
    if backend == "llamacpp":
        from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2)
    from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

    return TransformersEngine(tiny_model.hf_dir, device="cpu", n_ctx=2048, n_threads=2)


def expected_suggestions(engine: Engine, text: str) -> dict[tuple[int, int], str]:
    """Greedy continuation of the text before each cursor, post-processed (no early stop)."""
    lines = text.splitlines(keepends=True)
    out = {}
    for line, character in CURSORS:
        offset = sum(len(x) for x in lines[:line]) + character
        ctx = cursor_context(text, offset)
        if not should_complete(ctx):  # e.g. too much code right of the cursor
            out[(line, character)] = ""
            continue
        generation = engine.generate(
            GenerationRequest(
                prompt=text[:offset], max_new_tokens=MAX_NEW_TOKENS, heal=DEFAULT_HEAL
            ),
            threading.Event(),
        )
        out[(line, character)] = postprocess(generation.text, ctx)
    return out


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "llamacpp":
        need_module("llama_cpp")
    return str(request.param)


@pytest.fixture(scope="module")
def expected(tiny_model: TinyModel, backend: str) -> dict[tuple[int, int], str]:
    engine = direct_engine(tiny_model, backend)
    try:
        return expected_suggestions(engine, SOURCE)
    finally:
        engine.close()


async def test_inline_completion_is_the_engines_postprocessed_greedy_continuation(
    tmp_path: Path, tiny_model: TinyModel, backend: str, expected: dict[tuple[int, int], str]
) -> None:
    assert any(expected.values()), "the tiny model should give at least one visible suggestion"
    async with lsp_session(tmp_path, settings_for(tiny_model, backend)) as client:
        caps = client.init_result.capabilities  # type: ignore[attr-defined]
        assert caps.inline_completion_provider is not None
        assert caps.completion_provider is None  # this client has inline completion
        ends = await wait_for_loads(client)
        assert "ready" in ends[0] and backend in ends[0]
        uri = (tmp_path / "stack.py").as_uri()
        open_document(client, uri, SOURCE)
        for (line, character), want in expected.items():
            items = await inline_completion(client, uri, line, character)
            got = items[0].insert_text if items else ""
            assert got == want, f"cursor {line}:{character}"
            if items:
                position = types.Position(line=line, character=character)
                assert items[0].range == types.Range(start=position, end=position)


async def test_completion_fallback_for_clients_without_inline_completion(
    tmp_path: Path, tiny_model: TinyModel, backend: str, expected: dict[tuple[int, int], str]
) -> None:
    (line, character), want = next((k, v) for k, v in expected.items() if v)
    async with lsp_session(tmp_path, settings_for(tiny_model, backend), inline=False) as client:
        assert client.init_result.capabilities.completion_provider is not None  # type: ignore[attr-defined]
        await wait_for_loads(client)
        uri = (tmp_path / "stack.py").as_uri()
        open_document(client, uri, SOURCE)
        result = await client.text_document_completion_async(
            types.CompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=types.Position(line=line, character=character),
            )
        )
    assert isinstance(result, types.CompletionList) and len(result.items) == 1
    item = result.items[0]
    word = SOURCE.splitlines()[line][:character]
    word = word[len(word.rstrip("abcdefghijklmnopqrstuvwxyz_")) :]
    assert item.insert_text == word + want and item.filter_text == word + want
    assert item.text_edit is None
    assert item.insert_text_format == types.InsertTextFormat.PlainText


async def test_cancelled_request_returns_and_the_next_one_works(
    tmp_path: Path, tiny_model: TinyModel, backend: str, expected: dict[tuple[int, int], str]
) -> None:
    (line, character), want = next((k, v) for k, v in expected.items() if v)
    settings = settings_for(tiny_model, backend)
    async with lsp_session(tmp_path, settings) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "stack.py").as_uri()
        open_document(client, uri, SOURCE)
        request_id = "cancel-me"
        first = client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION,
            inline_params(uri, line, character),
            msg_id=request_id,
        )
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request_id))
        # Answered either way: cancelled, or finished before the cancel arrived.
        with contextlib.suppress(JsonRpcRequestCancelled):
            await asyncio.wait_for(first, 60)
        # Superseded by a newer request for the same document: the old one ends empty
        # (or, if it finished before the newer one arrived, with the same suggestion).
        params = inline_params(uri, line, character)
        older = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
        newer = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
        older_items = (await asyncio.wait_for(older, 60)).items
        newer_items = (await asyncio.wait_for(newer, 60)).items
        assert newer_items[0].insert_text == want
        assert older_items in ([], newer_items)
        assert (await inline_completion(client, uri, line, character))[0].insert_text == want


async def test_completions_are_newest_wins_across_documents(
    tmp_path: Path, tiny_model: TinyModel, backend: str, expected: dict[tuple[int, int], str]
) -> None:
    """One cursor: a request in b.py supersedes the one in a.py still waiting (or running)."""
    (line, character), want = next((k, v) for k, v in expected.items() if v)
    settings = settings_for(tiny_model, backend, debounceMs=300)
    async with lsp_session(tmp_path, settings) as client:
        await wait_for_loads(client)
        a, b = (tmp_path / "a.py").as_uri(), (tmp_path / "b.py").as_uri()
        open_document(client, a, SOURCE)
        open_document(client, b, SOURCE)
        in_a = send_now(
            client, types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(a, line, character)
        )
        in_b = send_now(
            client, types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(b, line, character)
        )
        assert list((await asyncio.wait_for(in_a, 60)).items) == []
        assert (await asyncio.wait_for(in_b, 60)).items[0].insert_text == want


def hold_progress(client_gate: asyncio.Event) -> Callable[..., Any]:
    """A window/workDoneProgress/create handler that answers once `client_gate` is set."""

    async def create(ls: Any, params: types.WorkDoneProgressCreateParams) -> None:
        ls.progress_reports.setdefault(params.token, [])
        await client_gate.wait()

    return create


async def test_a_superseded_broken_load_is_neither_started_nor_reported(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    """The user fixes a wrong model path quickly: the load of the wrong one, asked for first,
    must not run (nor its failure reach the user) once the right one was asked for."""
    good = {"model": str(tiny_model.gguf_f32), "backend": "llamacpp", "nThreads": 2}
    caps = capabilities()
    assert caps.workspace is not None
    caps.workspace.configuration = False  # settings come with didChangeConfiguration
    gate = asyncio.Event()
    features = {types.WINDOW_WORK_DONE_PROGRESS_CREATE: hold_progress(gate)}
    async with lsp_session(
        tmp_path, {}, init_options=good, caps=caps, client_features=features
    ) as client:
        gate.set()
        await wait_for_loads(client)
        gate.clear()
        for model in (str(tmp_path / "nowhere" / "model.gguf"), good["model"]):
            client.workspace_did_change_configuration(
                types.DidChangeConfigurationParams(settings={"phiLsp": {**good, "model": model}})
            )

        async def both_asked_for_progress() -> None:
            while len(client.progress_reports) < 3:
                await asyncio.sleep(0.01)

        # Both loads were asked for (and wait for their progress) before either goes on.
        await asyncio.wait_for(both_asked_for_progress(), 30)
        gate.set()
        ends = await wait_for_loads(client, 3)
        assert ends[1] == "replaced by a newer load" and "ready" in ends[2], ends
        assert [m for m in client.messages if m.type == types.MessageType.Error] == []
    assert "does not exist" not in (tmp_path / "server.log").read_text()


async def test_bad_setting_is_reported_and_the_server_keeps_serving(
    tmp_path: Path, tiny_model: TinyModel, backend: str, expected: dict[tuple[int, int], str]
) -> None:
    (line, character), want = next((k, v) for k, v in expected.items() if v)
    async with lsp_session(tmp_path, settings_for(tiny_model, backend)) as client:
        await wait_for_loads(client)
        client.set_configuration(
            settings_for(tiny_model, backend, maxNewTokens="lots"), section="phiLsp"
        )
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        message = await asyncio.wait_for(client.wait_for_notification("window/showMessage"), 30)
        assert message.type == types.MessageType.Error
        assert "phiLsp.maxNewTokens" in message.message
        uri = (tmp_path / "stack.py").as_uri()
        open_document(client, uri, SOURCE)
        items = await inline_completion(client, uri, line, character)
        assert items[0].insert_text == want  # still served, with the previous maxNewTokens


@pytest.mark.parametrize("damage", ["missing", "truncated", "not-phi", "no-tokenizer"])
async def test_broken_model_gives_one_clear_error_then_loads_when_fixed(
    tmp_path: Path,
    tiny_model: TinyModel,
    backend: str,
    damage: str,
    expected: dict[tuple[int, int], str],
) -> None:
    if damage == "no-tokenizer" and backend == "llamacpp":
        pytest.skip("a GGUF carries its tokenizer")
    broken = broken_model(tmp_path, tiny_model, backend, damage)
    async with lsp_session(
        tmp_path, settings_for(tiny_model, backend, model=str(broken))
    ) as client:
        ends = await wait_for_loads(client)
        assert "could not load" in ends[0]
        errors = [m for m in client.messages if m.type == types.MessageType.Error]
        assert len(errors) == 1
        reason = {
            "missing": "does not exist",
            "truncated": "truncated",
            "not-phi": "phi",
            "no-tokenizer": "no tokenizer",
        }[damage]
        assert reason in errors[0].message
        uri = (tmp_path / "stack.py").as_uri()
        open_document(client, uri, SOURCE)
        assert await inline_completion(client, uri, 16, 26) == []  # answered, empty
        client.set_configuration(settings_for(tiny_model, backend), section="phiLsp")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        ends = await wait_for_loads(client, 2)
        assert "ready" in ends[1]
        (line, character), want = next((k, v) for k, v in expected.items() if v)
        assert (await inline_completion(client, uri, line, character))[0].insert_text == want


def broken_model(tmp_path: Path, tiny_model: TinyModel, backend: str, damage: str) -> Path:
    """A model path that cannot load, in the form the backend expects."""
    if damage == "missing":
        return tmp_path / "nowhere" / "model.gguf"
    if backend == "llamacpp":
        data = tiny_model.gguf_f32.read_bytes()
        path = tmp_path / "broken.gguf"
        if damage == "truncated":
            path.write_bytes(data[: len(data) // 2])
        else:  # same file, another architecture name in the header
            path.write_bytes(data.replace(b"phi2", b"gpt2", 1))
        return path
    folder = tmp_path / "broken-hf"
    folder.mkdir()
    for item in tiny_model.hf_dir.iterdir():
        if damage == "no-tokenizer" and item.name.startswith(("tokenizer", "vocab")):
            continue
        content = item.read_bytes()
        if item.suffix == ".safetensors" and damage == "truncated":
            content = content[: len(content) // 2]
        if item.name == "config.json" and damage == "not-phi":
            content = content.replace(b'"phi"', b'"gpt2"')
        (folder / item.name).write_bytes(content)
    return folder


async def test_progress_is_reported_while_loading(
    tmp_path: Path, tiny_model: TinyModel, backend: str
) -> None:
    async with lsp_session(tmp_path, settings_for(tiny_model, backend)) as client:
        await wait_for_loads(client)
        (reports,) = client.progress_reports.values()
    assert isinstance(reports[0], types.WorkDoneProgressBegin)
    assert "loading" in reports[0].title
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)


async def test_requests_while_loading_are_answered_empty_at_once(
    tmp_path: Path, tiny_model: TinyModel, backend: str
) -> None:
    # The client holds its answer to the loading's progress, so the load cannot finish before
    # the request is answered: the request lands in the loading window every time.
    gate = asyncio.Event()
    features = {types.WINDOW_WORK_DONE_PROGRESS_CREATE: hold_progress(gate)}
    settings = settings_for(tiny_model, backend)
    async with lsp_session(tmp_path, settings, client_features=features) as client:
        uri = (tmp_path / "stack.py").as_uri()
        open_document(client, uri, SOURCE)
        assert await asyncio.wait_for(inline_completion(client, uri, 16, 26), 30) == []
        assert load_results(client) == []
        gate.set()
        await wait_for_loads(client)
        assert await inline_completion(client, uri, 16, 26) != []


async def test_typing_into_a_suggestion_is_served_without_a_model_call(
    tmp_path: Path, tiny_model: TinyModel, expected: dict[tuple[int, int], str], backend: str
) -> None:
    (line, character), want = next(
        (k, v) for k, v in expected.items() if len(v) > 2 and "\n" not in v
    )
    async with lsp_session(tmp_path, settings_for(tiny_model, backend)) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "stack.py").as_uri()
        open_document(client, uri, SOURCE)
        first = await inline_completion(client, uri, line, character)
        assert first[0].insert_text == want
        here = types.Position(line=line, character=character)
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=here, end=here), text=want[:2]
                    )
                ],
            )
        )
        rest = await inline_completion(client, uri, line, character + 2)
    assert rest[0].insert_text == want[2:]
    log_text = (tmp_path / "server.log").read_text()
    assert log_text.count(" cache hit ") == 1
    assert log_text.count(" mode=line prompt_tokens=") == 1  # one model call in all


async def test_a_file_is_prefilled_when_opened(
    tmp_path: Path, tiny_model: TinyModel, backend: str
) -> None:
    """After didOpen the engine fills its cache: the first request evaluates only its line."""
    lines = (SOURCE * 12).splitlines(keepends=True)  # ~600 tokens, all of it before the cursor
    text = "".join(lines)
    line, character = len(lines) - 1, len(lines[-1])  # "        return self.items."
    log_file = tmp_path / "server.log"
    async with lsp_session(tmp_path, settings_for(tiny_model, backend)) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "long.py").as_uri()
        open_document(client, uri, text)

        async def prefilled() -> None:
            while f"warm {uri} evaluated=" not in log_file.read_text():
                await asyncio.sleep(0.05)

        await asyncio.wait_for(prefilled(), 60)  # a hang guard, not a speed check
        await inline_completion(client, uri, line, character)
    request = next(x for x in log_file.read_text().splitlines() if " prompt_tokens=" in x)
    fields = dict(part.split("=", 1) for part in request.split() if "=" in part)
    assert int(fields["prompt_tokens"]) > 400
    assert int(fields["evaluated"]) <= 12  # the cursor's line (+ a re-tokenised seam)
