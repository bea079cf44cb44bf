"""Robustness: greedy pass@1 on the original prompts and under each prompt perturbation, the drop
on the same tasks, and robustness.json/robustness.md summarising it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from phi_lsp.evaluation.humaneval.problems import Completions
from phi_lsp.evaluation.humaneval.run import run_humaneval, write_atomic
from phi_lsp.evaluation.perturb import PERTURBATIONS
from phi_lsp.runtime.engines.base import Engine


@dataclass(frozen=True)
class PerturbationScore:
    name: str
    tasks: int
    pass_at_1: float
    original_pass_at_1: float  # on the same tasks
    skipped: int

    @property
    def drop(self) -> float:
        return self.original_pass_at_1 - self.pass_at_1


def run_robustness(
    engine: Engine | None,
    *,
    out_dir: Path,
    perturbations: Iterable[str] | None = None,
    completions: Completions | None = None,
    limit: int | None = None,
    max_new_tokens: int = 384,
    workers: int = 2,
    progress: bool = True,
    timeout_s: float = 5.0,
) -> list[PerturbationScore]:
    """Greedy pass@1 on the original prompts and under each perturbation, and the drop.

    Each run goes to out_dir/<name>/ (the original to out_dir/original/); robustness.json and
    robustness.md summarise. The drop compares the same tasks (skipped ones left out of both).
    """
    names = list(perturbations) if perturbations is not None else list(PERTURBATIONS)
    common: dict[str, Any] = dict(
        completions=completions,
        limit=limit,
        max_new_tokens=max_new_tokens,
        workers=workers,
        progress=progress,
        timeout_s=timeout_s,
    )
    out_dir = Path(out_dir)
    original = run_humaneval(engine, out_dir=out_dir / "original", **common).greedy_passed()
    scores: list[PerturbationScore] = []
    for name in names:
        report = run_humaneval(engine, perturbation=name, out_dir=out_dir / name, **common)
        passed = report.greedy_passed()
        base = [original[task] for task in passed]
        scores.append(
            PerturbationScore(
                name=name,
                tasks=len(passed),
                pass_at_1=sum(passed.values()) / len(passed) if passed else 0.0,
                original_pass_at_1=sum(base) / len(base) if base else 0.0,
                skipped=len(report.skipped),
            )
        )
    rows = [{**asdict(s), "drop": s.drop} for s in scores]
    write_atomic(out_dir / "robustness.json", json.dumps(rows, indent=2) + "\n")
    table = [
        "| perturbation | tasks | pass@1 | original pass@1 | drop | skipped |",
        "|---|---|---|---|---|---|",
    ]
    table += [
        f"| {s.name} | {s.tasks} | {s.pass_at_1:.4f} | {s.original_pass_at_1:.4f} "
        f"| {s.drop:+.4f} | {s.skipped} |"
        for s in scores
    ]
    write_atomic(out_dir / "robustness.md", "# HumanEval robustness\n\n" + "\n".join(table) + "\n")
    return scores
