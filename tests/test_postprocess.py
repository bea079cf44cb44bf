"""Golden cases for post-processing: a small file with the cursor at "█", the raw model output
that continues the text before the cursor, and the text that should be inserted.

Each case names the rule it exercises; `test_every_rule_has_cases` keeps the table honest, and
`test_is_complete_never_changes_the_result` checks `is_complete` against every golden case.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from phi_lsp.completion.context import CursorContext, cursor_context
from phi_lsp.completion.postprocess import (
    cut_repetition,
    drop_line_suffix_overlap,
    drop_suffix_lines,
    ensure_tokenizes,
    first_line,
    is_complete,
    limit_block,
    normalise,
    postprocess,
    strip_whitespace,
)

CURSOR = "█"
RULES = {
    "normalise",
    "first_line",
    "limit_block",
    "cut_repetition",
    "drop_suffix_lines",
    "drop_line_suffix_overlap",
    "strip_whitespace",
    "ensure_tokenizes",
}


def ctx_of(marked: str) -> CursorContext:
    """The cursor context of `marked`, a file with the cursor written as CURSOR."""
    assert marked.count(CURSOR) == 1
    return cursor_context(marked.replace(CURSOR, ""), marked.index(CURSOR))


@dataclass(frozen=True)
class Case:
    name: str
    rule: str
    file: str
    completion: str
    expected: str


CASES = [
    # 1. normalise
    Case("crlf_line", "normalise", "x = █\r\n", "1\r\ny = 2\r\n", "1"),
    Case(
        "crlf_block",
        "normalise",
        "def f():\r\n    █\r\n",
        "a = 1\r\n    return a\r\n\r\ndef g():\r\n",
        "a = 1\n    return a",
    ),
    Case("lone_cr", "normalise", "def f():\n    █", "a = 1\r    b = 2\r", "a = 1\n    b = 2"),
    # 2. line mode
    Case(
        "finish_the_line",
        "first_line",
        "def add(a, b):\n    return a█\n",
        " + b\n\ndef sub(a, b):\n    return a - b\n",
        " + b",
    ),
    Case("newline_first_is_nothing", "first_line", "total = compute(█", "\n    a, b)\n", ""),
    Case("unterminated_line_kept", "first_line", "for i in range(█", "10):", "10):"),
    # 3. block mode
    Case(
        "dedent_ends_block",
        "limit_block",
        "def f(x):\n    █\n",
        "y = x + 1\n    return y\n\ndef g():\n    pass\n",
        "y = x + 1\n    return y",
    ),
    Case(
        "body_after_colon",
        "limit_block",
        "def double(x):█\n",
        "\n    return x * 2\n\n\nprint(double(2))\n",
        "\n    return x * 2",
    ),
    Case(
        "empty_line_under_opener",
        "limit_block",
        "def double(x):\n█",
        "    return x * 2\n\n\nprint(double(2))\n",
        "    return x * 2",
    ),
    Case("no_body_after_colon", "limit_block", "if ready:█\n", "\nprint('done')\n", ""),
    Case(
        "else_of_enclosing_if_ends_block",
        "limit_block",
        "def f(x):\n    if x > 0:\n        █\n",
        "y = 1\n    else:\n        y = 2\n    return y\n",
        "y = 1",
    ),
    Case(
        "one_top_level_definition",
        "limit_block",
        "import os\n█",
        "import sys\n\n\ndef main():\n    pass\n\n\nif __name__ == '__main__':\n    main()\n",
        "import sys\n\n\ndef main():\n    pass",
    ),
    Case(
        "decorators_belong_to_their_class",
        "limit_block",
        "import os\n\n█",
        "@dataclass\n@total_ordering\nclass A:\n    x: int\n\n\n@dataclass\nclass B:\n    y: int\n",
        "@dataclass\n@total_ordering\nclass A:\n    x: int",
    ),
    Case(
        "one_method_per_suggestion",
        "limit_block",
        "class A:\n    def a(self):\n        return 1\n\n    █",
        "def b(self):\n        return 2\n\n    def c(self):\n        return 3\n",
        "def b(self):\n        return 2",
    ),
    Case(
        "blank_column_0_line_may_start_a_definition",
        "limit_block",
        "def f():\n    return 1\n\n█",
        "\ndef g():\n    return 2\n\n\ndef h():\n    return 3\n",
        "\ndef g():\n    return 2",
    ),
    Case(
        "tabs",
        "limit_block",
        "def f(x):\n\tif x:█\n",
        "\n\t\treturn 1\n\treturn 2\n",
        "\n\t\treturn 1",
    ),
    Case(
        "two_space_file",
        "limit_block",
        "class A:\n  def f(self):\n    pass\n  def g(self):█",
        "\n    return 1\n  def h(self):\n    return 2\n",
        "\n    return 1",
    ),
    Case(
        "multi_line_signature",
        "limit_block",
        "def f(a,\n      b):█",
        "\n    return a + b\n\nx = f(1, 2)\n",
        "\n    return a + b",
    ),
    Case(
        "closing_bracket_line_ends_items",
        "limit_block",
        "data = [\n    █\n]\n",
        "1,\n    2,\n    3,\n]\n",
        "1,\n    2,\n    3,",
    ),
    # 4. repetition
    Case(
        "looping_line_kept_once",
        "cut_repetition",
        "def f():\n    █",
        "x = 1\n    x = 1\n    x = 1\n    x = 1\n",
        "x = 1",
    ),
    Case(
        "looping_with_blank_lines",
        "cut_repetition",
        "items = []\n█",
        "items.append(1)\n\nitems.append(1)\nitems.append(1)\nprint(items)\n",
        "items.append(1)",
    ),
    Case(
        "nested_closers_are_not_a_loop",
        "cut_repetition",
        "def f():\n    █",
        "x = g(\n        h(\n            1\n        )\n    )\n    return x\n",
        "x = g(\n        h(\n            1\n        )\n    )\n    return x",
    ),
    Case(
        "trailing_lines_already_below",
        "drop_suffix_lines",
        "def f(x):\n    █\n    return y\n",
        "y = x + 1\n    return y\n",
        "y = x + 1",
    ),
    Case(
        "everything_already_below",
        "drop_suffix_lines",
        "def f(x):\n    █\n\n    return x\n",
        "return x\n",
        "",
    ),
    Case(
        "same_text_other_indentation_kept",
        "drop_suffix_lines",
        "def f(x):\n    if x:\n        █\n    return x\n",
        "x += 1\n        return x\n",
        "x += 1\n        return x",
    ),
    Case("closing_paren_after_cursor", "drop_line_suffix_overlap", "print(█)", "foo())\n", "foo()"),
    Case("own_paren_kept", "drop_line_suffix_overlap", "print(█)", "foo()\n", "foo()"),
    Case("closing_quote", "drop_line_suffix_overlap", 'print("█")', 'hello")\n', "hello"),
    Case("whole_line_suffix", "drop_line_suffix_overlap", "if check(█):", "x):\n", "x"),
    Case("part_of_line_suffix", "drop_line_suffix_overlap", "if check(█):", "x)\n", "x"),
    Case(
        "colon_after_cursor",
        "drop_line_suffix_overlap",
        "def area(r)█:",
        " -> float:\n",
        " -> float",
    ),
    Case(
        "block_ending_in_closer",
        "drop_line_suffix_overlap",
        "total = sum(\n    █)\n",
        "a,\n    b)\n",
        "a,\n    b",
    ),
    # 5. whitespace
    Case("trailing_spaces", "strip_whitespace", "x = █", "1   \n", "1"),
    Case("whitespace_only", "strip_whitespace", "def f():\n    █", "   \n\n  ", ""),
    Case(
        "trailing_spaces_per_line",
        "strip_whitespace",
        "def f():\n    █",
        "a = 1  \n    b = 2\t\n\n\n",
        "a = 1\n    b = 2",
    ),
    # 6. tokenize
    Case(
        "unterminated_docstring_dropped",
        "ensure_tokenizes",
        "def f():\n    █",
        'x = 1\n    """Start of a string\n    more text',
        "x = 1",
    ),
    Case(
        "open_bracket_dropped",
        "ensure_tokenizes",
        "def f():\n    █",
        "x = 1\n    y = foo(\n        1,\n",
        "x = 1",
    ),
    Case(
        "nothing_left",
        "ensure_tokenizes",
        "def f():\n    █",
        "y = foo(\n        1,\n        2,",
        "",
    ),
    Case(
        "docstring_open_in_prefix_is_fine",
        "ensure_tokenizes",
        'def f(x):\n    """\n    █',
        "Double x.\n\n    Args:\n        x: a number\n",
        "Double x.\n\n    Args:\n        x: a number",
    ),
    Case(
        "bad_dedent_dropped",
        "ensure_tokenizes",
        "def f():\n    x = 1\n█",
        "    if x:\n        y = 1\n      z = 2\n",
        "    if x:\n        y = 1",
    ),
    Case(
        "unterminated_one_line_string",
        "ensure_tokenizes",
        "def f():\n    █",
        "x = 1\n    y = 'abc\n",
        "x = 1",
    ),
    Case("stray_closer", "ensure_tokenizes", "def f():\n    █", "x = 1\n    y = 2)\n", "x = 1"),
    Case("single_line_not_checked", "ensure_tokenizes", "x = foo(█", "a, [1, 2\n", "a, [1, 2"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Case) -> None:
    assert postprocess(case.completion, ctx_of(case.file)) == case.expected


