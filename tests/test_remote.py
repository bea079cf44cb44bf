"""The remote engine against a real llama_cpp.server on loopback, and the shared engine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from lsprotocol import types
from needs import need_module

from phi_lsp.completion.context import cursor_context
from phi_lsp.completion.postprocess import postprocess
from phi_lsp.runtime.engines.base import GenerationRequest
from phi_lsp.settings import Settings
from testkit.lsp_session import inline_completion, lsp_session, open_document, wait_for_loads
from testkit.tinymodel import TinyModel

need_module("llama_cpp.server")

SOURCE = (
    "import os\n\n\ndef list_files(root):\n    return [name for name in os.listdir(root) if name"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_upstream(gguf: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "phi_lsp.runtime.engines.llama_server",
        "auto",
        str(gguf),
        "--",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
    ]
    process = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    for _ in range(600):  # a hang guard, not a speed check
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            assert process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.1)
    process.kill()
    raise TimeoutError("upstream did not start")


@pytest.fixture
def upstream(tiny_model: TinyModel, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = start_upstream(tiny_model.gguf_f32, port, tmp_path / "upstream.log")
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def upstream_trained(
    trained_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An upstream serving the model that memorised LESSONS (one per module)."""
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    process = start_upstream(trained_model.gguf_f32, port, log)
    yield f"http://127.0.0.1:{port}"
    process.kill()
    process.wait()


def local_expected(tiny_model: TinyModel, text: str, max_new_tokens: int) -> str:
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(tiny_model.gguf_f32, n_threads=2)
    request = GenerationRequest(text, max_new_tokens, heal=Settings().token_healing)
    raw = engine.generate(request, threading.Event()).text
    engine.close()
    return postprocess(raw, cursor_context(text, len(text)))


STUB = 'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n    """\n'


