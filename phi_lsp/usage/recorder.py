"""Shown → accepted → retained: the events of one server session, written to the journal.

The LSP layer reports what it showed (`shown`), what the client says was accepted (`accepted`,
from the item's command), every document change (`edited`) and saves and closes (`ended`). An
accepted suggestion is followed (`retention.Span`) until its document is saved or closed, or
`follow_s` has passed; then the share of it still there is recorded. Nothing is recorded for a
file that matches an ignore glob, or when the `usage` setting is off.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from phi_lsp.lines import lsp_lines
from phi_lsp.usage.journal import Journal
from phi_lsp.usage.retention import Pos, Span, advance, kept_chars
from phi_lsp.usage.stats import Figures

log = logging.getLogger(__name__)

FOLLOW_S = 10 * 60  # an accepted suggestion's fate is recorded after this long at the latest
MAX_SHOWN = 256  # suggestions remembered for a later accept
PROMPT_CHARS = 8000  # the prompt kept with a typed-ahead suggestion (no model prompt of its own)


@dataclass
class Shown:
    id: str
    uri: str
    file: str
    position: Pos
    text: str
    prompt: str
    mode: str
    latency_ms: float
    model: str
    t: float = field(default_factory=time.time)


@dataclass
class Accepted:
    shown: Shown
    text: str
    span: Span
    t: float = field(default_factory=time.monotonic)


class Session(Figures):
    """This session's figures, for the status bar and :PhiStatus."""

    def summary(self) -> dict[str, Any]:
        return {
            "shown": self.shown,
            "accepted": self.accepted,
            "acceptanceRate": self.acceptance,
            "retainedShare": self.retained,
            "p50Ms": self.latency(0.5),
            "p95Ms": self.latency(0.95),
        }


