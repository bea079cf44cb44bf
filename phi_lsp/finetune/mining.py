"""Exercises from source files: every function or method with a docstring.

The prompt is exactly what `phi_lsp.docfunc` builds for a stub at inference time (the file's
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from phi_lsp.docfunc import Stub, _is_docstring, _make_stub
from phi_lsp.documents import lsp_lines
from phi_lsp.finetune.filters import is_trivial_body

USER_SOURCE = "exercises"


@dataclass(frozen=True)
class Exercise:
    """One training example. `unit` is what the split keeps together (the file)."""

    id: str
    source: str  # repository label, or "exercises" for user files
    path: str  # file, relative to its repository
    unit: str  # split unit: source/path (JSONL lines are units of their own)
    kind: str  # "mined" or "user"
    name: str  # qualified name, e.g. Circle.area
    line: int  # 1-based line of the `def` (JSONL: the line number)
    prompt: str
    completion: str
    # The pieces of the prompt, to rebuild a docfunc.Stub (doctests in the sandbox).
    imports: str = ""
    classes: str = ""
    head: str = ""
    def_indent: str = ""
    body_indent: str = ""
    docstring: str = ""
    returns_value: bool = False
    # Facts the filters use.
    nested: bool = False  # defined inside another function (its context is missing)
    trivial: bool = False  # pass / ... / return an attribute / a super() call

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Exercise:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def stub(self) -> Stub:
        """The docfunc view of this exercise (for doctest programs)."""
        return Stub(
            name=self.name.rpartition(".")[2],
            prompt=self.prompt,
            imports=self.imports,
            classes=self.classes,
            head=self.head,
            def_indent=self.def_indent,
            body_indent=self.body_indent,
            docstring=self.docstring,
            start=(0, 0),
            end=(0, 0),
            returns_value=self.returns_value,
            is_method=bool(self.classes),
        )

    @property
    def code(self) -> str:
        """Signature, docstring and body, without the imports (for dedupe and decontamination)."""
        return (self.head + "\n" + self.completion) if self.head else self.prompt + self.completion


Func = ast.FunctionDef | ast.AsyncFunctionDef


def mine_source(text: str, source: str, path: str, kind: str = "mined") -> list[Exercise]:
    """Every docstring function in `text`, in file order. Raises SyntaxError."""
    tree = ast.parse(text)
    lines = list(lsp_lines(text))
    found: list[tuple[Func, list[ast.ClassDef], list[str], bool]] = []

    def visit(node: ast.AST, classes: list[ast.ClassDef], names: list[str], nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, Func):
                if child.body and _is_docstring(child.body[0]):
                    found.append((child, classes, [*names, child.name], nested))
                visit(child, [], [*names, child.name], True)
            elif isinstance(child, ast.ClassDef):
                visit(child, [*classes, child], [*names, child.name], nested)
            else:
                visit(child, classes, names, nested)

    visit(tree, [], [], False)
    exercises = []
    for func, classes, names, nested in found:
        stub = _make_stub(func, classes, tree, lines)
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
