"""Turn phi-1's raw continuation of the prefix into the text to insert at the cursor.

phi-1 only sees the text before the cursor and happily writes the rest of the file, so the
suggestion has to be cut where the cursor's line or block ends, cleaned of text the document
already has after the cursor, and checked to be Python that tokenizes. The rules run in this
order (each a function below, each docstring says why):

1. `normalise`             CRLF/CR → LF.
2. `first_line`            line mode: finish the cursor's line only.
3. `limit_block`           block mode: only the lines of the cursor's block, one definition.
4. `cut_repetition`        the same line 3+ times in a row: the model is looping.
   `drop_suffix_lines`     block mode: trailing lines the document already has below.
   `drop_line_suffix_overlap`  the end of the text repeats what is right of the cursor.
5. `strip_whitespace`      trailing whitespace; blank → "".
6. `ensure_tokenizes`      a multi-line result must tokenize; drop lines from the end until so.

`is_complete` tells the engine, after each token, when more tokens cannot change the result.
"""

from __future__ import annotations

import io
import re
import textwrap
import tokenize

from phi_lsp.completion.context import (
    CursorContext,
    block_opener_indent,
    leading_ws,
    scan,
    scan_cached,
    width,
)

# A line that starts a new top-level unit: decorator, def, class, `if __name__ ...`. The
# keyword must be followed by a non-word character so a partial line ("de", "default")
# never matches and a match stays a match as the line grows (is_complete relies on it).
_NEW_UNIT = re.compile(r"@|(?:async\s+)?def\W|class\W|if\s+__name__\W")
_DEFINITION = re.compile(r"(?:async\s+)?def\W|class\W")
# A line repeated this many times in a row (blank lines aside) means the model is looping.
REPEAT_LIMIT = 3


# --- 1. normalise ----------------------------------------------------------------------------


def normalise(completion: str) -> str:
    """CRLF (and a lone CR) → LF: the rules below split on "\\n"; the server restores CRLF.

    A lone CR is converted too so that normalising a partial generation always gives a prefix
    of normalising the whole one ("a\\r" then "a\\r\\n"), which `is_complete` relies on.
    A trailing U+FFFD is half a character cut off by the token limit, never worth showing.
    """
    return completion.replace("\r\n", "\n").replace("\r", "\n").rstrip("\ufffd")


# --- 2. line mode ----------------------------------------------------------------------------


def first_line(text: str) -> str:
    """Line mode: the cursor is mid-line and the suggestion finishes that line, nothing more."""
    return text.split("\n", 1)[0]


# --- 3. block mode ---------------------------------------------------------------------------


def _full_line(lines: list[str], i: int, ctx: CursorContext) -> str:
    """Line `i` as it will read in the document: line 0 continues the cursor's line."""
    return ctx.line_prefix + lines[0] if i == 0 else lines[i]


def _opener_width(ctx: CursorContext) -> int | None:
    """Indentation width of the block opener the completion writes the body of, if any.

    At the end of a ":" line, or on an empty line under one, the body must be indented deeper
    than the opener. On a whitespace-only line the cursor itself says where the block is.
    """
    if ctx.line_prefix and not ctx.line_prefix.strip():
        return None
    opener = block_opener_indent(ctx.prefix)
    if opener is None and ctx.line_prefix.strip():
        opener = leading_ws(ctx.line_prefix)  # a hand-made context: trust its line
    return None if opener is None else width(opener)


def block_end(lines: list[str], ctx: CursorContext) -> int | None:
    """Index of the first line of `lines` that is no longer part of the cursor's block.

    A line ends the block when it is non-blank and
    - indented less than the block (the enclosing block goes on: `else:`, the next `def`);
    - or, at the block's own level, starts a second unit (decorator, def, class,
      `if __name__`) after a first one: one definition per suggestion, else phi-1 writes
      the rest of the file.
    The block's indentation is ctx.indent; where the model writes the indentation itself
    (on an empty line, or after a ":"), its first line decides: after a ":" it must be deeper
    than the opener (else the body is empty), on an empty line it may dedent below the guess
    (the user on a blank column-0 line after a function may be starting the next one).
    The decision on a line is final once the line has a non-blank character and, for the
    unit rule, the keyword matched; `is_complete` relies on that.
    """
    after_opener_line = bool(ctx.line_prefix.strip())  # line 0 is the ":" line's rest
    opener_w = _opener_width(ctx)
    block_w: int | None = None if not ctx.line_prefix or after_opener_line else width(ctx.indent)
    units = 0
    in_decorators = False
    last = len(lines) - 1
    for i in range(1 if after_opener_line else 0, len(lines)):
        line = _full_line(lines, i, ctx)
        if not line.strip():
            continue
        w = width(leading_ws(line))
        if block_w is None:
            if opener_w is not None and w <= opener_w:
                return i
            block_w = w if after_opener_line else min(w, width(ctx.indent))
        elif w < block_w:
            return i
        if w != block_w:
            continue
        code = line.lstrip() + ("\n" if i < last else "")
        if not _NEW_UNIT.match(code):
            continue
        if in_decorators:
            in_decorators = not _DEFINITION.match(code)
        elif units:
            return i
        else:
            units, in_decorators = 1, code.startswith("@")
    return None