class Recorder:
    def __init__(
        self,
        journal: Journal,
        enabled: Callable[[], bool],
        ignore: Callable[[], list[str]],
        roots: Callable[[], list[str]],
        follow_s: float = FOLLOW_S,
    ) -> None:
        self.journal, self.enabled, self.ignore, self.roots = journal, enabled, ignore, roots
        self.follow_s = follow_s
        self.session = Session()
        self._shown: OrderedDict[str, Shown] = OrderedDict()
        self._accepted: dict[str, list[Accepted]] = {}
        self._prompt_chars: dict[str, int] = {}
        # The latest text of each document that has accepted text to follow (read at close).
        self._texts: dict[str, str] = {}
        self._failed = False

    def shown(
        self,
        uri: str,
        position: Pos,
        text: str,
        prefix: str,
        prompt: str,
        mode: str,
        latency_ms: float,
        model: str,
    ) -> str | None:
        """Record a suggestion shown at `position`; its id for the accept command (None: not
        recorded). `prompt` is the model's; a typed-ahead one has "" and gets `prefix`'s end."""
        file = self.file_label(uri)
        if not text or file is None or not self.enabled():
            return None
        if prompt:
            self._prompt_chars[uri] = len(prompt)
        else:
            prompt = prefix.replace("\r\n", "\n")[-self._prompt_chars.get(uri, PROMPT_CHARS) :]
        # The same suggestion at the same place is the same id: showing it again (another
        # request, another window) gives identical items, and either accept means it.
        key = f"{uri}\0{position[0]}\0{position[1]}\0{text}".encode()
        shown_id = hashlib.sha256(key).hexdigest()[:16]
        shown = Shown(shown_id, uri, file, position, text, prompt, mode, latency_ms, model)
        self._shown[shown.id] = shown
        while len(self._shown) > MAX_SHOWN:
            self._shown.popitem(last=False)
        self.session.shown += 1
        self.session.latencies.append(latency_ms)
        self._write(
            "shown",
            shown,
            mode=mode,
            latency_ms=round(latency_ms, 1),
            prompt_chars=len(prompt),
            text=text,
        )
        return shown.id

    def accepted(
        self, shown_id: str, inserted: str | None, text_of: Callable[[str], str | None]
    ) -> bool:
        """The client inserted suggestion `shown_id` (all of it, or `inserted`, a partial one);
        `text_of` reads a document's text now."""
        shown = self._shown.pop(shown_id, None)
        text = text_of(shown.uri) if shown is not None else None
        if shown is None or text is None:
            return False
        kept = inserted if inserted is not None and shown.text.startswith(inserted) else shown.text
        span = Span(shown.position, advance(shown.position, kept))
        self._accepted.setdefault(shown.uri, []).append(Accepted(shown, kept, span))
        self._texts[shown.uri] = text
        self.session.accepted += 1
        partial = kept != shown.text
        self._write("accepted", shown, chars=len(kept), partial=partial, prompt=shown.prompt)
        return True

    def edited(self, uri: str, changes: list[tuple[Pos, Pos, str] | None], text: str) -> None:
        """Document changes, in order (None: the whole document replaced); `text` after them."""
        if uri not in self._accepted:
            return
        self._texts[uri] = text
        for accepted in self._accepted[uri]:
            for change in changes:
                if change is None:
                    accepted.span = Span((0, 0), (0, 0))  # cannot follow: measured as lost
                else:
                    accepted.span.apply(*change)
        self.expire()

    def ended(self, uri: str, reason: str, text: str | None = None) -> None:
        """The document was saved or closed: record what is left of its accepted suggestions."""
        text = self._texts.pop(uri, "") if text is None else text
        for accepted in self._accepted.pop(uri, []):
            self._retained(accepted, reason, text)

    def expire(self) -> None:
        """Record suggestions followed for longer than `follow_s`."""
        now = time.monotonic()
        for uri, items in list(self._accepted.items()):
            for accepted in [a for a in items if now - a.t >= self.follow_s]:
                items.remove(accepted)
                self._retained(accepted, "timeout", self._texts.get(uri, ""))

    def close(self) -> None:
        """The server stops: record every suggestion still followed."""
        for uri in list(self._accepted):
            self.ended(uri, "shutdown")

    def _retained(self, accepted: Accepted, reason: str, text: str) -> None:
        a, b = offset_in(text, accepted.span.start), offset_in(text, accepted.span.end)
        now = text[a:b]
        kept = kept_chars(accepted.text, now)
        self.session.accepted_chars += len(accepted.text)
        self.session.kept_chars += kept
        share = kept / len(accepted.text) if accepted.text else 0.0
        self._write(
            "retained",
            accepted.shown,
            reason=reason,
            chars=len(accepted.text),
            kept_chars=kept,
            share=round(share, 4),
            prompt=accepted.shown.prompt,
            kept=now,
        )

    def file_label(self, uri: str) -> str | None:
        """The path relative to a workspace folder, else a hash of it; None when ignored."""
        path = unquote(urlparse(uri).path) or uri
        name = PurePosixPath(path).name
        if any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(path, g) for g in self.ignore()):
            return None
        for root in self.roots():
            root_path = unquote(urlparse(root).path).rstrip("/") + "/"
            if path.startswith(root_path):
                return path[len(root_path) :]
        return "sha256:" + hashlib.sha256(path.encode()).hexdigest()[:16]

    def _write(self, event: str, shown: Shown, **fields: Any) -> None:
        record = {
            "t": round(time.time(), 3),
            "event": event,
            "id": shown.id,
            "file": shown.file,
            "model": shown.model,
            **fields,
        }
        try:
            self.journal.append(record)
        except OSError as exc:
            if not self._failed:
                log.warning("usage journal %s cannot be written: %s", self.journal.path, exc)
            self._failed = True


def offset_in(text: str, pos: Pos) -> int:
    """The offset of an LSP position (UTF-16 characters) in `text`."""
    lines = lsp_lines(text)
    if pos[0] >= len(lines):
        return len(text)
    start = sum(len(line) for line in lines[: pos[0]])
    line, units = lines[pos[0]], 0
    for i, ch in enumerate(line):
        if units >= pos[1] or ch in "\r\n":
            return start + i
        units += 2 if ord(ch) > 0xFFFF else 1
    return start + len(line)
