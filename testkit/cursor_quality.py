"""Suggestion quality at every cursor position, through a real `phi-lsp serve`.

The trained tiny model has memorised LESSONS, so the right answer is known everywhere: cut each
memorised line at every character, make the document the lesson up to there, and ask the server
for ghost text. A cut point is right when the line prefix plus the suggestion's first line gives
back the memorised line, and every further line of the suggestion is the lesson's next line (the
last one may stop early: the token budget ends a block suggestion mid-line). Cut points whose
document starts more than one lesson ("def ") have no single right answer and are not scored.
Used by tests/test_cursor_quality.py (which asserts the share) and bench/cursor_quality.py
(which prints it per engine and healing rule).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pytest_lsp import LanguageClient

from phi_lsp.completion.context import cursor_context
from testkit.lsp_session import inline_completion, lsp_session, open_document, wait_for_loads


@dataclass(frozen=True)
class CutPoint:
    lesson: int
    line: int  # index of the memorised line in the lesson
    column: int  # cursor column (Python str index in the line)
    document: str  # the lesson up to the cursor (with the chosen line breaks)
    expected: list[str]  # the memorised line and the lines after it
    kinds: tuple[str, ...]
    ambiguous: bool  # the document so far also starts another lesson


def cut_points(lessons: list[str], newline: str = "\n") -> list[CutPoint]:
    """Every cursor position in every memorised line (from column 0 to the line's end)."""
    points = []
    for n, lesson in enumerate(lessons):
        lines = lesson.split("\n")[:-1]  # lessons end with a line break
        for i, line in enumerate(lines):
            for col in range(len(line) + 1):
                before = newline.join(lines[:i] + [line[:col]])
                shared = sum(other.startswith(before.replace(newline, "\n")) for other in lessons)
                kinds = kinds_of(line, col)
                points.append(CutPoint(n, i, col, before, lines[i:], kinds, shared > 1))
    return points


def kinds_of(line: str, col: int) -> tuple[str, ...]:
    """The situations the issue names, for the cursor at `col` in `line`."""
    before, after = line[:col], line[col:]
    kinds = []
    if col == len(line):
        kinds.append("end of line")
    if before and not before.strip():
        kinds.append("empty indented line")
        if len(before) >= 2:
            kinds.append("after a whitespace-run token")
    elif before.endswith(" "):
        kinds.append("after a space")
    if before and after and re.match(r"\w", before[-1]) and re.match(r"\w", after[0]):
        kinds.append("inside an identifier")
    if before.count('"') % 2 == 1 or before.count("'") % 2 == 1:
        kinds.append("inside a string")
    if before and before[-1] in "+-*/%=<>!&|^~":
        kinds.append("after an operator")
    if before.endswith("("):
        kinds.append("after (")
    if any(ord(c) > 127 for c in line):
        kinds.append("non-ASCII line")
    return tuple(kinds)


def is_right(point: CutPoint, suggestion: str) -> bool:
    """Whether the line prefix + suggestion gives back the memorised line (and those after it)."""
    got = (point.expected[0][: point.column] + suggestion).replace("\r\n", "\n").split("\n")
    if got[-1] == "" and len(got) > 1:
        got = got[:-1]  # a block suggestion ends with its line break
    elif len(got) > 1 and len(got) <= len(point.expected):
        if not point.expected[len(got) - 1].startswith(got[-1]):
            return False
        got = got[:-1]  # a last line cut short by the token budget
    return got[0] == point.expected[0] and got[1:] == point.expected[1 : len(got)]


@dataclass
class Score:
    right: Counter[str] = field(default_factory=Counter)
    total: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[CutPoint, str]] = field(default_factory=list)

    def add(self, point: CutPoint, mode: str, ok: bool, suggestion: str) -> None:
        for key in ("all", f"{mode} mode", *point.kinds):
            self.total[key] += 1
            self.right[key] += ok
        if not ok:
            self.misses.append((point, suggestion))

    def share(self, key: str = "all") -> float:
        return self.right[key] / self.total[key] if self.total[key] else 0.0


def utf16_column(line: str, column: int) -> int:
    return len(line[:column].encode("utf-16-le")) // 2


async def measure(client: LanguageClient, points: list[CutPoint], uri: str) -> Score:
    """Ask the running server at every cut point (one document, replaced each time)."""
    score = Score()
    version = 1
    open_document(client, uri, "", version)
    for point in points:
        version += 1
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=point.document)],
            )
        )
        character = utf16_column(point.expected[0], point.column)
        items = await inline_completion(client, uri, point.line, character)
        text = items[0].insert_text if items else ""
        assert isinstance(text, str)
        if not point.ambiguous:
            mode = cursor_context(point.document, len(point.document)).mode
            score.add(point, mode, is_right(point, text), text)
    return score


async def run_server(
    tmp_path: Path, settings: dict[str, Any], points: list[CutPoint], uri_name: str = "lesson.py"
) -> Score:
    """Start `phi-lsp serve` with `settings`, wait for the model and measure `points`."""
    base = {"debounceMs": 0, "typedAheadCache": False, "nThreads": 2}
    async with lsp_session(tmp_path, {**base, **settings}) as client:
        ends = await wait_for_loads(client)
        assert "ready" in ends[-1], ends
        return await measure(client, points, (tmp_path / uri_name).as_uri())
