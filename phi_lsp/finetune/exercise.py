"""One training exercise: a function's prompt (context, signature, docstring) and its body."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from phi_lsp.bodygen.stubs import Stub

DEDUPE_PROMPT_LINES = 3


@dataclass(frozen=True)
class Exercise:
    """One training example. `unit` is what the split keeps together (the file)."""

    id: str
    source: str  # repository label, or "exercises" for user files
    path: str  # file, relative to its repository
    unit: str  # split unit: source/path (JSONL lines are units of their own)
    kind: str  # "mined", "user" or "usage" (an accepted suggestion from the usage journal)
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

    @property
    def dedupe_code(self) -> str:
        """What duplicates are judged on. A usage prompt is the whole document before the
        cursor, shared by every suggestion accepted in that file: only its last lines count."""
        if self.kind != "usage":
            return self.code
        return "\n".join(self.prompt.split("\n")[-DEDUPE_PROMPT_LINES:]) + self.completion
