"""The pipeline's own rules: the latency budget's clean cut, and prefilling ahead of requests."""

from __future__ import annotations

import inspect
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from needs import need_module

from phi_lsp.completion.context import cursor_context
from phi_lsp.completion.pipeline import clean_cut, suggest
from phi_lsp.completion.prefill import warm, warm_document
from phi_lsp.runtime.engines.base import Engine
from phi_lsp.settings import Settings
from testkit.tinymodel import TinyModel


def test_clean_cut_keeps_whole_lines_in_block_mode() -> None:
    ctx = cursor_context("def f(x):\n    ", len("def f(x):\n    "))
    assert ctx.mode == "block"
    assert clean_cut("y = x + 1\n    return y\n    pri", ctx) == "y = x + 1\n    return y\n"
    assert clean_cut("y = x +", ctx) == ""


def test_clean_cut_drops_a_possibly_unfinished_word_in_line_mode() -> None:
    ctx = cursor_context("total = sum(", len("total = sum("))
    assert ctx.mode == "line"
    assert clean_cut("values) + off", ctx) == "values) + "
    assert clean_cut("values) + ", ctx) == "values) + "


@pytest.fixture(scope="module")
def engine(tiny_model: TinyModel) -> Iterator[Engine]:
    need_module("llama_cpp")
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    eng = LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2)
    yield eng
    eng.close()


SOURCE = (Path(inspect.getfile(textwrap))).read_text()[:6000]


def _typing_after(code: str) -> tuple[str, int]:
    """SOURCE with the rest of the line after `code` deleted, and the cursor there."""
    offset = SOURCE.index(code) + len(code)
    return SOURCE[:offset] + SOURCE[SOURCE.index("\n", offset) :], offset


def test_after_opening_a_file_a_request_evaluates_only_the_cursor_line(engine: Engine) -> None:
    settings = Settings(model="tiny", max_new_tokens=8)
    engine.warm("x = 1\n", threading.Event())  # something else in the cache first
    text, offset = _typing_after("    nowhitespace = '[^' + ")
    assert warm_document(engine, text, settings, threading.Event()) > 500
    line_start = text.rfind("\n", 0, offset) + 1
    after = suggest(engine, text, offset, settings, threading.Event())
    cold = suggest(
        engine,
        text,
        offset,
        settings.model_copy(update={"prefix_cache": False}),
        threading.Event(),
    )
    assert after.generation is not None and cold.generation is not None
    assert after.generation.evaluated_tokens <= len(engine.tokenize(text[line_start:offset])) + 2
    assert cold.generation.evaluated_tokens == cold.generation.prompt_tokens > 500
    # The cached prefix changes nothing the model writes: the raw generation, not only what
    # post-processing kept of it (often nothing, from random weights).
    assert cold.generation.generated_tokens > 0
    assert (after.generation.text, after.generation.generated_tokens) == (
        cold.generation.text,
        cold.generation.generated_tokens,
    )
    assert after.text == cold.text


def test_typing_prefills_the_lines_above_the_cursor(engine: Engine) -> None:
    settings = Settings(model="tiny", max_new_tokens=8)
    engine.warm("x = 1\n", threading.Event())
    text, offset = _typing_after("    letter = r")
    assert warm(engine, text, offset, settings, threading.Event()) > 0
    typed = text[:offset] + "'" + text[offset:]
    assert warm(engine, typed, offset + 1, settings, threading.Event()) == 0  # same line
    after = suggest(engine, typed, offset + 1, settings, threading.Event())
    assert after.generation is not None
    line_start = text.rfind("\n", 0, offset) + 1
    assert (
        after.generation.evaluated_tokens
        <= len(engine.tokenize(typed[line_start : offset + 1])) + 2
    )


def test_prefilling_a_long_file_stops_at_the_prompt_budget(engine: Engine) -> None:
    settings = Settings(model="tiny", max_new_tokens=8, context_tokens=160)
    engine.warm("y = 2\n", threading.Event())
    text, offset = _typing_after("__all__ = ['TextWrapper', ")
    evaluated = warm_document(engine, text, settings, threading.Event())
    assert 100 < evaluated <= 152  # the budget: 160 - 8 new tokens
    # A request within that part of the file finds its prompt in the cache.
    assert len(engine.tokenize(text[:offset])) < 152
    after = suggest(engine, text, offset, settings, threading.Event())
    assert after.generation is not None and after.generation.evaluated_tokens <= 12
