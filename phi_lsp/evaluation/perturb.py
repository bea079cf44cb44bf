"""Semantics-preserving perturbations of HumanEval prompts, to see how much of a score is
memorised surface form.

Each perturbation is `f(prompt, entry_point) -> prompt` and keeps the prompt valid Python with
the same meaning. Two also change how the body must be written: `tabs` (the body must be
indented with tabs too) and `rename_params` (the body must use the new names), so
`adapt_solution` rewrites a reference solution the same way; the tests are never touched.
A perturbation that does not apply to a prompt returns it unchanged; `adapt_solution` raises
`NotApplicable` where a reference solution cannot follow (a new name already used in it).
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import tokenize
from collections.abc import Callable

from phi_lsp.lines import lsp_lines

Perturbation = Callable[[str, str], str]


class NotApplicable(ValueError):
    """The perturbation cannot be applied consistently to this solution."""


# --- helpers ---------------------------------------------------------------------------------


def _entry_function(tree: ast.Module, entry_point: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """The last top-level definition of `entry_point` (HumanEval puts helpers before it)."""
    found = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point
    ]
    if not found:
        raise NotApplicable(f"no function {entry_point} in the prompt")
    return found[-1]


def _docstring_lines(source: str, entry_point: str) -> tuple[int, int] | None:
    """0-based [first, last] line of the entry point's docstring, if it has one."""
    func = _entry_function(ast.parse(source), entry_point)
    first = func.body[0] if func.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and first.end_lineno is not None
    ):
        return first.lineno - 1, first.end_lineno - 1
    return None


def _string_lines(source: str) -> set[int]:
    """0-based lines that continue a multi-line string that is not a docstring.

    Their leading whitespace and blankness are part of a value, so the layout perturbations
    leave them alone (docstrings are only read by people, and by the model).
    """
    protected: set[int] = set()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    skip = {tokenize.NL, tokenize.COMMENT}
    significant = [t for t in tokens if t.type not in skip]
    for i, tok in enumerate(significant):
        if tok.type != tokenize.STRING or tok.start[0] == tok.end[0]:
            continue
        before = significant[i - 1].type if i > 0 else tokenize.NEWLINE
        after = significant[i + 1].type if i + 1 < len(significant) else tokenize.NEWLINE
        is_docstring = before in (tokenize.INDENT, tokenize.NEWLINE, tokenize.DEDENT) and after in (
            tokenize.NEWLINE,
            tokenize.ENDMARKER,
        )
        if not is_docstring:
            protected.update(range(tok.start[0], tok.end[0]))  # 1-based start+1 .. end
    return protected


# --- layout ----------------------------------------------------------------------------------


def extra_blank_lines(prompt: str, entry_point: str) -> str:
    """Every blank line doubled, and one more between the signature and the docstring."""
    doc = _docstring_lines(prompt, entry_point)
    protected = _string_lines(prompt)
    lines = list(lsp_lines(prompt))
    last_text = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    out: list[str] = []
    for i, line in enumerate(lines):
        if doc is not None and i == doc[0]:
            out.append("\n")
        out.append(line)
        if not line.strip() and i not in protected and i < last_text:
            out.append("\n")
    return "".join(out)


def no_blank_lines(prompt: str, entry_point: str) -> str:
    """All blank lines removed (between imports and definitions, and inside the docstring)."""
    protected = _string_lines(prompt)
    lines = list(lsp_lines(prompt))
    return "".join(line for i, line in enumerate(lines) if line.strip() or i in protected)


def _block_levels(source: str) -> dict[int, int]:
    """0-based line -> block depth, for the lines that start a logical line."""
    levels: dict[int, int] = {}
    depth = 0
    at_start = True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.NEWLINE:
            at_start = True
        elif tok.type not in (tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER) and at_start:
            levels[tok.start[0] - 1] = depth
            at_start = False
    return levels


