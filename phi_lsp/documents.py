"""Line breaks as LSP counts them, for pygls' documents.

LSP positions count lines separated by `\\n`, `\\r\\n` or `\\r` and nothing else. pygls 2.1.1
splits documents with `str.splitlines`, which also breaks at form feed, vertical tab, NEL,
U+2028 and friends; with a form feed in the file (common in older Python sources) every edit
below it lands on the wrong line and the server's copy drifts from the editor's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pygls.workspace import TextDocument

LSP_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def lsp_lines(source: str) -> tuple[str, ...]:
    """`source` split after each LSP line break, keeping the breaks.

    Also how Python's ast counts lines, so ast line numbers index into it (str.splitlines
    does not: one form feed above a function shifts every line below).
    """
    return tuple(LSP_LINE.findall(source))


def _lines(self: TextDocument) -> Sequence[str]:
    return lsp_lines(self.source)


def use_lsp_line_breaks() -> None:
    """Make every pygls TextDocument split lines the LSP way."""
    from pygls.workspace import TextDocument

    TextDocument.lines = property(_lines)  # type: ignore[assignment,method-assign]
