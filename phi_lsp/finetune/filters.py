"""Textbook-quality rules for mined exercises. Each rejection names one rule, counted in the
report; the first rule that applies wins, in the order of `RULES`.

User exercises (files the user passed with `--exercises`) are their choice: only the empty-body
rule applies to them. Usage exercises (`--from-usage`: an accepted suggestion as it stands
now) are not function bodies: the rules for any text apply to them (empty, too long, a test
file, non-ASCII, binary), not the function-shape ones (nested, too short, docstring). The
base model's loss rule needs the model and lives in `train` (`loss_outliers`).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from phi_lsp.finetune.exercise import Exercise

RULES = (
    "nested_function",
    "test_function",
    "trivial_body",
    "body_too_short",
    "body_too_long",
    "docstring_uninformative",
    "non_ascii",
    "binary_like",
)
# Words that say nothing about what a function does beyond its name.
FILLER_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "of",
        "to",
        "for",
        "and",
        "or",
        "is",
        "it",
        "its",
        "in",
        "on",
        "by",
        "with",
        "from",
        "as",
        "be",
        "function",
        "method",
        "helper",
        "returns",
        "return",
        "get",
        "gets",
        "set",
        "sets",
        "todo",
        "fixme",
        "xxx",
    ]
)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
TEST_DIRS = frozenset({"test", "tests", "testing"})


@dataclass(frozen=True)
class FilterConfig:
    min_body_lines: int = 2
    max_body_lines: int = 100
    max_body_chars: int = 6000
    min_doc_words: int = 3
    keep_tests: bool = False
    max_non_ascii: float = 0.1


def rejection(ex: Exercise, config: FilterConfig) -> str | None:
    """The first rule `ex` breaks, or None when it is a good exercise."""
    if ex.kind == "user":
        return "trivial_body" if not ex.completion.strip() else None
    if ex.kind == "usage":
        return usage_rejection(ex, config)
    if ex.nested:
        return "nested_function"
    if not config.keep_tests and is_test(ex.path, ex.name):
        return "test_function"
    if ex.trivial:
        return "trivial_body"
    lines = body_lines(ex.completion)
    if lines < config.min_body_lines:
        return "body_too_short"
    if lines > config.max_body_lines or len(ex.completion) > config.max_body_chars:
        return "body_too_long"
    if not informative_docstring(ex.docstring, ex.name, config.min_doc_words):
        return "docstring_uninformative"
    text = ex.docstring + ex.completion
    if text and sum(not c.isascii() for c in text) / len(text) > config.max_non_ascii:
        return "non_ascii"
    if _CONTROL.search(ex.prompt + ex.completion):
        return "binary_like"
    return None


def usage_rejection(ex: Exercise, config: FilterConfig) -> str | None:
    """The rules that apply to any accepted text."""
    if not ex.completion.strip():
        return "trivial_body"
    if not config.keep_tests and is_test(ex.path, ""):
        return "test_function"
    if (
        body_lines(ex.completion) > config.max_body_lines
        or len(ex.completion) > config.max_body_chars
    ):
        return "body_too_long"
    if sum(not c.isascii() for c in ex.completion) / len(ex.completion) > config.max_non_ascii:
        return "non_ascii"
    if _CONTROL.search(ex.prompt + ex.completion):
        return "binary_like"
    return None


def body_lines(body: str) -> int:
    """Lines with code (not blank, not only a comment)."""
    return sum(1 for line in body.splitlines() if line.strip() and not line.strip().startswith("#"))


def is_test(path: str, qualname: str) -> bool:
    """A test: test_*.py / *_test.py / conftest.py, a tests/ folder, test* names, Test* classes."""
    parts = path.split("/")
    name = parts[-1]
    if name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py":
        return True
    if any(part in TEST_DIRS for part in parts[:-1]):
        return True
    *owners, func = qualname.split(".")
    return func.startswith("test") or any(o.startswith("Test") for o in owners)


def split_words(name: str) -> set[str]:
    """snake_case and CamelCase words of an identifier, lowercased."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).replace("_", " ")
    return {w.lower() for w in spaced.split() if w}


def informative_docstring(docstring: str, qualname: str, min_words: int) -> bool:
    """At least `min_words` words, and some word beyond the name and filler words."""
    words = [w.lower() for w in _WORD.findall(docstring)]
    if len(words) < min_words:
        return False
    known = FILLER_WORDS | split_words(qualname.rpartition(".")[2])
    return any(w not in known for w in words)


def is_trivial_body(statements: list[ast.stmt]) -> bool:
    """Nothing to learn: no statements, a single placeholder (pass, ..., raise
    NotImplementedError), returning a constant / name / attribute, or a super() call."""
    if not statements:
        return True
    if len(statements) > 1:
        return False
    stmt = statements[0]
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Raise):
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    value: ast.expr | None
    if isinstance(stmt, ast.Return):
        value = stmt.value
        if value is None or isinstance(value, ast.Constant | ast.Name | ast.Attribute):
            return True
    elif isinstance(stmt, ast.Expr):
        value = stmt.value
        if isinstance(value, ast.Constant):
            return True
    else:
        return False
    return isinstance(value, ast.Call) and _calls_super(value)


def _calls_super(call: ast.Call) -> bool:
    """`super().name(...)` or `super(Cls, self).name(...)`."""
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, ast.Name)
        and func.value.func.id == "super"
    )
