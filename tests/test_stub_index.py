"""Code actions read the stubs' line spans, computed once per document version."""

from __future__ import annotations

import pytest

from phi_lsp.bodygen.stubs import find_stub
from phi_lsp.lsp.stub_index import StubIndex

SOURCES = {
    "module": '''import os


@decorator
def add(a, b):
    """Return the sum of a and b.

    >>> add(2, 3)
    5
    """
    pass


def done(x):
    """Already written."""
    return x


class Stack:
    """A stack."""

    def push(self, item):
        """Push item."""
        ...

    async def pop(self):
        \'\'\'Pop.\'\'\'
        raise NotImplementedError


def outer():
    def inner():
        "Inner stub."
    return inner
''',
    "syntax error": 'def f(x):\n    """Doc."""\n    return x +\n',
    "no def": "x = 1\ny = 'two'\n",
    "carriage returns": 'def f(x):\r    """Doc."""\r    pass\r\rdef g():\r    return 1\r',
}


@pytest.mark.parametrize("name", SOURCES)
def test_stub_at_agrees_with_find_stub_on_every_line(name: str) -> None:
    source = SOURCES[name]
    index = StubIndex()
    lines = len(source.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    for line in range(lines + 1):
        assert index.stub_at("file:///a.py", 1, source, line) == (
            find_stub(source, line) is not None
        ), f"line {line}"


def test_one_parse_per_document_version() -> None:
    index = StubIndex()
    source = SOURCES["module"]
    hits = [index.stub_at("file:///a.py", 1, source, line) for line in range(40)]
    assert index.parses == 1 and sum(hits) > 0
    # The body was written: version 2 has no stub at `add` any more.
    filled = source.replace('    """\n    pass\n', '    """\n    return a + b\n', 1)
    assert not index.stub_at("file:///a.py", 2, filled, 5)
    assert index.parses == 2
    assert index.stub_at("file:///a.py", 2, filled, 22)  # push() is still one
    assert index.parses == 2
    # Without a `def` line there is nothing to parse at all.
    assert not index.stub_at("file:///b.py", 1, SOURCES["no def"], 0)
    assert index.parses == 2
    index.forget("file:///a.py")
    index.stub_at("file:///a.py", 2, filled, 22)
    assert index.parses == 3
