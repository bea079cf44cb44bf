"""The cursor context: text split, mode, indentation, and when to ask the model at all."""

from __future__ import annotations

import pytest

from phi_lsp.completion.context import (
    CursorContext,
    block_opener_indent,
    cursor_context,
    indent_unit,
    scan,
    should_complete,
)

CURSOR = "█"


def ctx_of(marked: str) -> CursorContext:
    """The cursor context of `marked`, a file with the cursor written as CURSOR."""
    assert marked.count(CURSOR) == 1
    return cursor_context(marked.replace(CURSOR, ""), marked.index(CURSOR))


def test_split_fields() -> None:
    ctx = ctx_of("import os\n    x = fo█o(1)\ny = 2\n")
    assert ctx.prefix == "import os\n    x = fo"
    assert ctx.suffix == "o(1)\ny = 2\n"
    assert ctx.line_prefix == "    x = fo"
    assert ctx.line_suffix == "o(1)"
    assert (ctx.mode, ctx.indent) == ("line", "    ")


@pytest.mark.parametrize(
    ("file", "mode", "indent"),
    [
        # mid-line: finish the line, at the line's own indentation
        ("def f():\n    return x█\n", "line", "    "),
        ("def f():\n    re█turn x\n", "line", "    "),
        # whitespace-only line: the cursor's whitespace
        ("def f():\n    x = 1\n    █\n", "block", "    "),
        ("def f():\n  █\n", "block", "  "),
        # empty line: previous non-blank line's indentation, one deeper after an opener
        ("def f():\n    x = 1\n█\n", "block", "    "),
        ("def f():\n█", "block", "    "),
        ("def f():\n\n\n█", "block", "    "),
        ("x = 1\n█", "block", ""),
        ("if x:  # a comment\n█", "block", "    "),
        ("if x:\n    # a comment\n█", "block", "    "),
        ("def f(a,\n      b):\n█", "block", "    "),
        ("    x = foo(a,\n            b)\n█", "block", "    "),
        ("x = [\n    1,\n█", "block", "    "),
        # end of a ":" line: the opener's indentation plus one level
        ("def f():█\n", "block", "    "),
        ("class A:\n    def f(self):█", "block", "        "),
        ("def f():\n    if x:   █\n", "block", "        "),
        ("def f(a,\n      b):█", "block", "    "),
        # a ":" that opens no block
        ("x = {\n    'a':█", "line", "    "),
        ("y = d[1:█", "line", ""),
        ("# todo:█", "line", ""),
        ("s = 'a:█", "line", ""),
        ("x = '''\ndoc:█", "line", ""),
        ("if x:█ pass", "line", ""),
    ],
)
def test_mode_and_indent(file: str, mode: str, indent: str) -> None:
    ctx = ctx_of(file)
    assert (ctx.mode, ctx.indent) == (mode, indent)


def test_tabs() -> None:
    ctx = ctx_of("def f():\n\tif x:█\n\t\tpass\n")
    assert (ctx.mode, ctx.indent) == ("block", "\t\t")
    assert ctx_of("def f():\n\tx = 1\n█").indent == "\t"
    assert ctx_of("def f():\n█\tpass\n").indent == "\t"


def test_two_space_file() -> None:
    ctx = ctx_of("class A:\n  def f(self):\n    pass\n  def g(self):█")
    assert ctx.indent == "    "
    assert indent_unit("class A:\n  def f(self):\n    pass\n") == "  "
    assert indent_unit("x = 1\n") == "    "


def test_crlf() -> None:
    ctx = ctx_of("def f():\r\n    return x█\r\ny = 2\r\n")
    assert (ctx.line_prefix, ctx.line_suffix, ctx.mode) == ("    return x", "", "line")
    ctx = ctx_of("def f():\r\n    x = fo█o()\r\n")
    assert (ctx.line_prefix, ctx.line_suffix) == ("    x = fo", "o()")
    ctx = ctx_of("def f():█\r\n    pass\r\n")
    assert (ctx.mode, ctx.indent, ctx.line_suffix) == ("block", "    ", "")
    ctx = ctx_of("def f():\r\n█\r\n")
    assert (ctx.line_prefix, ctx.line_suffix, ctx.mode, ctx.indent) == ("", "", "block", "    ")
    # An offset between "\r" and "\n" is still the end of the line.
    ctx = cursor_context("x = 1\r\ny", 6)
    assert (ctx.line_prefix, ctx.line_suffix) == ("x = 1", "")


def test_start_end_and_empty_file() -> None:
    empty = cursor_context("", 0)
    assert empty == CursorContext("", "", "", "", "", "block")
    assert not should_complete(empty)
    start = cursor_context("import os\n", 0)
    assert (start.prefix, start.line_suffix, start.mode, start.indent) == (
        "",
        "import os",
        "block",
        "",
    )
    assert not should_complete(start)
    end = cursor_context("import os", 9)
    assert (end.line_prefix, end.suffix, end.mode) == ("import os", "", "line")
    assert should_complete(end)
    after_newline = cursor_context("import os\n", 10)
    assert (after_newline.line_prefix, after_newline.mode) == ("", "block")
    # Offsets outside the text are clamped.
    assert cursor_context("ab", 99).prefix == "ab"
    assert cursor_context("ab", -5).suffix == "ab"


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("x = foo(█", True),
        ("print(█)", True),
        ('print("█")', True),
        ("foo(█)))))))))):", True),  # only closers, however many
        ("x = █ + 1", True),  # little code right of the cursor
        ("x = █  # comment", False),  # more than 8 characters of it
        ("foo(█, bar, baz)", False),
        ("x = 1█        \n", True),  # trailing whitespace does not count
        ("# a comm█", True),  # comments are fine
        ("def f():\n    █return x\n", False),  # a block would be glued before `return x`
        ("def f():\n    █)\n", True),
        ("█", False),  # nothing to continue
        ("\n\n   █", False),
    ],
)
def test_should_complete(file: str, expected: bool) -> None:
    assert should_complete(ctx_of(file)) is expected


def test_block_opener_indent() -> None:
    assert block_opener_indent("    for x in y:") == "    "
    assert block_opener_indent("    for x in y:\n\n") == "    "
    assert block_opener_indent("x = 1\n") is None
    assert block_opener_indent("") is None
    assert block_opener_indent("f(a:") is None


def test_scan() -> None:
    st = scan("x = (1,\n  2) # c(\ny = '''a\nb''' + \"(\" + '\\'('\nz = [")
    assert st.unmatched_closers == 0
    assert len(st.open_brackets) == 1
    assert st.string_start is None and not st.in_comment
    assert (
        st.stmt_start
        == st.last_code_stmt_start
        == len("x = (1,\n  2) # c(\ny = '''a\nb''' + \"(\" + '\\'('\n")
    )
    assert scan("x = '''abc\n").string_start == 4
    assert scan("x = 1  # c").in_comment
    assert scan("x = 1 + \\\n  2\n").stmt_start == len("x = 1 + \\\n  2\n")
    assert scan("x = 1 + \\\n  2").stmt_start == 0
    assert scan("x = 'abc\ny = 1").string_start is None  # one-line strings end at the line break
    assert scan("a)").unmatched_closers == 1
