"""Docstring → function body: find the stub, build the CodeExercises prompt, judge candidates.

phi-1 was trained on "CodeExercises": a signature and a docstring in, the body out. A stub is a
function whose body is only a docstring, optionally followed by `pass`, `...` or
`raise NotImplementedError`. Everything here is pure: text in, text out.
"""

from __future__ import annotations

import ast
import doctest
import textwrap
import threading
from dataclasses import dataclass

from phi_lsp.lines import lsp_lines

# CPython 3.11 builds ast objects with interpreter-wide recursion bookkeeping: two threads
# parsing at once can fail with "AST constructor recursion depth mismatch" (python/cpython
# gh-106905). The server parses on its event loop (code actions) and on the engine worker
# (judging candidates), so every parse here takes this lock.
_PARSE_LOCK = threading.Lock()


def parse(source: str) -> ast.Module:
    with _PARSE_LOCK:
        return ast.parse(source)


@dataclass(frozen=True)
class Stub:
    """A function to write. Lines are 0-based; columns are str indices into the line."""

    name: str
    prompt: str  # imports + enclosing class header + decorators, signature and docstring
    imports: str  # the file's top-level import statements
    classes: str  # the enclosing class headers (`class X(Base):`), for a method
    head: str  # decorators, signature and docstring, as in the file
    def_indent: str  # indentation of the `def` line
    body_indent: str  # indentation of the docstring, which the body shares
    docstring: str
    # The text to replace: from the end of the docstring to the end of the stub statements.
    start: tuple[int, int]
    end: tuple[int, int]
    returns_value: bool  # the signature promises a value (a return annotation other than None)
    is_method: bool


def find_stub(source: str, line: int) -> Stub | None:
    """The innermost stub function containing `line`, or None."""
    try:
        tree = parse(source)
    except SyntaxError:
        return None
    lines = list(lsp_lines(source))
    best: tuple[ast.FunctionDef | ast.AsyncFunctionDef, list[ast.ClassDef]] | None = None

    def visit(node: ast.AST, classes: list[ast.ClassDef]) -> None:
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([d.lineno for d in child.decorator_list] + [child.lineno]) - 1
                if first <= line <= (child.end_lineno or child.lineno) - 1:
                    best = (child, classes)
                visit(child, [])
            elif isinstance(child, ast.ClassDef):
                visit(child, [*classes, child])
            else:
                visit(child, classes)

    visit(tree, [])
    if best is None:
        return None
    func, classes = best
    if not _is_stub(func):
        return None
    return make_stub(func, classes, tree, lines)


def replace_body(source: str, stub: Stub, body: str) -> str:
    """`source` with the stub's placeholder (from the docstring's end) replaced by `body`."""
    lines = list(lsp_lines(source))
    (sl, sc), (el, ec) = stub.start, stub.end
    start = sum(len(x) for x in lines[:sl]) + sc
    end = sum(len(x) for x in lines[:el]) + ec
    return source[:start] + "\n" + body + source[end:]


