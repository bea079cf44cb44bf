"""Follow accepted text through later edits, and measure how much of it is still there.

Positions are LSP (line, character) pairs in the client's units; a change is applied the way
the client applied it (each `contentChanges` entry against the text the previous one left). The
span never grows: text typed just before or just after it is not part of it. What is kept is
measured by matching the accepted text against the span's text at the end (`kept_chars`), so
text rewritten inside the span counts only where it still matches.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from phi_lsp.lines import lsp_lines

Pos = tuple[int, int]


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def advance(start: Pos, text: str) -> Pos:
    """Where `text` inserted at `start` ends."""
    lines = lsp_lines(text)
    if not lines:
        return start
    if lines[-1].endswith(("\n", "\r")):
        return (start[0] + len(lines), 0)
    if len(lines) == 1:
        return (start[0], start[1] + utf16_len(lines[0]))
    return (start[0] + len(lines) - 1, utf16_len(lines[-1]))


def shift(p: Pos, end: Pos, new_end: Pos) -> Pos:
    """`p` at or after a replaced range that ended at `end` and now ends at `new_end`."""
    if p[0] == end[0]:
        return (new_end[0], new_end[1] + p[1] - end[1])
    return (p[0] + new_end[0] - end[0], p[1])


@dataclass
class Span:
    start: Pos
    end: Pos

    def apply(self, start: Pos, end: Pos, text: str) -> None:
        """The client replaced [start, end) with `text`."""
        new_end = advance(start, text)
        if self.start >= end:
            s = shift(self.start, end, new_end)
        elif self.start >= start:
            s = new_end  # its beginning was replaced: what was written there is not the model's
        else:
            s = self.start
        if self.end > end or (self.end == end and start != end):
            e = shift(self.end, end, new_end)
        elif self.end > start:
            e = start  # its end was replaced
        else:
            e = self.end
        self.start, self.end = s, max(s, e)


def kept_chars(accepted: str, now: str) -> int:
    """Characters of `accepted` still in `now`, in order."""
    matcher = difflib.SequenceMatcher(None, accepted, now, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks())
