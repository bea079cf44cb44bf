"""Find HumanEval tasks (prompt + canonical solution) that have near-duplicates in a corpus.

A benchmark score means little if the training data held the answers, and a fine-tuning set
must not either. Code is compared as token n-grams (default 13, the usual contamination
window) over Python tokens, so layout and comments do not matter:

- comments, blank lines, newlines, indentation and docstrings are dropped;
- identifiers (names that are not keywords, builtins or attributes) are numbered by their first
  appearance *within each n-gram*, so consistently renamed variables still match while the
  pattern of which name is used where still has to agree;
- string literals are normalised to their value (quote style does not matter).

A task's overlap with a piece of code is the fraction of the task's distinct n-grams that
occur in it (containment), so a copy inside a large file is still found.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import os
import tokenize
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phi_lsp.evaluation.humaneval import Problem

DEFAULT_N = 13
_KEEP_NAMES = frozenset(keyword.kwlist) | frozenset(dir(builtins))
_DROP = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
        tokenize.ENCODING,
    }
)
# A token is (is_identifier, text); identifiers are renamed per n-gram.
Token = tuple[bool, str]


@dataclass(frozen=True)
class Match:
    task_id: str
    path: Path
    overlap: float


def code_tokens(source: str) -> list[Token]:
    """The normalised tokens of `source` (see the module docstring); tolerant of broken code."""
    raw: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            raw.append(tok)
    except (tokenize.TokenError, SyntaxError, ValueError):
        pass  # keep what tokenized before the error
    kinds = [t.type for t in raw]
    out: list[Token] = []
    previous = ""  # text of the previous kept token
    for i, tok in enumerate(raw):
        if tok.type in _DROP:
            continue
        if tok.type == tokenize.STRING and _is_docstring(kinds, i):
            continue
        if tok.type == tokenize.NAME:
            is_id = tok.string not in _KEEP_NAMES and previous != "."
            out.append((is_id, tok.string))
        elif tok.type == tokenize.STRING:
            out.append((False, _normalise_string(tok.string)))
        else:
            out.append((False, tok.string))
        previous = tok.string
    return out


def _is_docstring(kinds: Sequence[int], i: int) -> bool:
    """A string that is a whole statement: after a newline/indent, before a newline."""
    j = i - 1
    while j >= 0 and kinds[j] in (tokenize.NL, tokenize.COMMENT):
        j -= 1
    before = kinds[j] if j >= 0 else tokenize.NEWLINE
    k = i + 1
    while k < len(kinds) and kinds[k] == tokenize.COMMENT:
        k += 1
    after = kinds[k] if k < len(kinds) else tokenize.NEWLINE
    starts = before in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING)
    return starts and after in (tokenize.NEWLINE, tokenize.ENDMARKER)


def _normalise_string(text: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # f-strings and the like: compared as written
    return repr(value)


def ngram_hashes(tokens: Sequence[Token], n: int = DEFAULT_N) -> set[int]:
    """Hashes of every n-gram, identifiers numbered by first appearance inside the n-gram.

    Sources shorter than n tokens give one n-gram of all their tokens.
    """
    size = min(n, len(tokens))
    grams: set[int] = set()
    for start in range(len(tokens) - size + 1) if size else ():
        seen: dict[str, int] = {}
        key: list[object] = []
        for is_id, text in tokens[start : start + size]:
            key.append(seen.setdefault(text, len(seen)) if is_id else text)
        grams.add(hash(tuple(key)))
    return grams


class NGramIndex:
    """The n-grams of reference code (HumanEval by default), to measure overlap with new code.

    Build once, then call `overlap` for each training example or file; hashes are
    process-local, so the index is not meant to be saved.
    """

    def __init__(self, references: dict[str, str], n: int = DEFAULT_N) -> None:
        self.n = n
        self.sizes: dict[str, int] = {}
        self._owners: dict[int, list[str]] = defaultdict(list)
        for key, source in references.items():
            grams = ngram_hashes(code_tokens(source), n)
            self.sizes[key] = len(grams)
            for gram in grams:
                self._owners[gram].append(key)

    @classmethod
    def from_humaneval(
        cls, problems: Iterable[Problem] | None = None, n: int = DEFAULT_N
    ) -> NGramIndex:
        """An index of every task's prompt + canonical solution."""
        if problems is None:
            from phi_lsp.evaluation.humaneval import load_problems

            problems = load_problems()
        return cls({p.task_id: p.prompt + p.canonical_solution for p in problems}, n)

    def overlaps(self, code: str) -> dict[str, float]:
        """Reference key -> fraction of its n-grams found in `code` (only keys with any)."""
        hits: dict[str, int] = defaultdict(int)
        for gram in ngram_hashes(code_tokens(code), self.n):
            for key in self._owners.get(gram, ()):
                hits[key] += 1
        return {key: count / self.sizes[key] for key, count in hits.items()}

    def overlap(self, code: str) -> tuple[str | None, float]:
        """The reference `code` overlaps most, and by how much (None, 0.0 when none)."""
        scores = self.overlaps(code)
        if not scores:
            return None, 0.0
        best = max(scores, key=lambda key: (scores[key], key))
        return best, scores[best]


def iter_python_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The .py files among `paths` and under the folders among them, sorted per folder."""
    for path in paths:
        path = Path(path)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.endswith(".py"):
                        yield Path(root) / name
        elif path.is_file():
            yield path


def find_near_duplicates(
    corpus_paths: list[Path],
    n: int = DEFAULT_N,
    threshold: float = 0.5,
    index: NGramIndex | None = None,
) -> list[Match]:
    """Every (task, file) where the file holds at least `threshold` of the task's n-grams.

    Sorted by overlap, highest first. Unreadable files are skipped.
    """
    index = index or NGramIndex.from_humaneval(n=n)
    matches: list[Match] = []
    for path in iter_python_files(corpus_paths):
        try:
            code = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for task_id, score in index.overlaps(code).items():
            if score >= threshold:
                matches.append(Match(task_id, path, score))
    matches.sort(key=lambda m: (-m.overlap, m.task_id, str(m.path)))
    return matches
