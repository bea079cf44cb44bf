"""Token healing: a prompt that ends in the middle of a BPE token, made whole again.

A prefix-only model is asked at every keystroke, and most keystrokes leave the cursor inside a
word: `    retur` is tokenized as `retur`, a token sequence the model never saw in training (it
saw `return`), so it answers badly. Healing backs the prompt up over the tokens the cursor may
have split and lets the model write them again, constrained so that its text starts with exactly
the characters removed; those characters are then stripped, and the suggestion starts at the
cursor again (Guidance's "token healing", done here for llama.cpp and transformers alike).

Which tokens to back up over (`Rule`):
- "token": only the last one;
- "word": every token that overlaps the text's last run of word characters, of operator
  characters or of spaces/tabs, and at least the last token. A byte-level BPE never merges
  across such runs (GPT-2's pre-tokenizer splits text there first, and CodeGen's whitespace
  tokens are whole runs), so no token further left can be split by the cursor.
`bench/cursor_quality.py` measures both against no healing.

Everything here is pure: token ids and their bytes in, token ids out.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Rule = Literal["word", "token", "off"]

# The last run a cursor can sit inside: word characters, operator characters, spaces/tabs.
_TAIL = re.compile(r"(?:\w+|[^\w\s]+|[ \t]+)\Z")


def tail_start(text: str) -> int:
    """Where the run of like characters that ends `text` starts (len(text) when none)."""
    match = _TAIL.search(text)
    return match.start() if match else len(text)


@dataclass(frozen=True)
class Heal:
    """A prompt backed up for healing: keep `keep` tokens, then generate `removed` first.

    `given_back` counts the tokens removed: generation may take that many more tokens.
    """

    keep: int
    removed: bytes
    given_back: int = 0

    @property
    def text(self) -> str:
        return self.removed.decode("utf-8")


NO_HEAL = Heal(keep=-1, removed=b"", given_back=0)


class TokenTable:
    """The bytes every token id stands for, searchable by prefix.

    Built once per loaded model. `allowed(rest)` answers "which tokens can come next when the
    generated text must start with `rest`" with two binary searches and one dict look-up per
    byte of `rest`, so a constrained step costs about as much as an unconstrained one.
    """

    def __init__(self, pieces: Sequence[bytes], exclude: Sequence[int] = ()) -> None:
        self.pieces = [bytes(p) for p in pieces]
        skip = set(exclude)
        usable = [(p, i) for i, p in enumerate(self.pieces) if p and i not in skip]
        usable.sort()
        self._sorted = [p for p, _ in usable]
        self._sorted_ids = np.array([i for _, i in usable], dtype=np.int64)
        self._by_piece: dict[bytes, list[int]] = {}
        for p, i in usable:
            self._by_piece.setdefault(p, []).append(i)
        self._longest = max((len(p) for p in self._sorted), default=0)

    def __len__(self) -> int:
        return len(self.pieces)

    def text_of(self, tokens: Sequence[int]) -> bytes:
        return b"".join(self.pieces[t] for t in tokens)

    def allowed(self, rest: bytes) -> np.ndarray:
        """Ids whose bytes start with `rest` or are a non-empty prefix of it."""
        lo = bisect.bisect_left(self._sorted, rest)
        hi = bisect.bisect_left(self._sorted, _after_all_with_prefix(rest)) if rest else lo
        longer = self._sorted_ids[lo:hi]
        shorter = [
            i
            for k in range(1, min(len(rest), self._longest + 1))
            for i in self._by_piece.get(rest[:k], ())
        ]
        return np.concatenate([longer, np.array(shorter, dtype=np.int64)]) if shorter else longer

    def plan(self, prompt: str, tokens: Sequence[int], rule: Rule) -> Heal:
        """Which tokens of `prompt` (tokenized as `tokens`) to give back to the model.

        NO_HEAL when the rule is "off", the prompt is empty, or the tokens' bytes do not spell
        the prompt (a tokenizer that adds a prefix space, say): healing then could only hurt.
        """
        if rule == "off" or not tokens:
            return NO_HEAL
        encoded = prompt.encode("utf-8", "surrogatepass")
        ends = np.cumsum([len(self.pieces[t]) for t in tokens])
        if int(ends[-1]) != len(encoded) or self.text_of(tokens) != encoded:
            return NO_HEAL
        keep = len(tokens) - 1
        if rule == "word":
            start = len(prompt[: tail_start(prompt)].encode("utf-8", "surrogatepass"))
            keep = min(keep, int(np.searchsorted(ends, start, side="right")))
        while keep > 0:  # never cut inside a UTF-8 character
            try:
                encoded[int(ends[keep - 1]) :].decode("utf-8")
                break
            except UnicodeDecodeError:
                keep -= 1
        return Heal(keep, encoded[int(ends[keep - 1]) if keep else 0 :], len(tokens) - keep)


class Constraint:
    """Steers the first generated tokens until they have spelled `removed`.

    `allowed()` gives the ids the next token may take (None once free); `advance(token)`
    records the token chosen. `forced` says whether the model's own first choice was ever
    refused: when it never was, the model would have written the removed text by itself, so
    its answer also holds at any cursor inside the removed text (the typed-ahead cache uses
    that).
    """

    def __init__(self, table: TokenTable, removed: bytes) -> None:
        self.table = table
        self.rest = removed
        self.forced = False

    @property
    def done(self) -> bool:
        return not self.rest

    def allowed(self) -> np.ndarray | None:
        return None if self.done else self.table.allowed(self.rest)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """`logits` with every token that cannot come next at -inf (a copy; as is when free)."""
        allowed = self.allowed()
        if allowed is None:
            return logits
        masked = np.full_like(logits, -np.inf)
        masked[allowed] = logits[allowed]
        if masked[int(np.argmax(logits))] == -np.inf:
            self.forced = True
        return masked

    def advance(self, token: int) -> None:
        piece = self.table.pieces[token]
        self.rest = self.rest[len(piece) :] if len(piece) < len(self.rest) else b""


def text_after(
    table: TokenTable, out: Sequence[int], heal: Heal, decode: Callable[[list[int]], str]
) -> str | None:
    """The text of generated tokens after the healed part (None while not all written yet).

    Unhealed generations keep the engine's own `decode`.
    """
    if not heal.removed:
        return decode(list(out))
    generated = table.text_of(out)
    if len(generated) < len(heal.removed):
        return None
    return generated[len(heal.removed) :].decode("utf-8", errors="replace")


def _after_all_with_prefix(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string that starts with `prefix`."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b"\xff" * (len(prefix) + 64)
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def hf_pieces(tokenizer: object, rows: int) -> list[bytes]:
    """The bytes of every model row's token for a Hugging Face fast tokenizer.

    Byte-level BPE (GPT-2, CodeGen: phi-1, 1.5, 2) maps bytes to printable characters; added
    tokens (CodeGen's whitespace runs) are stored as plain text; SentencePiece-style vocabularies
    (phi-3) write spaces as "▁" and raw bytes as "<0xNN>". Special tokens and rows beyond the
    tokenizer get no bytes, so healing never picks them.
    """
    vocab: dict[str, int] = tokenizer.get_vocab()  # type: ignore[attr-defined]
    added: dict[int, object] = tokenizer.added_tokens_decoder  # type: ignore[attr-defined]
    decoder = tokenizer.backend_tokenizer.decoder  # type: ignore[attr-defined]
    byte_level = type(decoder).__name__ == "ByteLevel"
    to_byte = {c: b for b, c in _bytes_to_unicode().items()}
    pieces = [b""] * rows
    for token, i in vocab.items():
        if not 0 <= i < rows:
            continue
        if i in added:
            special = bool(getattr(added[i], "special", False))
            pieces[i] = b"" if special else str(getattr(added[i], "content", token)).encode()
        elif byte_level and all(c in to_byte for c in token):
            pieces[i] = bytes(to_byte[c] for c in token)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            pieces[i] = bytes([int(token[3:5], 16)])
        else:
            pieces[i] = token.replace("\u2581", " ").encode()
    return pieces


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def pick_token(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Greedy at temperature 0, else a sample from the softmax (masked tokens never win)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    return int(rng.choice(len(probs), p=probs / probs.sum()))
