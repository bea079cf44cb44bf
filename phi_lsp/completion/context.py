"""What the cursor is in the middle of: the text around it, the mode, and the indentation.

phi-1 has no fill-in-the-middle, so the prompt is only the text before the cursor; this
module decides *what kind* of continuation to ask for ("line": finish the current line;
"block": write the lines of the current block) and which indentation those lines belong to,
so post-processing can tell where the suggestion has to end. Pure functions, stdlib only.

Line breaks are "\\n" and "\\r\\n" (a lone "\\r" is not one). All offsets are Python `str`
indices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Mode = Literal["line", "block"]

# What may follow the cursor on its line without blocking a suggestion: the model's line
# ends where these begin (editors auto-insert them), so they do not need the middle.
CLOSING_CHARS = frozenset(")]}'\":, \t")
# llama.vim's `max_line_suffix`: with more code than this right of the cursor, a prefix-only
# model cannot know how its text would have to join it.
MAX_LINE_SUFFIX = 8


@dataclass(frozen=True)
class CursorContext:
    prefix: str  # whole document text before the cursor
    suffix: str  # whole document text after the cursor
    line_prefix: str  # current line's text before the cursor
    line_suffix: str  # current line's text after the cursor (without the newline)
    indent: str  # the indentation the completion's lines belong to
    mode: Mode


# --- a small scanner: brackets, strings and comments, without a full tokenizer ------------

_INTERESTING = re.compile(r"'''|\"\"\"|[#\\()\[\]{}\n'\"]")
_TRIPLE_END = {q: re.compile(r"\\.|" + re.escape(q), re.S) for q in ("'''", '"""')}
_SINGLE_END = {q: re.compile(r"\\(?:\r\n|.)|" + q + r"|\n", re.S) for q in ("'", '"')}
_OPENERS = "([{"


@dataclass(frozen=True)
class Scan:
    """The lexical state at the end of a piece of Python source.

    A hand-written scanner rather than `tokenize`: it must accept any partial text (the cursor
    is usually in the middle of a statement) and be cheap enough to run on every request.
    """

    open_brackets: tuple[int, ...]  # positions of brackets still open at the end
    string_start: int | None  # position of a string still open at the end (cursor in it)
    in_comment: bool  # the text ends inside a comment
    unmatched_closers: int  # closing brackets that closed nothing
    stmt_start: int  # start of the line where the logical line holding the end begins
    last_code: int  # position of the last code character (not space/comment), -1 if none
    last_code_stmt_start: int  # start of the line where last_code's logical line begins


def scan(text: str) -> Scan:
    """Scan `text` for open brackets, strings and comments (see `Scan`)."""
    stack: list[int] = []
    unmatched = 0
    stmt_start = 0
    last_code = -1
    last_code_stmt = 0
    continuation = False  # a backslash just before the line break joins the next line
    pos = 0
    n = len(text)
    while pos < n:
        m = _INTERESTING.search(text, pos)
        end = m.start() if m else n
        gap = text[pos:end].rstrip()
        if gap.strip():
            last_code, last_code_stmt = pos + len(gap) - 1, stmt_start
            continuation = False
        if m is None:
            break
        tok, i = m.group(), m.start()
        pos = m.end()
        if tok == "\n":
            if not stack and not continuation:
                stmt_start = pos
            continuation = False
        elif tok == "#":
            eol = text.find("\n", i)
            if eol < 0:
                return Scan(
                    tuple(stack), None, True, unmatched, stmt_start, last_code, last_code_stmt
                )
            pos = eol
        elif tok == "\\":
            continuation = text.startswith(("\n", "\r\n"), pos)
        elif tok in ("'''", '"""', "'", '"'):
            last_code, last_code_stmt = i, stmt_start
            continuation = False
            pat = _TRIPLE_END[tok] if len(tok) == 3 else _SINGLE_END[tok]
            e = pat.search(text, pos)
            while e is not None and e.group() not in (tok, "\n"):
                e = pat.search(text, e.end())
            if e is None:
                return Scan(
                    tuple(stack), i, False, unmatched, stmt_start, last_code, last_code_stmt
                )
            # An unterminated one-line string ends at its line break (as tokenize recovers).
            pos = e.start() if e.group() == "\n" else e.end()
            if e.group() != "\n":
                last_code = e.end() - 1
        else:
            last_code, last_code_stmt = i, stmt_start
            continuation = False
            if tok in _OPENERS:
                stack.append(i)
            elif stack:
                stack.pop()
            else:
                unmatched += 1
    return Scan(tuple(stack), None, False, unmatched, stmt_start, last_code, last_code_stmt)


