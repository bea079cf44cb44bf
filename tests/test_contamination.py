"""Contamination: planted HumanEval solutions are found, unrelated code is not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from phi_lsp.evaluation.contamination import (
    NGramIndex,
    code_tokens,
    find_near_duplicates,
    ngram_hashes,
)
from testkit.tinymodel import training_files

# HumanEval/0 (has_close_elements), variables renamed, reformatted, commented, no docstring.
PLANTED_RENAMED = '''
import os
from typing import List

# a helper found somewhere on the internet
def close_pairs(vals: List[float], limit: float) -> bool:
    """Are two values near each other?"""
    for i, x in enumerate(vals):   # outer loop
        for j, y in enumerate(vals):
            if i != j:
                d = abs(x - y)
                if d < limit: return True
    return False


def unrelated():
    return os.getcwd()
'''

# The same without type hints and with different line breaks.
PLANTED_BARE = """
def close_pairs(vals, limit):
    for i, x in enumerate(vals):
        for j, y in enumerate(vals):
            if i != j:
                d = abs(
                    x - y
                )
                if d < limit:
                    return True
    return False
"""


@pytest.fixture(scope="module")
def index() -> NGramIndex:
    return NGramIndex.from_humaneval()


def test_layout_and_comments_do_not_matter() -> None:
    a = "def f(a, b):\n    # add\n    return a + b  # sum\n"
    b = "def f(a,\n      b): return a+b\n"
    assert code_tokens(a) == code_tokens(b)
    assert code_tokens("x = 'it'\n") == code_tokens('x = "it"\n')


def test_consistent_renaming_matches_but_different_structure_does_not() -> None:
    base = ngram_hashes(code_tokens("total = total + item * item\n"), n=5)
    renamed = ngram_hashes(code_tokens("acc = acc + v * v\n"), n=5)
    shuffled = ngram_hashes(code_tokens("acc = v + acc * v\n"), n=5)
    assert base == renamed
    assert base != shuffled


def test_planted_copies_are_found(index: NGramIndex, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "pkg" / "deep").mkdir(parents=True)
    (corpus / "pkg" / "deep" / "helpers.py").write_text(PLANTED_RENAMED)
    (corpus / "bare.py").write_text(PLANTED_BARE)
    (corpus / "notes.txt").write_text(PLANTED_RENAMED)  # not Python: not scanned
    for src in training_files()[:20]:
        shutil.copy(src, corpus / "pkg" / src.name)

    matches = find_near_duplicates([corpus], index=index)
    found = {(m.task_id, m.path.name) for m in matches}
    assert found == {("HumanEval/0", "helpers.py"), ("HumanEval/0", "bare.py")}
    assert matches[0].overlap > 0.9 and matches[0].path.name == "helpers.py"

    assert index.overlap(PLANTED_RENAMED) == ("HumanEval/0", pytest.approx(1.0))
    task, score = index.overlap(PLANTED_BARE)
    assert task == "HumanEval/0" and score >= 0.5


def test_stdlib_is_not_contaminated(index: NGramIndex) -> None:
    files = training_files()[:60]
    assert find_near_duplicates(files, index=index) == []


def test_overlap_of_unrelated_or_broken_code(index: NGramIndex) -> None:
    assert index.overlap("") == (None, 0.0)
    _, score = index.overlap("def f(:\n    return [1, 2\n")
    assert score < 0.5
    task, score = index.overlap("class Point:\n    def __init__(self, x):\n        self.x = x\n")
    assert score < 0.5