def _drop_trailing_blank(lines: list[str], ctx: CursorContext) -> list[str]:
    """Without trailing blank lines: they would only push the document's next line down."""
    lines = list(lines)
    while lines and not _full_line(lines, len(lines) - 1, ctx).strip():
        lines.pop()
    return lines


def limit_block(text: str, ctx: CursorContext) -> str:
    """Block mode: keep the lines that belong to the cursor's block (see `block_end`)."""
    lines = text.split("\n")
    end = block_end(lines, ctx)
    if end is not None:
        lines = lines[:end]
    return "\n".join(_drop_trailing_blank(lines, ctx)) if lines else ""


# --- 4. repetition ---------------------------------------------------------------------------


def _repeat_start(full: list[str]) -> int | None:
    """Index of the first line of the first run of REPEAT_LIMIT equal non-blank lines."""
    run_start, run_len, prev = 0, 0, None
    for i, line in enumerate(full):
        line = line.rstrip()
        if not line:
            continue
        if line == prev:
            run_len += 1
        else:
            run_start, run_len, prev = i, 1, line
        if run_len >= REPEAT_LIMIT:
            return run_start
    return None


def cut_repetition(text: str, ctx: CursorContext) -> str:
    """Cut a looping completion after the first line of a run of equal lines (Tabby's
    removeRepetitiveLines): greedy decoding that repeats a line 3 times will not stop.

    Lines compare with their indentation, so nested closing brackets do not count.
    """
    lines = text.split("\n")
    start = _repeat_start([_full_line(lines, i, ctx) for i in range(len(lines))])
    return text if start is None else "\n".join(lines[: start + 1])


def _next_lines(suffix: str, n: int) -> list[str]:
    """The first `n` non-blank lines after the cursor's line (rstripped), read lazily."""
    out: list[str] = []
    pos = suffix.find("\n") + 1
    while pos and pos <= len(suffix) and len(out) < n:
        end = suffix.find("\n", pos)
        line = suffix[pos : len(suffix) if end < 0 else end].rstrip()
        if line:
            out.append(line)
        pos = end + 1
    return out


def drop_suffix_lines(text: str, ctx: CursorContext) -> str:
    """Block mode: drop trailing lines that the document already has right below the cursor.

    A prefix-only model often writes the block and then the lines that follow it in the file;
    those lines are compared with their indentation (a `return x` at another level is not the
    same line).
    """
    lines = text.split("\n")
    content = [i for i in range(len(lines)) if _full_line(lines, i, ctx).strip()]
    below = _next_lines(ctx.suffix, len(content))
    for m in range(min(len(content), len(below)), 0, -1):
        tail = [_full_line(lines, i, ctx).rstrip() for i in content[-m:]]
        if tail == below[:m]:
            return "\n".join(_drop_trailing_blank(lines[: content[-m]], ctx))
    return text


def _statement_base(ctx: CursorContext) -> str:
    """The cursor's logical line up to the cursor (with earlier lines of the statement), LF."""
    line_start = ctx.prefix.rfind("\n") + 1
    start = scan_cached(ctx.prefix).stmt_start
    return normalise(ctx.prefix[start:line_start]) + ctx.line_prefix


def _imbalance(source: str) -> int:
    """Brackets/strings left open plus brackets closing nothing: 0 for a balanced line."""
    st = scan(source)
    return len(st.open_brackets) + st.unmatched_closers + (st.string_start is not None)