# The scanner reads at most this much of a long prefix: a bounded cost per request however
# large the file (about 0.16 ms per KB).
SCAN_WINDOW = 64_000
_TOP_LEVEL_LINE = re.compile(r"\n(?=[A-Za-z_@])")


@lru_cache(maxsize=16)
def scan_cached(text: str) -> Scan:
    """`scan` of the end of `text`, memoised (the per-token callback asks about it again).

    A long text is scanned from the first top-level statement in its last SCAN_WINDOW
    characters: a line that starts in column 0 with code is outside any bracket or string in
    all but pathological files. Positions are returned relative to the whole text.
    """
    if len(text) <= SCAN_WINDOW:
        return scan(text)
    match = _TOP_LEVEL_LINE.search(text, len(text) - SCAN_WINDOW)
    start = match.end() if match else len(text) - SCAN_WINDOW
    st = scan(text[start:])
    return Scan(
        tuple(p + start for p in st.open_brackets),
        None if st.string_start is None else st.string_start + start,
        st.in_comment,
        st.unmatched_closers,
        st.stmt_start + start,
        st.last_code + start if st.last_code >= 0 else -1,
        st.last_code_stmt_start + start,
    )


# --- indentation ---------------------------------------------------------------------------


def leading_ws(line: str) -> str:
    """The indentation of `line`."""
    return line[: len(line) - len(line.lstrip(" \t"))]


def width(ws: str) -> int:
    """Columns of an indentation (tabs to multiples of 8, as Python's tokenizer counts them)."""
    return len(ws.expandtabs(8))


def _line_at(text: str, start: int) -> str:
    """The line of `text` that begins at `start` (without its line break)."""
    end = text.find("\n", start)
    return text[start : len(text) if end < 0 else end].rstrip("\r")


def indent_unit(text: str) -> str:
    """One indentation level of this file: a tab if it indents with tabs, else 2 or 4 spaces.

    4 spaces unless the file clearly indents by 2 (the most common step between consecutive
    lines), so that a block's guessed indentation matches what the model will write.
    """
    tabs = spaces = two = four = 0
    prev = 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        ws = leading_ws(line)
        if ws.startswith("\t"):
            tabs += 1
        elif ws:
            spaces += 1
        w = width(ws)
        two += w - prev == 2
        four += w - prev == 4
        prev = w
    if tabs > spaces:
        return "\t"
    return "  " if two > four else "    "


def block_opener_indent(prefix: str) -> str | None:
    """Indentation of the block opener (a statement ending in ":") the cursor's block belongs to.

    The opener is the code just before the cursor: on the cursor's own line when that ends in
    ":", else on the nearest previous non-blank line (a trailing comment is allowed there).
    Returns the indentation of the opener statement's *first* line (a multi-line `def f(a,\\n
    b):` is indented like `def`), or None when the cursor does not follow an opener.
    """
    st = scan_cached(prefix)
    if st.open_brackets or st.string_start is not None or st.in_comment or st.last_code < 0:
        return None
    if prefix[st.last_code] != ":":
        return None
    line_start = prefix.rfind("\n") + 1
    if prefix[line_start:].strip():
        # The cursor's line has text: it must itself end with the ":".
        if st.last_code < line_start or prefix[st.last_code + 1 :].strip():
            return None
    else:
        # Blank cursor line: the ":" must be on the nearest previous non-blank line.
        prev_end = len(prefix.rstrip(" \t\r\n"))
        prev_start = prefix.rfind("\n", 0, prev_end) + 1
        if st.last_code < prev_start:
            return None
    return leading_ws(_line_at(prefix, st.last_code_stmt_start))


