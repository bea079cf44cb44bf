"""One HumanEval run: generate each sample (or take it from `completions`), run the checks in the
sandbox `workers` at a time while the engine goes on generating, score pass@1 and pass@k, and
write samples.jsonl, summary.json and summary.md atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phi_lsp.evaluation.humaneval.problems import (
    Completions,
    Problem,
    build_program,
    is_complete,
    load_problems,
    perturb_problem,
    truncate_completion,
)
from phi_lsp.evaluation.passk import DEFAULT_KS, pass_at_ks
from phi_lsp.evaluation.perturb import NotApplicable
from phi_lsp.runtime.engines.base import Engine, GenerationRequest
from phi_lsp.sandbox import SandboxResult, run_sandboxed, sandbox_features


@dataclass(frozen=True)
class SampleResult:
    task_id: str
    sample: int
    temperature: float
    completion: str
    status: str
    detail: str
    seconds: float
    generated_tokens: int = 0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class EvalReport:
    """Scores of one run; `summary()` is what summary.json holds."""

    tasks: int
    samples: int
    temperature: float
    pass_at_1: float  # greedy sample 0
    pass_at_k: dict[int, float]  # unbiased estimator over all samples
    statuses: dict[str, int]
    wall_s: float
    generation_s: float
    out_dir: Path
    perturbation: str | None = None
    label: str | None = None
    skipped: list[str] = field(default_factory=list)
    results: list[SampleResult] = field(default_factory=list)

    def greedy_passed(self) -> dict[str, bool]:
        """task id -> whether the greedy sample passed."""
        return {r.task_id: r.passed for r in self.results if r.sample == 0}

    def summary(self) -> dict[str, Any]:
        greedy = self.greedy_passed()
        return {
            "benchmark": "HumanEval",
            "label": self.label,
            "perturbation": self.perturbation,
            "tasks": self.tasks,
            "samples_per_task": self.samples,
            "temperature": self.temperature,
            "pass@1": self.pass_at_1,
            "pass@1_note": "greedy (sample 0 at temperature 0)",
            "pass@k": {str(k): v for k, v in self.pass_at_k.items()},
            "pass@k_note": "unbiased estimator over all samples (sample 0 is the greedy one)",
            "greedy_passed": sum(greedy.values()),
            "statuses": self.statuses,
            "skipped": self.skipped,
            "wall_s": round(self.wall_s, 3),
            "generation_s": round(self.generation_s, 3),
            "sandbox": sandbox_features(),
        }


def _generate(
    engine: Engine, problem: Problem, temperature: float, max_new_tokens: int
) -> tuple[str, int]:
    """One completion from the engine, cut at the end of the function."""
    budget = min(max_new_tokens, engine.n_ctx - len(engine.tokenize(problem.prompt)))
    if budget < 1:
        raise ValueError(f"the prompt does not fit the context ({engine.n_ctx} tokens)")
    request = GenerationRequest(
        prompt=problem.prompt,
        max_new_tokens=budget,
        temperature=temperature,
        is_done=is_complete,
    )
    generation = engine.generate(request, threading.Event())
    return truncate_completion(generation.text), generation.generated_tokens


# --- the run ---------------------------------------------------------------------------------


def run_humaneval(
    engine: Engine | None,
    *,
    completions: Completions | None = None,
    limit: int | None = None,
    samples: int = 1,
    temperature: float = 0.8,
    max_new_tokens: int = 384,
    workers: int = 2,
    perturbation: str | None = None,
    out_dir: Path,
    progress: bool = True,
    timeout_s: float = 5.0,
    problems: Sequence[Problem] | None = None,
    label: str | None = None,
) -> EvalReport:
    """Generate `samples` completions per task, check them in the sandbox, write and score.

    Writes samples.jsonl (every sample), summary.json and summary.md into `out_dir`, each
    atomically. Exactly one of `engine` and `completions` supplies the completions. Tasks the
    perturbation cannot be applied to are skipped and listed in the report.
    """
    if (engine is None) == (completions is None):
        raise ValueError("give exactly one of engine and completions")
    if samples < 1 or workers < 1:
        raise ValueError("samples and workers must be at least 1")
    tasks = list(problems) if problems is not None else load_problems(limit=limit)
    if problems is not None and limit is not None:
        tasks = tasks[:limit]
    skipped: list[str] = []
    if perturbation is not None:
        tasks, skipped = _perturb_all(tasks, perturbation)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    generation_s = 0.0
    results: dict[tuple[int, int], SampleResult] = {}
    bar = _progress_bar(len(tasks) * samples, progress, perturbation)
    lock = threading.Lock()

    def execute(index: int, sample: int, temp: float, completion: str, tokens: int) -> None:
        problem = tasks[index]
        outcome: SandboxResult = run_sandboxed(build_program(problem, completion), timeout_s)
        result = SampleResult(
            problem.task_id,
            sample,
            temp,
            completion,
            outcome.status,
            outcome.detail,
            round(outcome.seconds, 3),
            tokens,
        )
        with lock:
            results[(index, sample)] = result
            if bar is not None:
                bar.update(1)

    futures: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="humaneval") as pool:
        try:
            for index, problem in enumerate(tasks):
                greedy: tuple[str, int] | None = None
                for sample in range(samples):
                    temp = 0.0 if sample == 0 else temperature
                    g0 = time.perf_counter()
                    try:
                        if completions is not None:
                            completion, tokens = completions(problem, sample), 0
                        elif temp == 0.0 and greedy is not None:
                            completion, tokens = greedy  # greedy decoding is deterministic
                        else:
                            assert engine is not None
                            completion, tokens = _generate(engine, problem, temp, max_new_tokens)
                    except Exception as exc:  # one bad generation must not end the run
                        with lock:
                            results[(index, sample)] = SampleResult(
                                problem.task_id, sample, temp, "", "error", f"generation: {exc}", 0
                            )
                            if bar is not None:
                                bar.update(1)
                        continue
                    finally:
                        generation_s += time.perf_counter() - g0
                    if temp == 0.0:
                        greedy = (completion, tokens)
                    futures.append(pool.submit(execute, index, sample, temp, completion, tokens))
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()

    ordered = [results[key] for key in sorted(results)]
    report = _score(
        tasks, ordered, samples, temperature, time.perf_counter() - t0, generation_s, out_dir
    )
    report.perturbation, report.label, report.skipped = perturbation, label, skipped
    write_report(report)
    return report


def _perturb_all(tasks: list[Problem], name: str) -> tuple[list[Problem], list[str]]:
    kept: list[Problem] = []
    skipped: list[str] = []
    for problem in tasks:
        try:
            kept.append(perturb_problem(problem, name))
        except NotApplicable:
            skipped.append(problem.task_id)
    return kept, skipped


def _progress_bar(total: int, enabled: bool, perturbation: str | None) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    desc = "HumanEval" + (f" [{perturbation}]" if perturbation else "")
    return tqdm(total=total, desc=desc, unit="sample")


def _score(
    tasks: Sequence[Problem],
    results: Sequence[SampleResult],
    samples: int,
    temperature: float,
    wall_s: float,
    generation_s: float,
    out_dir: Path,
) -> EvalReport:
    outcomes: dict[str, list[bool]] = {p.task_id: [] for p in tasks}
    for r in results:
        outcomes[r.task_id].append(r.passed)
    greedy = [r.passed for r in results if r.sample == 0]
    ks = [k for k in DEFAULT_KS if k <= samples]
    return EvalReport(
        tasks=len(tasks),
        samples=samples,
        temperature=temperature,
        pass_at_1=sum(greedy) / len(greedy) if greedy else 0.0,
        pass_at_k=pass_at_ks(outcomes, ks) if tasks else {},
        statuses=dict(Counter(r.status for r in results)),
        wall_s=wall_s,
        generation_s=generation_s,
        out_dir=out_dir,
        results=list(results),
    )


# --- output ----------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_report(report: EvalReport) -> None:
    """samples.jsonl, summary.json and summary.md in the report's out_dir."""
    lines = (json.dumps(asdict(r), ensure_ascii=False) for r in report.results)
    write_atomic(report.out_dir / "samples.jsonl", "".join(line + "\n" for line in lines))
    summary = report.summary()
    write_atomic(report.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(report.out_dir / "summary.md", _markdown(summary))


def _markdown(summary: dict[str, Any]) -> str:
    title = "HumanEval" + (f" — {summary['label']}" if summary["label"] else "")
    if summary["perturbation"]:
        title += f" (perturbation: {summary['perturbation']})"
    rows = [
        f"# {title}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| tasks | {summary['tasks']} |",
        f"| samples per task | {summary['samples_per_task']} |",
        f"| pass@1 (greedy) | {summary['pass@1']:.4f} ({summary['greedy_passed']}"
        f"/{summary['tasks']}) |",
    ]
    rows += [f"| pass@{k} (estimator) | {v:.4f} |" for k, v in summary["pass@k"].items()]
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items()))
    rows += [
        f"| statuses | {statuses} |",
        f"| skipped tasks | {len(summary['skipped'])} |",
        f"| wall time | {summary['wall_s']:.1f} s (generation {summary['generation_s']:.1f} s) |",
        f"| sandbox | {summary['sandbox']['confinement']} |",
        "",
    ]
    return "\n".join(rows)
