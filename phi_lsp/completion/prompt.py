"""The prompt for a prefix-only model: the text before the cursor, cut to a token budget.

phi-1 has no fill-in-the-middle, so the prompt is the document's prefix. When it is too long we
keep the file's import block and drop whole lines from the top of the rest. The cut point moves
in steps of `quantum` lines, so while the user types at the end of a long file the kept prompt
does not shift on every keystroke and the engine's prefix cache keeps hitting.
"""

from __future__ import annotations

from collections.abc import Callable

CountTokens = Callable[[str], int]

# How far into a file the import block is looked for, in lines.
HEAD_SCAN_LINES = 200
# A line is never tokenized beyond this many characters per budget token (bounded work for a
# 1 MB line); real tokens average 3-4 characters, whitespace runs at most ~32.
CHARS_PER_TOKEN_CAP = 32


def build_prompt(prefix: str, budget: int, count_tokens: CountTokens, quantum: int = 32) -> str:
    """Return the part of `prefix` the model sees: at most `budget` tokens, ending at the cursor."""
    if budget <= 0:
        return ""
    if len(prefix) <= budget * CHARS_PER_TOKEN_CAP and count_tokens(prefix) <= budget:
        return prefix
    lines = prefix.splitlines(keepends=True)
    head_end = import_block_end(lines)
    head = _fit_head(lines[:head_end], budget // 2, count_tokens)
    body = lines[head_end:]
    if not body:
        return _cut_chars_from_start(prefix, budget, count_tokens)
    body_budget = budget - count_tokens(head) if head else budget
    first = _first_line_that_fits(body, body_budget, count_tokens)
    # Round the cut up to a multiple of `quantum` (counted from the file's first line) so that
    # it stays put while text is added at the end; never cut into the cursor's own line.
    cut = min(-(-(head_end + first) // quantum) * quantum - head_end, len(body) - 1)
    cut = max(cut, first)
    while cut < len(body) - 1 and count_tokens(head + "".join(body[cut:])) > budget:
        cut += quantum
    cut = min(cut, len(body) - 1)
    tail = "".join(body[cut:])
    return head + _cut_chars_from_start(tail, body_budget, count_tokens)


def import_block_end(lines: list[str]) -> int:
    """Index just past the file's leading import block (0 when there is none).

    The block runs from the top of the file to the last top-level `import`/`from` line before
    the first top-level definition, so it includes the module docstring and comments, and the
    blank lines after it.
    """
    end = 0
    for i, line in enumerate(lines[:HEAD_SCAN_LINES]):
        if line.startswith(("import ", "from ")):
            end = i + 1
        elif line.startswith(("def ", "class ", "@", "async def ", "if __name__")):
            break
    while 0 < end < len(lines) and not lines[end].strip():
        end += 1  # the blank lines that separate the imports from the code belong to them
    return end


def _fit_head(head: list[str], budget: int, count_tokens: CountTokens) -> str:
    """The import block within `budget` tokens: whole, or only its import lines, or none."""
    text = "".join(head)
    if not text or count_tokens(text) <= budget:
        return text
    imports = "".join(line for line in head if line.startswith(("import ", "from ")))
    return imports if count_tokens(imports) <= budget else ""


def _first_line_that_fits(lines: list[str], budget: int, count_tokens: CountTokens) -> int:
    """Smallest index i such that lines[i:] (counted line by line) fits in `budget` tokens."""
    total = 0
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i][-budget * CHARS_PER_TOKEN_CAP :]
        total += count_tokens(line)
        if total > budget:
            return min(i + 1, len(lines) - 1)
    return 0


def _cut_chars_from_start(text: str, budget: int, count_tokens: CountTokens) -> str:
    """Drop characters from the start of `text` until it fits (only a single huge line needs it)."""
    text = text[-budget * CHARS_PER_TOKEN_CAP :] if budget > 0 else ""
    while text and count_tokens(text) > budget:
        text = text[max(1, (len(text) - budget * 2)) :] if len(text) > budget * 4 else text[8:]
    return text