def _previous_line_indent(prefix: str, line_start: int) -> str:
    """Indentation of the nearest non-blank line before the cursor's line ("" if none).

    A code line that ends a multi-line statement (`x = f(a,\\n      b)`) counts with the
    indentation of the statement's first line, which is where the next statement goes.
    """
    before = prefix[:line_start]
    prev_end = len(before.rstrip(" \t\r\n"))
    if prev_end == 0:
        return ""
    prev_start = before.rfind("\n", 0, prev_end) + 1
    own = leading_ws(before[prev_start:prev_end])
    st = scan_cached(prefix)
    if st.open_brackets or st.string_start is not None or st.last_code < prev_start:
        return own  # inside brackets/strings, or a comment line: follow the line itself
    return leading_ws(_line_at(prefix, st.last_code_stmt_start))


# --- public API ------------------------------------------------------------------------------


def cursor_context(text: str, offset: int) -> CursorContext:
    """Split `text` at `offset` and classify the cursor (see the module docstring).

    Mode: "line" when there is text before the cursor on its line (finish that line), "block"
    on a blank line or at the end of a line ending in a block opener ":" (write the block).
    Indent: the cursor's whitespace on a blank line; on an empty line the previous non-blank
    line's indentation, one level deeper after an opener; the line's own indentation in line
    mode; the opener's indentation plus one level at the end of a ":" line.
    """
    offset = max(0, min(offset, len(text)))
    prefix, suffix = text[:offset], text[offset:]
    line_start = prefix.rfind("\n") + 1
    line_prefix = prefix[line_start:]
    if line_prefix.endswith("\r") and suffix.startswith("\n"):
        line_prefix = line_prefix[:-1]  # cursor between "\r" and "\n": still end of line
    eol = suffix.find("\n")
    line_suffix = (suffix if eol < 0 else suffix[:eol]).rstrip("\r")

    mode: Mode
    if not line_prefix.strip():
        mode = "block"
        if line_prefix:
            indent = line_prefix
        else:
            opener = block_opener_indent(prefix)
            if opener is not None:
                indent = opener + indent_unit(text)
            else:
                indent = _previous_line_indent(prefix, line_start)
    elif (
        line_prefix.rstrip().endswith(":")
        and not line_suffix.strip()
        and (opener := block_opener_indent(prefix)) is not None
    ):
        mode = "block"
        indent = opener + indent_unit(text)
    else:
        mode = "line"
        indent = leading_ws(line_prefix)
    return CursorContext(prefix, suffix, line_prefix, line_suffix, indent, mode)


def should_complete(ctx: CursorContext) -> bool:
    """Whether asking the model can give a useful suggestion here. The rules:

    1. Nothing to continue: the text before the cursor is blank (a prefix-only model has no
       prompt, and would invent a random file).
    2. Code right of the cursor (anything but closing brackets, quotes, ":", ","), more than
       `MAX_LINE_SUFFIX` characters of it: the model cannot see it (llama.vim's rule).
    3. Code right of the cursor on a line that is blank before it: a block suggestion would
       be glued in front of that code.
    Completing inside comments and strings is allowed (docstrings are phi-1's strength).
    """
    if not ctx.prefix.strip():
        return False
    after = ctx.line_suffix.rstrip()
    has_code = any(c not in CLOSING_CHARS for c in after)
    if has_code and len(after) > MAX_LINE_SUFFIX:
        return False
    return not (has_code and not ctx.line_prefix.strip())
