"""Exact and near-duplicate removal, and HumanEval decontamination.

Exercises are visited in a fixed order (the caller's, sorted by source, path and line); the
first of a group of duplicates is kept.

- **Exact**: the same code once indentation and blank lines are ignored (a function copied
  into another file or class).
- **Near**: MinHash (datasketch) over 5-token shingles of the code's Python tokens, comments,
  docstrings and layout dropped; a candidate from the LSH index counts when its estimated
  Jaccard similarity reaches `near_threshold`.
- **Decontamination**: `phi_lsp.evaluation.contamination.NGramIndex` (13-grams with identifiers
  numbered inside each n-gram, so renamed variables still match), the same code the eval uses:
  an exercise that holds at least `contamination_threshold` of a HumanEval task's n-grams goes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from phi_lsp.evaluation.contamination import code_tokens

if TYPE_CHECKING:
    from phi_lsp.evaluation.contamination import NGramIndex
    from phi_lsp.finetune.exercise import Exercise

SHINGLE = 5
NUM_PERM = 128
MINHASH_SEED = 1


@dataclass
class DedupeResult:
    kept: list[Exercise]
    exact: list[tuple[str, str]] = field(default_factory=list)  # (dropped id, kept id)
    near: list[tuple[str, str, float]] = field(default_factory=list)  # (dropped, kept, jaccard)


def exact_key(code: str) -> str:
    lines = (line.strip() for line in code.splitlines())
    return hashlib.sha256("\n".join(line for line in lines if line).encode()).hexdigest()


def shingles(code: str, size: int = SHINGLE) -> set[bytes]:
    tokens = [text for _, text in code_tokens(code)]
    if len(tokens) <= size:
        return {"\x1f".join(tokens).encode()}
    return {"\x1f".join(tokens[i : i + size]).encode() for i in range(len(tokens) - size + 1)}


def deduplicate(exercises: Sequence[Exercise], near_threshold: float = 0.8) -> DedupeResult:
    from datasketch import MinHash, MinHashLSH

    result = DedupeResult([])
    seen: dict[str, str] = {}
    lsh = MinHashLSH(threshold=near_threshold, num_perm=NUM_PERM)
    template = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
    # datasketch 2 wants the hashing scheme named when permutations are shared; 1.x has none.
    scheme = {"scheme": template.scheme} if hasattr(template, "scheme") else {}
    signatures: dict[str, Any] = {}
    for ex in exercises:
        key = exact_key(ex.dedupe_code)
        if key in seen:
            result.exact.append((ex.id, seen[key]))
            continue
        seen[key] = ex.id
        sig = MinHash(
            num_perm=NUM_PERM, seed=MINHASH_SEED, permutations=template.permutations, **scheme
        )
        sig.update_batch(sorted(shingles(ex.dedupe_code)))
        best: tuple[float, str] | None = None
        for other in sorted(lsh.query(sig)):
            score = float(sig.jaccard(signatures[other]))
            if score >= near_threshold and (best is None or score > best[0]):
                best = (score, other)
        if best is not None:
            result.near.append((ex.id, best[1], round(best[0], 4)))
            continue
        lsh.insert(ex.id, sig)
        signatures[ex.id] = sig
        result.kept.append(ex)
    return result


@dataclass(frozen=True)
class Contaminated:
    id: str
    task_id: str
    overlap: float


def decontaminate(
    exercises: Sequence[Exercise], index: NGramIndex, threshold: float = 0.5
) -> tuple[list[Exercise], list[Contaminated]]:
    """(clean exercises, the dropped ones with the HumanEval task they overlap)."""
    kept: list[Exercise] = []
    dropped: list[Contaminated] = []
    for ex in exercises:
        task, overlap = index.overlap(ex.code)
        if task is not None and overlap >= threshold:
            dropped.append(Contaminated(ex.id, task, round(overlap, 4)))
        else:
            kept.append(ex)
    return kept, dropped
