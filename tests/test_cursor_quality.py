"""Right at every cursor position: token healing through a real `phi-lsp serve`.

The trained tiny model has memorised a few functions; every memorised line is cut at every
character (testkit/cursor_quality.py) and the ghost text there must give the line back. Without
healing about half the cut points are wrong (mid-word, after a space, after an indentation
token); bench/cursor_quality.py prints the figures per engine, rule and situation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types
from needs import need_module

from testkit.cursor_quality import cut_points, run_server
from testkit.lsp_session import inline_completion, lsp_session, open_document, wait_for_loads
from testkit.tinymodel import TinyModel
from testkit.trained_model import LESSONS

BACKENDS = ["llamacpp", "transformers"]
SITUATIONS = {
    "after a space",
    "inside an identifier",
    "inside a string",
    "after an operator",
    "after (",
    "end of line",
    "empty indented line",
    "after a whitespace-run token",
    "non-ASCII line",
    "line mode",
    "block mode",
}


def model_settings(model: TinyModel, backend: str) -> dict[str, str]:
    path = model.gguf_f32 if backend == "llamacpp" else model.hf_dir
    return {"model": str(path), "backend": backend}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "llamacpp":
        need_module("llama_cpp")
    return str(request.param)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
async def test_the_memorised_line_comes_back_at_nine_in_ten_cut_points(
    tmp_path: Path, trained_model: TinyModel, backend: str, newline: str
) -> None:
    points = cut_points(LESSONS, newline)
    score = await run_server(tmp_path, model_settings(trained_model, backend), points)
    assert set(score.total) >= SITUATIONS, "every situation the issue names is measured"
    misses = [(p.document[-30:], got) for p, got in score.misses]
    assert score.share() >= 0.9, f"{score.share():.1%} right; misses: {misses[:10]}"
    for situation in SITUATIONS:
        assert score.share(situation) >= 0.75, (situation, misses[:10])


async def test_without_healing_the_same_measure_fails(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    """The measure can fail: the prefix-only prompt is wrong mid-word and after a space."""
    need_module("llama_cpp")
    settings = {**model_settings(trained_model, "llamacpp"), "tokenHealing": "off"}
    score = await run_server(tmp_path, settings, cut_points(LESSONS))
    assert score.share() < 0.75
    assert score.share("after a space") < 0.5


def change(client: object, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(  # type: ignore[attr-defined]
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


async def test_backspace_serves_what_the_healed_model_says_there(
    tmp_path: Path, trained_model: TinyModel, backend: str
) -> None:
    """`return ` → `a + b`; Backspace → ` a + b`. A space the model did not want, then
    Backspace: the line's body again, not the space in front of what came after it."""
    stub = LESSONS[0][: LESSONS[0].index("    return")]
    settings = {**model_settings(trained_model, backend), "debounceMs": 0}
    async with lsp_session(tmp_path, settings) as client:
        assert "ready" in (await wait_for_loads(client))[-1]
        uri = (tmp_path / "calc.py").as_uri()
        open_document(client, uri, stub + "    return ")
        line = stub.count("\n")

        async def ghost(text: str, version: int) -> str:
            change(client, uri, text, version)
            items = await inline_completion(client, uri, line, len(text) - len(stub))
            return str(items[0].insert_text) if items else ""

        assert await ghost(stub + "    return ", 2) == "a + b"
        assert await ghost(stub + "    return", 3) == " a + b"
        assert await ghost(stub + "    ", 4) == "return a + b"
        await ghost(stub + "     ", 5)  # a space too many: the model cannot continue it well
        assert await ghost(stub + "    ", 6) == "return a + b"
    log = (tmp_path / "server.log").read_text()
    assert log.count("cache hit") >= 2, "Backspace was served from the typed-ahead cache"
