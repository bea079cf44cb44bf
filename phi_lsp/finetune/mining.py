"""Exercises from source files: every function or method with a docstring.

The prompt is exactly what `phi_lsp.bodygen.stubs` builds for a stub at inference time (the file's
imports, the enclosing class headers for a method, decorators, signature and docstring, then a
newline), so training and serving see the same text. The completion is the body after the
docstring, at its indentation in the file, ending with a newline.

User exercise files: JSONL lines `{"prompt": ..., "completion": ...}`, and `.py` files whose
docstring functions are all exercises.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from phi_lsp.bodygen.stubs import is_docstring, make_stub
from phi_lsp.finetune.exercise import Exercise
from phi_lsp.finetune.filters import is_trivial_body
from phi_lsp.lines import lsp_lines

USER_SOURCE = "exercises"


Func = ast.FunctionDef | ast.AsyncFunctionDef


def mine_source(text: str, source: str, path: str, kind: str = "mined") -> list[Exercise]:
    """Every docstring function in `text`, in file order. Raises SyntaxError."""
    tree = ast.parse(text)
    lines = list(lsp_lines(text))
    found: list[tuple[Func, list[ast.ClassDef], list[str], bool]] = []

    def visit(node: ast.AST, classes: list[ast.ClassDef], names: list[str], nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, Func):
                if child.body and is_docstring(child.body[0]):
                    found.append((child, classes, [*names, child.name], nested))
                visit(child, [], [*names, child.name], True)
            elif isinstance(child, ast.ClassDef):
                visit(child, [*classes, child], [*names, child.name], nested)
            else:
                visit(child, classes, names, nested)

    visit(tree, [], [], False)
    exercises = []
    for func, classes, names, nested in found:
        stub = make_stub(func, classes, tree, lines)
        doc_end = (func.body[0].end_lineno or func.body[0].lineno) - 1
        rest = func.body[1:]
        if rest and rest[0].lineno - 1 <= doc_end:
            continue  # code on the docstring's line: no clean prompt / body boundary
        last = (func.body[-1].end_lineno or func.body[-1].lineno) if rest else doc_end + 1
        completion = "".join(lines[doc_end + 1 : last]) if rest else ""
        if completion and not completion.endswith("\n"):
            completion += "\n"
        qualname = ".".join(names)
        exercises.append(
            Exercise(
                id=f"{source}/{path}:{func.lineno}:{qualname}",
                source=source,
                path=path,
                unit=f"{source}/{path}",
                kind=kind,
                name=qualname,
                line=func.lineno,
                prompt=stub.prompt,
                completion=completion,
                imports=stub.imports,
                classes=stub.classes,
                head=stub.head,
                def_indent=stub.def_indent,
                body_indent=stub.body_indent,
                docstring=stub.docstring,
                returns_value=stub.returns_value,
                nested=nested,
                trivial=is_trivial_body(rest),
            )
        )
    return exercises


@dataclass
class UserExercises:
    exercises: list[Exercise]
    files: list[str]
    bad_lines: int = 0  # JSONL lines that are not {"prompt": str, "completion": str}
    unparsable_files: int = 0


def load_user_exercises(paths: Iterable[Path]) -> UserExercises:
    """Exercises the user wrote: JSONL `{"prompt", "completion"}` lines and `.py` files."""
    result = UserExercises([], [])
    for path in paths:
        path = Path(path)
        label = path.name
        result.files.append(str(path))
        if path.suffix == ".py":
            try:
                found = mine_source(path.read_text(encoding="utf-8"), USER_SOURCE, label, "user")
            except (SyntaxError, UnicodeDecodeError, ValueError):
                result.unparsable_files += 1
                continue
            result.exercises.extend(found)
            continue
        for number, raw in enumerate(lsp_lines(path.read_text(encoding="utf-8")), 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError:
                result.bad_lines += 1
                continue
            prompt, completion = (
                (row.get("prompt"), row.get("completion"))
                if isinstance(row, dict)
                else (None, None)
            )
            if not isinstance(prompt, str) or not isinstance(completion, str) or not completion:
                result.bad_lines += 1
                continue
            result.exercises.append(
                Exercise(
                    id=f"{USER_SOURCE}/{label}:{number}",
                    source=USER_SOURCE,
                    path=label,
                    unit=f"{USER_SOURCE}/{label}#{number}",
                    kind="user",
                    name=str(row.get("name") or f"line{number}"),
                    line=number,
                    prompt=prompt,
                    completion=completion,
                )
            )
    return result