async def test_remote_completion_equals_the_local_engines(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    # The trained model writes valid text: random weights emit broken UTF-8, which servers
    # drop or replace differently.
    port = free_port()
    process = start_upstream(trained_model.gguf_f32, port, tmp_path / "upstream.log")
    want = local_expected(trained_model, STUB, 16)
    assert want == "    return a + b"
    settings = {"backend": "remote", "remoteUrl": f"http://127.0.0.1:{port}", "maxNewTokens": 16}
    try:
        async with lsp_session(tmp_path, settings) as client:
            ends = await wait_for_loads(client)
            assert "ready (remote" in ends[0]
            uri = (tmp_path / "a.py").as_uri()
            open_document(client, uri, STUB)
            items = await inline_completion(client, uri, len(STUB.splitlines()), 0)
    finally:
        process.kill()
    assert items[0].insert_text == want


def test_stop_and_deadline_end_the_stream(tiny_model: TinyModel, upstream: str) -> None:
    from phi_lsp.runtime.engines.remote_engine import RemoteEngine

    engine = RemoteEngine(upstream)
    assert engine.reachable and len(engine.tokenize("def f(x):")) > 0
    stop = threading.Event()
    seen: list[str] = []

    def cancel_after_two(text: str) -> bool:
        seen.append(text)
        if len(seen) == 2:
            stop.set()
        return False

    cancelled = engine.generate(
        GenerationRequest(SOURCE, max_new_tokens=500, is_done=cancel_after_two), stop
    )
    assert cancelled.stopped == "cancelled" and cancelled.generated_tokens <= 3
    late = engine.generate(
        GenerationRequest(SOURCE, max_new_tokens=500, deadline=time.monotonic()),
        threading.Event(),
    )
    assert late.stopped == "deadline" and late.generated_tokens <= 1
    # the upstream is still fine after a closed stream
    again = engine.generate(GenerationRequest(SOURCE, max_new_tokens=4), threading.Event())
    assert again.generated_tokens > 0
    engine.close()


async def test_dead_upstream_gives_one_message_and_recovers(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_upstream(tiny_model.gguf_f32, port, tmp_path / "upstream.log")
    settings = {"backend": "remote", "remoteUrl": url, "maxNewTokens": 8}
    try:
        async with lsp_session(tmp_path, settings) as client:
            await wait_for_loads(client)
            uri = (tmp_path / "a.py").as_uri()
            open_document(client, uri, SOURCE)
            lines = SOURCE.splitlines()
            where = (len(lines) - 1, len(lines[-1]))
            assert await inline_completion(client, uri, *where) != []
            process.kill()
            process.wait()
            for n in range(3):  # different prefixes, so the typed-ahead cache cannot answer
                assert await inline_completion(client, uri, where[0], where[1] - n - 1) == []
            warnings = [m for m in client.messages if m.type == types.MessageType.Warning]
            assert len(warnings) == 1 and "failing" in warnings[0].message
            process = start_upstream(tiny_model.gguf_f32, port, tmp_path / "upstream.log")
            assert await inline_completion(client, uri, where[0], where[1] - 5) != []
    finally:
        process.kill()


async def test_two_language_servers_share_one_engine(tmp_path: Path, tiny_model: TinyModel) -> None:
    env = {**os.environ, "PHI_LSP_HOME": str(tmp_path / "home")}
    model = str(tiny_model.gguf_f32)
    started = subprocess.run(
        [sys.executable, "-m", "phi_lsp", "engine", "start", "--model", model, "--threads", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert started.returncode == 0, started.stderr
    try:
        refused = subprocess.run(
            [
                sys.executable,
                "-m",
                "phi_lsp",
                "engine",
                "start",
                "--model",
                model,
                "--host",
                "0.0.0.0",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and "--allow-remote" in refused.stderr
        sessions = [
            lsp_session(
                tmp_path / f"ls{i}", {"model": model, "maxNewTokens": 8}, home=tmp_path / "home"
            )
            for i in (1, 2)
        ]
        for i in (1, 2):
            (tmp_path / f"ls{i}").mkdir()
        async with sessions[0] as first, sessions[1] as second:
            for client in (first, second):
                ends = await wait_for_loads(client)
                assert "ready (remote" in ends[0]
            uri = (tmp_path / "a.py").as_uri()
            results = []
            for client in (first, second):
                open_document(client, uri, SOURCE)
                lines = SOURCE.splitlines()
                results.append(await inline_completion(client, uri, len(lines) - 1, len(lines[-1])))
            assert results[0] == results[1] != []
    finally:
        stopped = subprocess.run(
            [sys.executable, "-m", "phi_lsp", "engine", "stop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "stopped pid" in stopped.stdout


def count_requests(engine: Any) -> list[httpx.Request]:
    """Every HTTP request the engine sends from now on (an httpx event hook, no stand-in)."""
    sent: list[httpx.Request] = []
    engine.client.event_hooks["request"].append(sent.append)
    return sent


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/"])
def test_remote_url_with_or_without_v1(tiny_model: TinyModel, upstream: str, suffix: str) -> None:
    """OpenAI clients, vLLM's docs and Continue write the base URL with /v1; both forms work."""
    from phi_lsp.runtime.engines.remote_engine import RemoteEngine

    engine = RemoteEngine(upstream + suffix)
    sent = count_requests(engine)
    try:
        assert engine.reachable, engine.detail
        out = engine.generate(GenerationRequest(SOURCE, max_new_tokens=4), threading.Event())
        assert out.generated_tokens > 0
        assert [r.url.path for r in sent] == ["/v1/completions"]
    finally:
        engine.close()


def test_a_4xx_answer_is_not_retried_and_says_what_the_server_answered(
    tiny_model: TinyModel, upstream: str
) -> None:
    from phi_lsp.runtime.engines.remote_engine import RemoteEngine, RemoteError

    engine = RemoteEngine(upstream + "/api")  # a wrong path: the server answers 404
    sent = count_requests(engine)
    try:
        with pytest.raises(RemoteError) as raised:
            engine.generate(GenerationRequest(SOURCE, max_new_tokens=4), threading.Event())
        assert len(sent) == 1, [str(r.url) for r in sent]
        message = str(raised.value)
        assert "HTTP 404" in message and "/api/v1/completions" in message
        assert "Not Found" in message  # the server's own answer
    finally:
        engine.close()


async def test_a_wrong_remote_url_gives_one_editor_message(tmp_path: Path, upstream: str) -> None:
    settings = {"backend": "remote", "remoteUrl": upstream + "/api", "maxNewTokens": 8}
    async with lsp_session(tmp_path, settings) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "a.py").as_uri()
        open_document(client, uri, SOURCE)
        lines = SOURCE.splitlines()
        for n in range(4):  # different prefixes, so the typed-ahead cache cannot answer
            await inline_completion(client, uri, len(lines) - 1, len(lines[-1]) - n)
    warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
    assert len(warnings) == 1 and "HTTP 404" in warnings[0] and "Not Found" in warnings[0]


def long_file(functions: int, dense: bool) -> str:
    """Ordinary code, or code whose words are hashes (many tokens each: the local estimate,
    about one token per word, is far too low at first)."""
    import hashlib

    def word(i: int) -> str:
        return "h" + hashlib.sha256(str(i).encode()).hexdigest()[:30] if dense else f"value_{i}"

    body = "".join(
        f"def handler_{i}(request, *args):\n"
        f'    """Handle request number {i}."""\n'
        f"    return request.get('{word(i)}', {i}) * len(args)\n\n\n"
        for i in range(functions)
    )
    return "import os\nimport sys\n\n\n" + body + "def last(path):\n    return os.path."


@pytest.mark.parametrize("dense", [False, True], ids=["code", "dense"])
def test_a_long_file_costs_at_most_two_tokenize_calls(
    tiny_model: TinyModel, upstream: str, dense: bool
) -> None:
    """Budgeting a long file counted tokens line by line: one HTTP call per line, per keystroke.
    Now the remote prompt is budgeted locally and only the prompt sent is counted upstream."""
    from phi_lsp.completion.pipeline import suggest
    from phi_lsp.runtime.engines.remote_engine import RemoteEngine
    from phi_lsp.settings import Settings

    # Healing off: this test reads the one prompt sent (healing sends it less its split tail,
    # and again whole when the answer does not write that tail).
    settings = Settings(max_new_tokens=8, context_tokens=1024, token_healing="off")
    budget = 1024 - 8
    engine = RemoteEngine(upstream, n_ctx=settings.context_tokens)
    text = long_file(300, dense)
    try:
        for typed in ("", "j", "jo", "joi"):  # a few keystrokes at the end
            sent = count_requests(engine)
            document = text + typed
            result = suggest(engine, document, len(document), settings, threading.Event())
            assert result.generation is not None and result.generation.generated_tokens > 0
            tokenize_calls = [r for r in sent if r.url.path.endswith("tokenize")]
            assert len(tokenize_calls) <= 2, f"{len(tokenize_calls)} tokenize calls"
            (completion,) = [r for r in sent if r.url.path == "/v1/completions"]
            prompt = json.loads(completion.content)["prompt"]
            exact = httpx.post(
                f"{upstream}/extras/tokenize", json={"input": prompt, "add_special": False}
            ).json()["tokens"]
            assert len(exact) <= budget
            if typed:  # once the estimate has learned from a count: not a timid fraction of it
                assert len(exact) >= budget // 2, len(exact)
            assert prompt.startswith("import os\nimport sys\n\n\n")
            assert document.endswith(prompt[len("import os\nimport sys\n\n\n") :])
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("typed", "shown"),
    [("    retur", "n a + b"), ("    return ", "a + b"), ("    return a + ", "b")],
)
def test_remote_heals_a_split_word(upstream_trained: str, typed: str, shown: str) -> None:
    """The upstream is asked without the split tail and its answer kept when it writes it."""
    from phi_lsp.runtime.engines.remote_engine import RemoteEngine

    engine = RemoteEngine(upstream_trained)
    request = GenerationRequest(STUB + typed, max_new_tokens=12, heal="word")
    healed = engine.generate(request, threading.Event())
    plain = engine.generate(replace(request, heal="off"), threading.Event())
    engine.close()
    assert healed.text.split("\n")[0] == shown
    assert healed.healed and typed.endswith(healed.healed)
    assert plain.text.split("\n")[0] != shown  # what the cut token makes of it


def test_remote_asks_again_unhealed_when_the_answer_does_not_write_the_tail(
    upstream_trained: str,
) -> None:
    from phi_lsp.runtime.engines.remote_engine import RemoteEngine

    engine = RemoteEngine(upstream_trained)
    request = GenerationRequest(STUB + "    return zq", max_new_tokens=6, heal="word")
    healed = engine.generate(request, threading.Event())
    plain = engine.generate(replace(request, heal="off"), threading.Event())
    engine.close()
    assert healed.healed == "" and healed.text == plain.text


def test_the_shared_engine_does_not_map_repacked_weights(
    tiny_model: TinyModel, tmp_path: Path
) -> None:
    """`phi-lsp engine` (engine_server) loads as the in-process engine does: no mmap when
    llama.cpp repacks the weights (Q4_0 in CPU_REPACK or AMX), else it holds them twice."""
    from phi_lsp.models.quantize import quantize_gguf
    from phi_lsp.runtime.engines.llama_buffers import repacks

    model = quantize_gguf(tiny_model.gguf_f16, tmp_path / "shared-q4_0.gguf", "q4_0", threads=2)
    port = free_port()
    process = start_upstream(model, port, tmp_path / "upstream.log")
    try:
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        assert (str(model) in maps) is not repacks(model), (tmp_path / "upstream.log").read_text()
        assert repacks(model) == ("CPU_REPACK" in (tmp_path / "upstream.log").read_text())
    finally:
        process.kill()
        process.wait()