def test_every_rule_has_cases() -> None:
    assert len(CASES) >= 25
    assert {c.rule for c in CASES} == RULES
    assert len({c.name for c in CASES}) == len(CASES)


def _prefixes(text: str) -> list[str]:
    return [text[:n] for n in range(len(text) + 1)]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_is_complete_never_changes_the_result(case: Case) -> None:
    """Every prefix P of completion C with is_complete(P) has postprocess(P) == postprocess(C)."""
    ctx = ctx_of(case.file)
    final = postprocess(case.completion, ctx)
    for partial in _prefixes(case.completion):
        if is_complete(partial, ctx):
            assert postprocess(partial, ctx) == final, repr(partial)


POOL = [
    "x = 1",
    "    x = 1",
    "        return x",
    "    return x",
    "",
    "def g():",
    "@decorator",
    "class C:",
    "if __name__ == '__main__':",
    "    y = foo(",
    "    )",
    ")",
    '    """doc',
    '"""',
    "\tz = 2",
    "    else:",
    "    pass",
]


def test_is_complete_property_on_random_completions() -> None:
    """The same property on random line soups, CRLF included, at every golden cursor."""
    rng = random.Random(1234)
    contexts = [ctx_of(c.file) for c in CASES]
    for _ in range(300):
        ctx = rng.choice(contexts)
        lines = [rng.choice(POOL) for _ in range(rng.randint(1, 8))]
        completion = rng.choice(["\n", "\r\n"]).join(lines) + rng.choice(["", "\n", "\r\n"])
        final = postprocess(completion, ctx)
        for partial in _prefixes(completion):
            if is_complete(partial, ctx):
                assert postprocess(partial, ctx) == final, (completion, partial)