def _is_stub(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    body = func.body
    if not body or not is_docstring(body[0]):
        return False
    return all(_is_placeholder(stmt) for stmt in body[1:]) and len(body) <= 2


def is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _is_placeholder(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return stmt.value.value is Ellipsis
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _col(lines: list[str], lineno: int, byte_col: int) -> int:
    """ast columns count UTF-8 bytes; convert to a str index."""
    return len(lines[lineno - 1].encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def make_stub(
    func: ast.FunctionDef | ast.AsyncFunctionDef,
    classes: list[ast.ClassDef],
    tree: ast.Module,
    lines: list[str],
) -> Stub:
    doc = func.body[0]
    last = func.body[-1]
    first_line = min([d.lineno for d in func.decorator_list] + [func.lineno]) - 1
    doc_end = (doc.end_lineno or doc.lineno) - 1
    header = "".join(lines[first_line : doc_end + 1])
    header = header[
        : len(header) - len(lines[doc_end]) + _col(lines, doc_end + 1, doc.end_col_offset or 0)
    ]
    imports = "".join(
        "".join(lines[n.lineno - 1 : n.end_lineno])
        for n in tree.body
        if isinstance(n, ast.Import | ast.ImportFrom)
    )
    class_headers = "".join(_class_header(c, lines) for c in classes)
    prompt = (imports + "\n\n" if imports else "") + class_headers + header + "\n"
    def_line = lines[func.lineno - 1]
    doc_line = lines[doc.lineno - 1]
    returns = func.returns
    returns_value = returns is not None and not (
        isinstance(returns, ast.Constant) and returns.value is None
    )
    return Stub(
        name=func.name,
        prompt=prompt,
        imports=imports,
        classes=class_headers,
        head=header,
        def_indent=def_line[: len(def_line) - len(def_line.lstrip())],
        body_indent=doc_line[: len(doc_line) - len(doc_line.lstrip())],
        docstring=ast.get_docstring(func) or "",
        start=(doc_end, _col(lines, doc_end + 1, doc.end_col_offset or 0)),
        end=(
            (last.end_lineno or last.lineno) - 1,
            _col(lines, last.end_lineno or last.lineno, last.end_col_offset or 0),
        ),
        returns_value=returns_value,
        is_method=bool(classes),
    )


def _class_header(cls: ast.ClassDef, lines: list[str]) -> str:
    """The `class ...:` line(s) with decorators, without the class body."""
    first = min([d.lineno for d in cls.decorator_list] + [cls.lineno]) - 1
    body_first = cls.body[0].lineno - 1
    return "".join(lines[first:body_first]).rstrip() + "\n"


def cut_body(completion: str, stub: Stub) -> str:
    """The generated body: up to the first line that leaves the function (dedent to `def`)."""
    kept = []
    for line in completion.replace("\r\n", "\n").split("\n"):
        if line.strip() and _leaves_function(line, stub):
            break
        kept.append(line.rstrip())
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept)


def _leaves_function(line: str, stub: Stub) -> bool:
    return len(line) - len(line.lstrip()) <= len(stub.def_indent)


def body_is_done(completion: str, stub: Stub) -> bool:
    """True once a complete line has left the function: more tokens cannot change the body."""
    text = completion.replace("\r\n", "\n")
    if "\n" not in text:
        return False
    return any(line.strip() and _leaves_function(line, stub) for line in text.split("\n")[:-1])


def check_candidate(body: str, stub: Stub) -> str | None:
    """Why a body cannot be used (it does not parse, or does not fit the signature), or None."""
    if not body.strip():
        return "empty"
    try:
        tree = parse(function_source(stub, body))
    except SyntaxError as exc:
        return f"does not parse: {exc.msg} (line {exc.lineno})"
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    if stub.returns_value and not any(
        isinstance(n, ast.Return)
        and n.value is not None
        or isinstance(n, ast.Yield | ast.YieldFrom | ast.Raise)
        for n in ast.walk(func)
    ):
        return "the signature promises a value but the body returns none"
    return None


def function_source(stub: Stub, body: str) -> str:
    """The function with its enclosing class headers (a method), else dedented to column 0."""
    if stub.classes:
        return stub.classes + stub.head + "\n" + body + "\n"
    return textwrap.dedent(stub.head + "\n" + body + "\n")


def doctest_examples(stub: Stub) -> int:
    """How many doctest examples the docstring holds."""
    return len(doctest.DocTestParser().get_examples(stub.docstring))


def doctest_program(stub: Stub, body: str) -> str:
    """A program that defines the function and prints `DOCTEST passed failed`.

    It runs in the sandbox only. A method is defined inside its class headers, so doctests
    that call it through the class work.
    """
    return (
        f"{stub.imports}\n\n{function_source(stub, body)}\n"
        "import doctest as _doctest\n"
        f"_test = _doctest.DocTestParser().get_doctest({stub.docstring!r}, globals(), "
        f"{stub.name!r}, None, 0)\n"
        "_runner = _doctest.DocTestRunner(verbose=False)\n"
        "_runner.run(_test, out=lambda s: None)\n"
        "print('DOCTEST', _runner.tries - _runner.failures, _runner.failures)\n"
    )


def stub_spans(source: str) -> list[tuple[int, int]]:
    """The (first, last) 0-based lines of every stub in `source`; none if it does not parse.

    `find_stub(source, line)` finds a stub exactly when `line` lies in one of these spans (a
    stub's body holds no function, so the innermost function there is the stub itself).
    """
    try:
        tree = parse(source)
    except SyntaxError:
        return []
    return [
        (
            min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1,
            (node.end_lineno or node.lineno) - 1,
        )
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _is_stub(node)
    ]
