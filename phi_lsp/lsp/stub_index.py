"""Where the stubs are, per document version: code actions must be cheap.

VS Code asks for code actions on every cursor move. Parsing the whole document with ast each
time would block the event loop for long files, so the stubs' line spans are computed once per
document version, and not at all for a document that has no `def` line or no string quote.
"""

from __future__ import annotations

import logging
import re

from phi_lsp.bodygen.stubs import stub_spans

log = logging.getLogger(__name__)

# A line that starts a function definition, after an LSP line break (or at the start).
DEF_LINE = re.compile(r"(?:^|[\r\n])[ \t\f]*(?:async\s+)?def\s")


class StubIndex:
    def __init__(self) -> None:
        self._spans: dict[str, tuple[tuple[int | None, int], list[tuple[int, int]]]] = {}
        self.parses = 0

    def stub_at(self, uri: str, version: int | None, source: str, line: int) -> bool:
        """Whether `line` lies in a function whose body is only a docstring."""
        return any(first <= line <= last for first, last in self.spans(uri, version, source))

    def spans(self, uri: str, version: int | None, source: str) -> list[tuple[int, int]]:
        key = (version, len(source))
        cached = self._spans.get(uri)
        if cached is not None and cached[0] == key:
            return cached[1]
        spans: list[tuple[int, int]] = []
        if DEF_LINE.search(source) and ('"' in source or "'" in source):
            self.parses += 1
            spans = stub_spans(source)
            log.debug("%s v%s: %d stub(s)", uri, version, len(spans))
        self._spans[uri] = (key, spans)
        return spans

    def forget(self, uri: str) -> None:
        self._spans.pop(uri, None)
