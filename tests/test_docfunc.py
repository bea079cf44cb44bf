"""Finding docstring-only stubs, the CodeExercises prompt, and judging candidate bodies."""

from __future__ import annotations

import pytest

from phi_lsp.bodygen.stubs import (
    body_is_done,
    check_candidate,
    cut_body,
    doctest_examples,
    find_stub,
    function_source,
    replace_body,
)

SOURCE = '''import math
from typing import List


def mean(xs: List[float]) -> float:
    """Arithmetic mean of xs.

    >>> mean([1.0, 3.0])
    2.0
    """


class Circle:
    """A circle."""

    def __init__(self, r: float) -> None:
        self.r = r

    def area(self) -> float:
        """Area of the circle, π·r²."""
        raise NotImplementedError


def done(x):
    """Already written."""
    return x


def ellipsis_stub(x):
    """Returns x. With ünïcode."""  ; ...
'''


def test_function_stub_prompt_has_imports_signature_and_docstring() -> None:
    stub = find_stub(SOURCE, 6)
    assert stub is not None and stub.name == "mean" and not stub.is_method
    assert stub.prompt.startswith("import math\nfrom typing import List\n\n\ndef mean(")
    assert stub.prompt.endswith('    2.0\n    """\n')
    assert stub.returns_value and stub.body_indent == "    " and stub.def_indent == ""
    assert stub.start == stub.end == (9, 7)  # nothing to replace: insert after the docstring
    assert doctest_examples(stub) == 1


def test_method_stub_prompt_has_the_class_header() -> None:
    stub = find_stub(SOURCE, 19)
    assert stub is not None and stub.name == "area" and stub.is_method
    assert "class Circle:\n    def area(self) -> float:" in stub.prompt
    assert "__init__" not in stub.prompt  # only the class header, not its other methods
    assert stub.start == (19, 39) and stub.end == (20, 33)  # docstring end → end of the raise


def test_written_functions_and_lines_outside_functions_are_not_stubs() -> None:
    assert find_stub(SOURCE, 24) is None  # done() has a body
    assert find_stub(SOURCE, 0) is None
    assert find_stub("def broken(:\n", 0) is None


def test_columns_are_string_indices_with_non_ascii_docstrings() -> None:
    stub = find_stub(SOURCE, 28)
    assert stub is not None
    line = SOURCE.splitlines()[stub.start[0]]
    assert line[: stub.start[1]].endswith('ünïcode."""')
    assert line[stub.end[1] :] == ""


def test_cut_body_stops_where_the_function_ends() -> None:
    stub = find_stub(SOURCE, 6)
    assert stub is not None
    raw = "    return sum(xs) / len(xs)\n\n\ndef other():\n    pass\n"
    assert cut_body(raw, stub) == "    return sum(xs) / len(xs)"
    assert body_is_done(raw, stub) and not body_is_done("    return sum(xs)", stub)


@pytest.mark.parametrize(
    "body, reason",
    [
        ("    return sum(xs) / len(xs)", None),
        ("    return sum(xs) /", "does not parse"),
        ("    print(xs)", "promises a value"),
        ("", "empty"),
    ],
)
def test_check_candidate(body: str, reason: str | None) -> None:
    stub = find_stub(SOURCE, 6)
    assert stub is not None
    result = check_candidate(body, stub)
    assert result == reason if reason is None else reason in (result or "")


def test_method_source_keeps_the_class_so_doctests_can_reach_it() -> None:
    stub = find_stub(SOURCE, 19)
    assert stub is not None
    source = function_source(stub, "        return math.pi * self.r ** 2")
    compile(source, "<m>", "exec")
    assert source.startswith("class Circle:\n    def area")


# Characters str.splitlines breaks at that are no line break to Python's ast nor to LSP.
NOT_LINE_BREAKS = ["\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", NOT_LINE_BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_non_lsp_line_break_above_the_stub_does_not_shift_it(char: str) -> None:
    """ast counts lines at \\n, \\r\\n and \\r only, as LSP does; the stub's positions must too."""
    head = 'def mean(xs):\n    """Arithmetic mean of xs."""\n'
    source = f"import math\n# one{char}two\n\n{head}    pass\n"
    stub = find_stub(source, 4)
    assert stub is not None and stub.name == "mean"
    assert stub.head == head.rstrip("\n") and stub.docstring == "Arithmetic mean of xs."
    assert stub.prompt == "import math\n\n\n" + head
    assert stub.start == (4, len('    """Arithmetic mean of xs."""'))
    assert stub.end == (5, len("    pass"))
    assert replace_body(source, stub, "    return sum(xs) / len(xs)") == source.replace(
        "    pass\n", "    return sum(xs) / len(xs)\n"
    )