def drop_line_suffix_overlap(text: str, ctx: CursorContext) -> str:
    """Drop the end of the text that repeats the start of what is right of the cursor.

    The model writes `x)` when `)` is already after the cursor (editors auto-close brackets
    and quotes). The longest such overlap is dropped when the whole line suffix is repeated,
    unless that unbalances the statement (`print(|)` + `foo()`: that `)` is the model's own);
    a partial overlap only when dropping it balances the statement (`if f(|):` + `x)`).
    """
    wanted = ctx.line_suffix.strip()
    body = text.rstrip()
    if not wanted or not body:
        return text
    base, after = _statement_base(ctx), ctx.line_suffix
    for k in range(len(wanted), 0, -1):
        if not body.endswith(wanted[:k]):
            continue
        kept = body[:-k]
        with_tail, without = _imbalance(base + body + after), _imbalance(base + kept + after)
        if without < with_tail or (k == len(wanted) and without == with_tail):
            return kept
    return text


# --- 5. whitespace ---------------------------------------------------------------------------


def strip_whitespace(text: str) -> str:
    """Strip trailing whitespace of each line and of the result; "" when nothing is left.

    Trailing spaces are invisible noise in ghost text and get flagged by linters.
    """
    text = "\n".join(line.rstrip() for line in text.split("\n")).rstrip()
    return text if text.strip() else ""


# --- 6. tokenize -----------------------------------------------------------------------------


def _tokenizes(base: str, body: str) -> bool:
    """Whether `base + body` tokenizes as Python, brackets/strings the base left open aside.

    `base` is the cursor's statement before the cursor, so `body` is checked where it goes:
    a completion inside `foo(` or a docstring may leave those open (the document closes
    them after the cursor), but must not leave open anything of its own.
    """
    source = base + body
    try:
        for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(source)).readline):
            if tok.type == tokenize.ERRORTOKEN and tok.string.strip():
                return False  # e.g. an unterminated one-line string (Python < 3.12)
    except SyntaxError:  # IndentationError included
        return False
    except tokenize.TokenError as exc:
        if "EOF" not in str(exc.args[0]):
            return False  # Python >= 3.12 reports other lexical errors this way
        st = scan(source)
        still_open = [*st.open_brackets, *([] if st.string_start is None else [st.string_start])]
        if not still_open or any(pos >= len(base) for pos in still_open):
            return False
    # Python >= 3.12 accepts a stray ")"; older versions do not. Be strict on all.
    return scan(source).unmatched_closers <= scan(base).unmatched_closers


def ensure_tokenizes(text: str, ctx: CursorContext) -> str:
    """A multi-line result must tokenize; drop lines from the end until it does ("" if none).

    Catches a generation cut off by the token limit inside a string or a bracket, and a bad
    dedent. A single line is not checked: it often continues an open bracket of the prefix.
    """
    if "\n" not in text:
        return text
    base = _statement_base(ctx)
    lines = text.split("\n")
    while lines:
        candidate = strip_whitespace("\n".join(lines))
        if candidate and _tokenizes(base, candidate):
            return candidate
        lines.pop()
    return ""


# --- public API ------------------------------------------------------------------------------


def postprocess(completion: str, ctx: CursorContext) -> str:
    """The text to insert at the cursor for the raw model output `completion` ("" = nothing)."""
    text = normalise(completion)
    text = first_line(text) if ctx.mode == "line" else limit_block(text, ctx)
    text = cut_repetition(text, ctx)
    if ctx.mode == "block":
        text = drop_suffix_lines(text, ctx)
    text = drop_line_suffix_overlap(text, ctx)
    text = strip_whitespace(text)
    return ensure_tokenizes(text, ctx)


def is_complete(completion: str, ctx: CursorContext) -> bool:
    """Whether more tokens after the partial `completion` cannot change `postprocess`'s result.

    Line mode: once the line is terminated. Block mode: once a line that ends the block has
    begun (see `block_end`: its decision is final from its first non-blank character), or a
    run of repeated lines is complete (all of them terminated by a newline). Everything kept
    before such a point is terminated, so the later rules see the same text.
    """
    text = normalise(completion)
    if ctx.mode == "line":
        return "\n" in text
    lines = text.split("\n")
    if block_end(lines, ctx) is not None:
        return True
    full = [_full_line(lines, i, ctx) for i in range(len(lines) - 1)]
    return _repeat_start(full) is not None
