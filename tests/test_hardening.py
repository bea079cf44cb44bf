"""Hardening: documents never drift, every request is answered, strange input, a soak run.

Everything drives a real `phi-lsp serve` process with the tiny model. The property-based tests
run `FUZZ_EXAMPLES` examples in CI; set PHI_LSP_FUZZ_EXAMPLES=2000 for a long local run.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled
from pytest_lsp import LanguageClient

from testkit.lsp_session import (
    capabilities,
    inline_params,
    lsp_session,
    open_document,
    wait_for_loads,
)
from testkit.tinymodel import TinyModel

T = TypeVar("T")
FUZZ_EXAMPLES = int(os.environ.get("PHI_LSP_FUZZ_EXAMPLES", "40"))
ANSWER_S = 60  # every request must be answered within this (a hang guard, not a speed check)
# Form feed, U+2028, NEL and friends are not line breaks in LSP, though str.splitlines says so.
ALPHABET = st.sampled_from(
    list("ab xy_()\n\t\r:é€😀𝔘\x0c\x0b\x85\u2028\u2029\x1c") + ["\r\n", "    ", "def ", "😀😀"]
)


class LiveServer:
    """A server session on its own event-loop thread, for synchronous hypothesis tests."""

    def __init__(self, tmp_path: Path, settings: dict[str, Any], encoding: str | None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tmp_path, self.settings, self.encoding = tmp_path, settings, encoding
        self.client: LanguageClient = self.run(self._start())
        self.messages = 0

    async def _start(self) -> LanguageClient:
        caps = capabilities()
        if self.encoding:
            caps.general = types.GeneralClientCapabilities(
                position_encodings=[types.PositionEncodingKind(self.encoding)]
            )
        self.session = lsp_session(self.tmp_path, self.settings, caps=caps)
        client = await self.session.__aenter__()
        await wait_for_loads(client)
        return client

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(ANSWER_S * 2)

    def close(self) -> None:
        self.run(self.session.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module", params=[None, "utf-8", "utf-32"])
def server(
    request: pytest.FixtureRequest, tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("hardening"),
        {"model": str(tiny_model.gguf_f32), "maxNewTokens": 4, "debounceMs": 0},
        request.param,
    )
    yield live
    live.close()


def units(text: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    if encoding == "utf-32":
        return len(text)
    return len(text.encode("utf-16-le")) // 2


LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the only line breaks LSP knows


def position(text: str, offset: int, encoding: str) -> types.Position:
    """The LSP position of a str offset: lines end at \\n, \\r\\n or \\r, nothing else."""
    breaks = [m.end() for m in LINE_BREAK.finditer(text, 0, offset)]
    start = breaks[-1] if breaks else 0
    return types.Position(line=len(breaks), character=units(text[start:offset], encoding))


def server_encoding(live: LiveServer) -> str:
    chosen = live.client.init_result.capabilities.position_encoding  # type: ignore[attr-defined]
    return str(chosen.value if hasattr(chosen, "value") else chosen or "utf-16")


async def document_text(client: LanguageClient, uri: str) -> str | None:
    reply = await asyncio.wait_for(
        client.protocol.send_request_async("phiLsp/documentText", {"uri": uri}), ANSWER_S
    )
    return reply.text if hasattr(reply, "text") else reply["text"]


edits = st.lists(
    st.tuples(st.floats(0, 1), st.floats(0, 1), st.lists(ALPHABET, max_size=4).map("".join)),
    max_size=25,
)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    initial=st.lists(ALPHABET, max_size=40).map("".join),
    changes=edits,
    ask_at=st.sets(st.integers(0, 24), max_size=3),
)
def test_documents_never_drift(
    server: LiveServer, initial: str, changes: list[tuple[float, float, str]], ask_at: set[int]
) -> None:
    encoding = server_encoding(server)
    server.messages += 1
    uri = f"file:///fuzz/doc{server.messages}.py"
    text = initial

    async def scenario() -> str | None:
        nonlocal text
        open_document(server.client, uri, text)
        for version, (a, b, insert) in enumerate(changes, start=2):
            start, end = sorted((int(a * len(text)), int(b * len(text))))
            # Never split a CRLF or a surrogate pair: an editor cannot place a cursor there.
            while 0 < start < len(text) and text[start - 1] == "\r" and text[start] == "\n":
                start -= 1
            while 0 < end < len(text) and text[end - 1] == "\r" and text[end] == "\n":
                end += 1
            rng = types.Range(
                start=position(text, start, encoding), end=position(text, end, encoding)
            )
            text = text[:start] + insert + text[end:]
            server.client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    content_changes=[
                        types.TextDocumentContentChangePartial(range=rng, text=insert)
                    ],
                )
            )
            if version - 2 in ask_at:  # requests interleaved with edits are answered
                here = position(text, len(text), encoding)
                result = await asyncio.wait_for(
                    server.client.text_document_inline_completion_async(
                        inline_params(uri, here.line, here.character)
                    ),
                    ANSWER_S,
                )
                assert result is not None
        got = await document_text(server.client, uri)
        server.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )
        return got

    assert server.run(scenario()) == text


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.integers(0, 3), st.lists(ALPHABET, max_size=12).map("".join)),
        st.tuples(
            st.just("change"), st.integers(0, 3), st.lists(ALPHABET, max_size=3).map("".join)
        ),
        st.tuples(st.just("close"), st.integers(0, 3), st.just("")),
        st.tuples(st.just("ask"), st.integers(0, 3), st.just("")),
        st.tuples(st.just("ask-cancel"), st.integers(0, 3), st.just("")),
        st.tuples(st.just("ask-past-end"), st.integers(0, 3), st.just("")),
        st.tuples(
            st.just("config"), st.integers(0, 3), st.sampled_from(["good", "bad", "unknown"])
        ),
    ),
    max_size=30,
)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=OPERATIONS)
def test_any_sequence_of_messages_is_survived(
    server: LiveServer, operations: list[tuple[str, int, str]]
) -> None:
    server.messages += 1
    base = f"file:///ops{server.messages}"
    texts: dict[str, str] = {}
    client = server.client

    async def scenario() -> None:
        pending = []
        for op, n, arg in operations:
            uri = f"{base}/f{n}.py"
            if op == "open" and uri not in texts:
                texts[uri] = arg
                open_document(client, uri, arg)
            elif op == "change" and uri in texts:
                end = position(texts[uri], len(texts[uri]), server_encoding(server))
                texts[uri] += arg
                client.text_document_did_change(
                    types.DidChangeTextDocumentParams(
                        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                        content_changes=[
                            types.TextDocumentContentChangePartial(
                                range=types.Range(start=end, end=end), text=arg
                            )
                        ],
                    )
                )
            elif op == "close" and uri in texts:
                del texts[uri]
                client.text_document_did_close(
                    types.DidCloseTextDocumentParams(
                        text_document=types.TextDocumentIdentifier(uri=uri)
                    )
                )
            elif op.startswith("ask"):
                line = 10_000 if op == "ask-past-end" else 0
                msg_id = f"{base}#{len(pending)}"
                future = client.protocol.send_request(
                    types.TEXT_DOCUMENT_INLINE_COMPLETION,
                    inline_params(uri, line, 3),
                    msg_id=msg_id,
                )
                if op == "ask-cancel":
                    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
                pending.append(asyncio.wrap_future(future))
            elif op == "config":
                value = {
                    "good": {"maxNewTokens": 3},
                    "bad": {"maxNewTokens": "x"},
                    "unknown": {"noSuchSetting": 1},
                }[arg]
                client.set_configuration(
                    {"model": server.settings["model"], **value}, section="phiLsp"
                )
                client.workspace_did_change_configuration(
                    types.DidChangeConfigurationParams(settings=None)
                )
        for future in pending:  # every request gets an answer (a cancelled one may be an error)
            try:
                result = await asyncio.wait_for(future, ANSWER_S)
            except JsonRpcRequestCancelled:
                continue
            assert isinstance(result, types.InlineCompletionList)
        for uri, text in texts.items():
            assert await document_text(client, uri) == text
            client.text_document_did_close(
                types.DidCloseTextDocumentParams(
                    text_document=types.TextDocumentIdentifier(uri=uri)
                )
            )
        client.set_configuration(server.settings, section="phiLsp")
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))

    server.run(scenario())


async def test_edit_storm_with_requests_interleaved(tmp_path: Path, tiny_model: TinyModel) -> None:
    settings_ = {"model": str(tiny_model.gguf_f32), "maxNewTokens": 2}
    async with lsp_session(tmp_path, settings_) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "storm.py").as_uri()
        text = "x = 1\n"
        open_document(client, uri, text)
        pending = []
        t0 = time.perf_counter()
        for i in range(3000):
            insert = "😀\n" if i % 50 == 0 else "é"
            end = position(text, len(text), "utf-16")
            text += insert
            client.text_document_did_change(
                types.DidChangeTextDocumentParams(
                    text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=i + 2),
                    content_changes=[
                        types.TextDocumentContentChangePartial(
                            range=types.Range(start=end, end=end), text=insert
                        )
                    ],
                )
            )
            if i % 100 == 0:
                here = position(text, len(text), "utf-16")
                pending.append(
                    asyncio.wrap_future(
                        client.protocol.send_request(
                            types.TEXT_DOCUMENT_INLINE_COMPLETION,
                            inline_params(uri, here.line, here.character),
                        )
                    )
                )
        sent_s = time.perf_counter() - t0
        answers = await asyncio.wait_for(asyncio.gather(*pending), ANSWER_S)
        assert all(isinstance(a, types.InlineCompletionList) for a in answers)
        assert await document_text(client, uri) == text
    print(f"edit storm: 3000 edits sent in {sent_s:.2f} s, {len(pending)} requests answered")


STRANGE = {
    "big.py": "def f(x):\n    return x\n" * 150_000,  # ~3.5 MB
    "one-line.py": "x = '" + "a" * 1_000_000,
    "binary.py": "".join(chr(i % 256) for i in range(200_000)),
    "notes.md": "# Title\n\nSome prose that is not Python at all.\n",
}


async def test_big_and_strange_documents_get_an_answer(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    settings_ = {"model": str(tiny_model.gguf_f32), "maxNewTokens": 4}
    async with lsp_session(tmp_path, settings_) as client:
        await wait_for_loads(client)
        uris = {name: (tmp_path / name).as_uri() for name in STRANGE}
        uris["cell"] = "vscode-notebook-cell:/work/nb.ipynb#W0sZmlsZQ%3D%3D"
        uris["untitled"] = "untitled:Untitled-1"
        contents = {**STRANGE, "cell": "import os\nos.", "untitled": "def f():\n    "}
        for name, uri in uris.items():
            open_document(client, uri, contents[name])
            end = position(contents[name], len(contents[name]), "utf-16")
            result = await asyncio.wait_for(
                client.text_document_inline_completion_async(
                    inline_params(uri, end.line, end.character)
                ),
                ANSWER_S,
            )
            assert isinstance(result, types.InlineCompletionList), name
        # never opened: an empty answer, not a file read
        result = await client.text_document_inline_completion_async(
            inline_params((tmp_path / "never.py").as_uri(), 0, 0)
        )
        assert result is not None and list(result.items) == []


async def test_requests_after_shutdown_get_an_error(tmp_path: Path, tiny_model: TinyModel) -> None:
    async with lsp_session(tmp_path, {"model": str(tiny_model.gguf_f32)}) as client:
        await wait_for_loads(client)
        await client.shutdown_async(None)
        with pytest.raises(JsonRpcException) as error:
            await asyncio.wait_for(
                client.text_document_inline_completion_async(inline_params("file:///x.py", 0, 0)),
                ANSWER_S,
            )
        assert error.value.code == -32600
        client.capabilities = None  # already shut down: the session must not do it again
        client.exit(None)


def rss_and_threads(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["Threads"])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
async def test_soak_memory_and_threads_stay_flat(tmp_path: Path, tiny_model: TinyModel) -> None:
    """Typing compressed in time: many documents opened, typed into, asked about and closed."""
    seconds = float(os.environ.get("PHI_LSP_SOAK_S", "20"))
    settings_ = {"model": str(tiny_model.gguf_f32), "maxNewTokens": 8}
    line = "    value = os.path.join(path, name)  # typed one key at a time\n"
    async with lsp_session(tmp_path, settings_) as client:
        await wait_for_loads(client)
        pid = client._server.pid  # type: ignore[union-attr]  # noqa: SLF001
        samples: list[tuple[float, int, int]] = []
        n_docs = n_edits = n_requests = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            n_docs += 1
            uri = f"file:///soak/doc{n_docs}.py"
            text = "import os\n\n\ndef f(path, name):\n"
            open_document(client, uri, text)
            pending = []
            for ch in line * 3:
                end = position(text, len(text), "utf-16")
                text += ch
                n_edits += 1
                client.text_document_did_change(
                    types.DidChangeTextDocumentParams(
                        text_document=types.VersionedTextDocumentIdentifier(
                            uri=uri, version=n_edits
                        ),
                        content_changes=[
                            types.TextDocumentContentChangePartial(
                                range=types.Range(start=end, end=end), text=ch
                            )
                        ],
                    )
                )
                here = position(text, len(text), "utf-16")
                n_requests += 1
                pending.append(
                    asyncio.wrap_future(
                        client.protocol.send_request(
                            types.TEXT_DOCUMENT_INLINE_COMPLETION,
                            inline_params(uri, here.line, here.character),
                        )
                    )
                )
            await asyncio.wait_for(asyncio.gather(*pending), ANSWER_S)
            client.text_document_did_close(
                types.DidCloseTextDocumentParams(
                    text_document=types.TextDocumentIdentifier(uri=uri)
                )
            )
            samples.append((time.monotonic() - t0, *rss_and_threads(pid)))
    warm = next((s for s in samples if s[0] >= seconds / 4), samples[0])
    end = samples[-1]
    print(
        f"soak {seconds:.0f} s: {n_docs} documents, {n_edits} edits, {n_requests} requests; "
        f"RSS {samples[0][1] / 1e6:.1f} → {warm[1] / 1e6:.1f} (warm) → {end[1] / 1e6:.1f} MB; "
        f"threads {warm[2]} → {end[2]}"
    )
    assert n_docs >= 3
    # Pools (OpenMP, executors) may add a thread or two lazily; a leak grows with the documents.
    assert end[2] <= warm[2] + 2 < warm[2] + n_docs
    assert end[1] - warm[1] < 40e6
