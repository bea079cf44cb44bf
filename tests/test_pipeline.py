"""The pipeline's own rules: the latency budget's clean cut."""

from phi_lsp.context import cursor_context
from phi_lsp.pipeline import clean_cut


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