@pytest.mark.parametrize(
    ("file", "partial", "done"),
    [
        ("x = █", "1 + 2", False),
        ("x = █", "1 + 2\n", True),
        ("x = █", "1 + 2\r", True),
        ("def f(x):\n    █", "y = x + 1\n    return y\n", False),
        ("def f(x):\n    █", "y = x + 1\n    return y\n\n", False),
        ("def f(x):\n    █", "y = x + 1\n    return y\n\nd", True),  # dedent: final at once
        ("import os\n█", "import sys\n\ndef main():\n    pass\n\nde", False),
        ("import os\n█", "import sys\n\ndef main():\n    pass\n\ndef ", True),
        ("def f():\n    █", "x = 1\n    x = 1\n    x = 1", False),
        ("def f():\n    █", "x = 1\n    x = 1\n    x = 1\n", True),
        ("def f():█", "\n    return 1\nprint", True),
    ],
)
def test_is_complete_stops_early(file: str, partial: str, done: bool) -> None:
    assert is_complete(partial, ctx_of(file)) is done


def test_rules_on_plain_strings() -> None:
    """The rule functions compose: each is usable (and tested) on its own."""
    ctx = ctx_of("def f(x):\n    █\n    return x\n")
    assert normalise("a\r\nb\rc") == "a\nb\nc"
    assert first_line("a\nb") == "a"
    assert limit_block("y = 1\nz = 2", ctx) == "y = 1"
    assert cut_repetition("a\n    a\n    a\n    b", ctx) == "a"
    assert drop_suffix_lines("y = 1\n    return x", ctx) == "y = 1"
    assert drop_line_suffix_overlap("foo())", ctx_of("print(█)")) == "foo()"
    assert strip_whitespace("a  \n  \n") == "a"
    assert ensure_tokenizes("y = (\n    1", ctx) == ""