def tabify(source: str) -> str:
    """One tab per block level; other leading whitespace: a tab per 4 spaces.

    Block indentation follows the block structure (not the width), so code indented by 2 or 3
    spaces gets consistent tabs too; the whitespace of continuation lines, comments and
    docstrings does not matter to Python.
    """
    protected = _string_lines(source)
    levels = _block_levels(source)
    out: list[str] = []
    for i, line in enumerate(lsp_lines(source)):
        stripped = line.lstrip(" \t")
        width = len(line) - len(stripped)
        if i in protected or not stripped.strip():
            out.append(line)
        elif i in levels:
            out.append("\t" * levels[i] + stripped)
        else:
            out.append("\t" * (width // 4) + " " * (width % 4) + stripped)
    return "".join(out)


def tabs(prompt: str, entry_point: str) -> str:
    """Tabs instead of 4-space indentation."""
    return tabify(prompt)


# --- renamed parameters ----------------------------------------------------------------------

# Natural alternatives for common parameter names; the rest get a `_value` suffix.
SYNONYMS = {
    "numbers": "values",
    "number": "value",
    "nums": "values",
    "num": "number",
    "string": "text",
    "strings": "texts",
    "text": "string",
    "s": "text",
    "txt": "text",
    "lst": "items",
    "l": "seq",
    "arr": "array",
    "array": "arr",
    "n": "num",
    "m": "other",
    "k": "count",
    "x": "value",
    "y": "other",
    "a": "first",
    "b": "second",
    "c": "third",
    "h": "height",
    "grid": "matrix",
    "word": "term",
    "words": "terms",
    "sentence": "phrase",
    "date": "day_string",
    "planet1": "first_planet",
    "planet2": "second_planet",
    "lst1": "first_list",
    "lst2": "second_list",
}
# Parameter names that are also English words: renamed in the code but not in the prose.
ENGLISH_WORDS = frozenset({"a", "an", "i", "in", "is", "it", "or", "and", "to", "of", "on", "at"})


def _names(source: str) -> set[str]:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return set()
    return {t.string for t in tokens if t.type == tokenize.NAME}


def rename_map(prompt: str, entry_point: str) -> dict[str, str]:
    """old -> new name for each parameter of the entry point whose new name is free."""
    func = _entry_function(ast.parse(prompt), entry_point)
    args = func.args
    params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    params += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    taken = _names(prompt)
    mapping: dict[str, str] = {}
    for old in params:
        new = SYNONYMS.get(old, f"{old}_value")
        if new in taken or new in mapping.values() or keyword.iskeyword(new):
            new = f"{old}_value"
        if new in taken or new in mapping.values():
            continue
        mapping[old] = new
    return mapping


def _line_starts(source: str) -> list[int]:
    starts = [0]
    for line in lsp_lines(source):
        starts.append(starts[-1] + len(line))
    return starts


def _rename(source: str, entry_point: str, mapping: dict[str, str]) -> str:
    """Rename parameters in the entry point's signature, body and docstring prose."""
    if not mapping:
        return source
    func = _entry_function(ast.parse(source), entry_point)
    lines = list(lsp_lines(source))
    starts = _line_starts(source)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(func):
        if isinstance(node, ast.keyword) and node.arg in mapping:
            raise NotApplicable(f"{node.arg} is also a keyword argument name")
        if isinstance(node, ast.Global | ast.Nonlocal) and set(node.names) & set(mapping):
            raise NotApplicable("a parameter name is declared global/nonlocal")
        if isinstance(node, ast.arg):
            name = node.arg
        elif isinstance(node, ast.Name):
            name = node.id
        else:
            continue
        if name not in mapping:
            continue
        line = lines[node.lineno - 1]
        # ast columns are UTF-8 byte offsets; the edit needs character offsets.
        col = len(line.encode("utf-8")[: node.col_offset].decode("utf-8", "replace"))
        at = starts[node.lineno - 1] + col
        if source[at : at + len(name)] != name:
            raise NotApplicable(f"cannot locate {name} at line {node.lineno}")
        edits.append((at, at + len(name), mapping[name]))
    doc = _docstring_lines(source, entry_point)
    if doc is not None:
        words = {old: new for old, new in mapping.items() if old not in ENGLISH_WORDS}
        if words:
            pattern = re.compile(r"(?<![\w'.])(" + "|".join(map(re.escape, words)) + r")(?![\w'])")
            begin, end = starts[doc[0]], starts[doc[1] + 1]
            for m in pattern.finditer(source, begin, end):
                edits.append((m.start(), m.end(), words[m.group(1)]))
    for begin, end, new in sorted(set(edits), reverse=True):
        source = source[:begin] + new + source[end:]
    return source


def rename_params(prompt: str, entry_point: str) -> str:
    """Parameters renamed in the signature and, as whole words, in the docstring."""
    return _rename(prompt, entry_point, rename_map(prompt, entry_point))


# --- reworded docstring ----------------------------------------------------------------------

# Boilerplate phrases and a same-meaning alternative (applied in one pass, so swaps are safe).
REWORDINGS = {
    "Return ": "Returns ",
    "Returns ": "Return ",
    "Given ": "For ",
    "Write a function": "Implement a function",
    "Create a function": "Write a function",
    "You are given": "You receive",
    "you are given": "you receive",
    "Check if": "Determine whether",
    "check if": "determine whether",
    "Examples:": "For example:",
    "Example:": "For example:",
    "For example:": "Examples:",
    "e.g.": "for example",
    "Note:": "Notice:",
}
_REWORD = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, REWORDINGS)) + r")")


def reword_docstring(prompt: str, entry_point: str) -> str:
    """Boilerplate phrases of the docstring reworded; `>>>` examples and outputs kept as is."""
    doc = _docstring_lines(prompt, entry_point)
    if doc is None:
        return prompt
    lines = list(lsp_lines(prompt))
    in_example = False
    for i in range(doc[0], doc[1] + 1):
        text = lines[i].strip()
        if text.startswith(">>>"):
            in_example = True
            continue
        if in_example and text and not text.startswith('"""'):
            continue  # expected output of the example above
        in_example = False
        lines[i] = _REWORD.sub(lambda m: REWORDINGS[m.group(1)], lines[i])
    return "".join(lines)


PERTURBATIONS: dict[str, Perturbation] = {
    "extra_blank_lines": extra_blank_lines,
    "no_blank_lines": no_blank_lines,
    "tabs": tabs,
    "rename_params": rename_params,
    "reword_docstring": reword_docstring,
}


def adapt_solution(name: str, prompt: str, solution: str, entry_point: str) -> str:
    """Rewrite a body written for `prompt` so it fits `PERTURBATIONS[name](prompt, ...)`."""
    if name not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    if name == "tabs":
        head, whole = tabify(prompt), tabify(prompt + solution)
    elif name == "rename_params":
        mapping = rename_map(prompt, entry_point)
        clashes = set(mapping.values()) & _names(prompt + solution)
        if clashes:
            raise NotApplicable(f"new name(s) {', '.join(sorted(clashes))} used in the solution")
        head, whole = (
            _rename(prompt, entry_point, mapping),
            _rename(prompt + solution, entry_point, mapping),
        )
    else:
        return solution
    if not whole.startswith(head):
        raise NotApplicable("the prompt and the solution cannot be rewritten separately")
    return whole[len(head) :]
