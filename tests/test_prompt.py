"""The prefix-only prompt: budget, import block, and stability while typing at the end."""

from phi_lsp.completion.prompt import build_prompt, import_block_end


def count(text: str) -> int:
    """A stand-in tokenizer with BPE-like density: one token per 4 characters, rounded up."""
    return -(-len(text) // 4)


IMPORTS = '"""Module docstring."""\nimport os\nfrom typing import Any\n\n'
BODY = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(300))


def test_short_prefix_is_the_prompt() -> None:
    assert build_prompt("import os\nx = 1", 100, count) == "import os\nx = 1"


def test_long_file_keeps_imports_and_the_end_within_budget() -> None:
    prefix = IMPORTS + BODY + "def g(y):\n    ret"
    prompt = build_prompt(prefix, 300, count)
    assert count(prompt) <= 300
    assert prompt.startswith(IMPORTS)
    assert prompt.endswith("def g(y):\n    ret")
    kept = prompt[len(IMPORTS) :]
    assert prefix.endswith(kept) and kept.startswith("def f")  # cut at a line boundary


def test_prompt_start_is_stable_while_typing_at_the_end() -> None:
    base = IMPORTS + BODY
    typed = "def new_function(alpha, beta):\n    total = alpha + beta\n    return total * 2\n"
    prompts = [build_prompt(base + typed[:n], 400, count) for n in range(len(typed) + 1)]
    starts = {p[: len(IMPORTS) + 200] for p in prompts}
    # The cut moves in steps of whole line groups: typing ~80 characters moves it at most once.
    assert len(starts) <= 2
    assert all(count(p) <= 400 for p in prompts)


def test_import_block_end() -> None:
    lines = IMPORTS.splitlines(keepends=True) + ["def f():\n", "import late\n"]
    assert import_block_end(lines) == 4
    assert import_block_end(["x = 1\n", "def f():\n"]) == 0


def test_single_huge_line_is_cut_from_its_start() -> None:
    prefix = "x = '" + "a" * 100_000
    prompt = build_prompt(prefix, 50, count)
    assert 0 < count(prompt) <= 50 and prefix.endswith(prompt)


def test_huge_import_block_does_not_crowd_out_the_code() -> None:
    prefix = "".join(f"import mod{i}\n" for i in range(500)) + "def f():\n    return 1\n"
    prompt = build_prompt(prefix, 200, count)
    assert count(prompt) <= 200 and prompt.endswith("def f():\n    return 1\n")
