"""Suggestions already made, reused while the user types into them.

When the user types characters that match the suggestion on screen, the rest of it is still
the model's answer: serve it without a model call (Tabby's "forwarding" cache, llama.vim's
look-back).

A backspace is served only where the model is known to say the same thing. With token healing
the model wrote the end of the prefix again before its suggestion; when it did so of its own
choice (healing never overruled it), that text plus the suggestion is its answer from where the
healed part starts, so the entry is kept from there and every cursor inside the healed part is
a forward hit. Deleting further back, or into text the model did not choose, asks the model:
serving the deleted characters back in front of the suggestion would show, after a typo and a
Backspace, the typo again.

Entries are kept per document in a small LRU. An entry remembers the prefix it was made for by
its length, its last `TAIL` characters and a hash of the whole of it, so a lookup never keeps or
compares megabytes of text.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

TAIL = 256


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(frozen=True)
class _Entry:
    prefix_len: int
    prefix_tail: str
    prefix_hash: bytes
    line_suffix: str
    text: str


class SuggestionCache:
    def __init__(self, per_document: int = 16, documents: int = 64) -> None:
        self.per_document = per_document
        self.documents = documents
        self._docs: OrderedDict[str, OrderedDict[tuple[int, bytes], _Entry]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def put(self, uri: str, prefix: str, line_suffix: str, text: str, healed: str = "") -> None:
        """Remember that `text` was suggested after `prefix` (with `line_suffix` after it).

        `healed`: the end of `prefix` that the model wrote again, unforced, before `text`.
        """
        if healed and prefix.endswith(healed):
            prefix, text = prefix[: len(prefix) - len(healed)], healed + text
        if not text:
            return
        entries = self._docs.setdefault(uri, OrderedDict())
        self._docs.move_to_end(uri)
        entry = _Entry(len(prefix), prefix[-TAIL:], _digest(prefix), line_suffix, text)
        key = (entry.prefix_len, entry.prefix_hash)
        entries[key] = entry
        entries.move_to_end(key)
        while len(entries) > self.per_document:
            entries.popitem(last=False)
        while len(self._docs) > self.documents:
            self._docs.popitem(last=False)

    def get(self, uri: str, prefix: str, line_suffix: str) -> str | None:
        """The rest of a cached suggestion consistent with `prefix`, or None."""
        entries = self._docs.get(uri)
        for entry in reversed(entries.values()) if entries else ():
            rest = _continue(entry, prefix, line_suffix)
            if rest:
                self.hits += 1
                return rest
        self.misses += 1
        return None

    def clear(self) -> None:
        self._docs.clear()

    def forget(self, uri: str) -> None:
        self._docs.pop(uri, None)

    def __len__(self) -> int:
        return sum(len(e) for e in self._docs.values())


def _continue(entry: _Entry, prefix: str, line_suffix: str) -> str | None:
    if line_suffix != entry.line_suffix:
        return None
    typed = len(prefix) - entry.prefix_len
    # The user typed `typed` characters since: they must be the suggestion's start.
    if typed < 0 or typed >= len(entry.text) or not prefix.endswith(entry.text[:typed]):
        return None
    before = prefix[: entry.prefix_len]
    if not before.endswith(entry.prefix_tail) or _digest(before) != entry.prefix_hash:
        return None
    return entry.text[typed:]
