"""HumanEval (Chen et al. 2021) for phi-lsp's engines: generate, run the checks sandboxed, score.

The prompts are used as they are, which is phi-1's own format (imports, signature, docstring).
Sample 0 of every task is greedy and gives pass@1, the number phi-1 reports (50.6 %); with
`samples=n` the other n-1 samples are drawn at `temperature` and pass@k (k <= n) is estimated
from all n with the unbiased estimator. A completion ends where the function does: at the first
line that starts at column 0 with something other than whitespace (`def`, `class`, `if`,
`print`, `#`, ...), and is cut there.

Generated code runs only through `phi_lsp.sandbox.run_sandboxed` (a separate, limited process),
`workers` programs at a time, while the engine goes on generating.

`problems` loads and perturbs the tasks and cuts completions, `run` generates, checks, scores
and writes a run, and `robustness` compares runs under the prompt perturbations; this package
re-exports what callers use.
"""

from __future__ import annotations

from phi_lsp.evaluation.humaneval.problems import (
    Completions,
    Problem,
    build_program,
    dataset_path,
    is_complete,
    load_problems,
    perturb_problem,
    truncate_completion,
)
from phi_lsp.evaluation.humaneval.robustness import PerturbationScore, run_robustness
from phi_lsp.evaluation.humaneval.run import (
    EvalReport,
    SampleResult,
    run_humaneval,
    write_atomic,
    write_report,
)

__all__ = [
    "Completions",
    "EvalReport",
    "PerturbationScore",
    "Problem",
    "SampleResult",
    "build_program",
    "dataset_path",
    "is_complete",
    "load_problems",
    "perturb_problem",
    "run_humaneval",
    "run_robustness",
    "truncate_completion",
    "write_atomic",
    "write_report",
]
