"""Line breaks as LSP counts them, for pygls' documents.

LSP positions count lines separated by `\\n`, `\\r\\n` or `\\r` and nothing else. pygls 2.1.1
splits documents with `str.splitlines`, which also breaks at form feed, vertical tab, NEL,
U+2028 and friends; with a form feed in the file (common in older Python sources) every edit
below it lands on the wrong line and the server's copy drifts from the editor's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from phi_lsp.lines import lsp_lines

if TYPE_CHECKING:
    from pygls.workspace import TextDocument


def _lines(self: TextDocument) -> Sequence[str]:
    return lsp_lines(self.source)


def use_lsp_line_breaks() -> None:
    """Make every pygls TextDocument split lines the LSP way."""
    from pygls.workspace import TextDocument

    TextDocument.lines = property(_lines)  # type: ignore[assignment,method-assign]
