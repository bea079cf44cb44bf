"""The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained
on Code"), and its mean over tasks.

With n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance that k samples
drawn without replacement from the n contain at least one pass. Using c/n repeatedly (the naive
1 - (1 - c/n)^k) is biased; the binomials overflow floats for large n, so the ratio is computed
as the product prod_{i=n-c+1}^{n} (1 - k/i).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

DEFAULT_KS = (1, 10, 100)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k for one task with `c` passing samples out of `n`."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over tasks given as (n, c) pairs; every task needs n >= k."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise ValueError("no tasks")
    return sum(values) / len(values)


def pass_at_ks(
    results: Mapping[str, Sequence[bool]], ks: Iterable[int] = DEFAULT_KS
) -> dict[int, float]:
    """pass@k for each k that every task has enough samples for (task id -> sample outcomes)."""
    if not results:
        return {}
    counts = [(len(outcomes), sum(outcomes)) for outcomes in results.values()]
    smallest = min(n for n, _ in counts)
    return {k: mean_pass_at_k(counts, k) for k in ks if 1 <= k <= smallest}
