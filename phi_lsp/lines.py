"""Line breaks as LSP counts them: `\\n`, `\\r\\n` or `\\r` and nothing else.

`str.splitlines` also breaks at form feed, vertical tab, NEL, U+2028 and friends; every layer
that maps positions or ast line numbers to text splits with `lsp_lines` instead.
"""

from __future__ import annotations

import re

LSP_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def lsp_lines(source: str) -> tuple[str, ...]:
    """`source` split after each LSP line break, keeping the breaks.

    Also how Python's ast counts lines, so ast line numbers index into it (str.splitlines
    does not: one form feed above a function shifts every line below).
    """
    return tuple(LSP_LINE.findall(source))
