"""The HumanEval harness on known answers, the pass@k estimator, and prompt perturbations."""

from __future__ import annotations

import ast
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from phi_lsp.evaluation.humaneval import (
    Problem,
    build_program,
    is_complete,
    load_problems,
    perturb_problem,
    run_humaneval,
    run_robustness,
    truncate_completion,
)
from phi_lsp.evaluation.passk import mean_pass_at_k, pass_at_k, pass_at_ks
from phi_lsp.evaluation.perturb import PERTURBATIONS, NotApplicable, rename_map, tabify
from phi_lsp.sandbox import SandboxResult, run_sandboxed
from testkit.tinymodel import TinyModel


def canonical(problem: Problem, sample: int) -> str:
    return problem.canonical_solution


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return load_problems()


# --- pass@k ----------------------------------------------------------------------------------


def test_pass_at_k_hand_computed() -> None:
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(10, 0, 10) == 0.0
    assert pass_at_k(10, 8, 3) == 1.0  # fewer than k failures: every draw holds a pass
    assert pass_at_k(1, 1, 1) == 1.0
    # Large n: the product form stays finite where the binomials would not.
    assert pass_at_k(1000, 1, 100) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_pass_at_k_aggregates_over_tasks() -> None:
    assert mean_pass_at_k([(5, 2), (5, 0)], 1) == pytest.approx(0.2)
    results = {"a": [True, False, False, False], "b": [False] * 4, "c": [True] * 4}
    scores = pass_at_ks(results, ks=(1, 2, 10))
    assert set(scores) == {1, 2}  # pass@10 needs 10 samples per task
    assert scores[1] == pytest.approx((0.25 + 0 + 1) / 3)
    assert scores[2] == pytest.approx((0.5 + 0 + 1) / 3)


# --- completions -----------------------------------------------------------------------------


def test_completion_is_cut_at_the_end_of_the_function() -> None:
    body = "    return 1\n\n    # still inside\n"
    assert truncate_completion(body + "\ndef helper():\n    pass\n") == body
    for tail in ("class A:", "if __name__ == '__main__':", "print(f(1))", "# test", "f(1)"):
        assert truncate_completion(body + tail + "\n") == body[:-1]
        assert is_complete(body + tail[0])
    assert truncate_completion("def g():\n    pass\n") == ""
    assert not is_complete(body) and not is_complete("")
    assert truncate_completion("    x = 1\r\n    return x\r\n") == "    x = 1\n    return x\n"


def test_canonical_solutions_survive_truncation(problems: list[Problem]) -> None:
    for p in problems:
        assert truncate_completion(p.canonical_solution) == p.canonical_solution, p.task_id


def test_program_layout(problems: list[Problem]) -> None:
    program = build_program(problems[0], "    return True\n")
    assert program.startswith(problems[0].prompt + "    return True\n\n")
    assert program.rstrip().endswith("check(has_close_elements)")


# --- the harness on known answers ------------------------------------------------------------


@pytest.mark.slow
def test_canonical_solutions_pass_all_164(problems: list[Problem], tmp_path: Path) -> None:
    report = run_humaneval(None, completions=canonical, out_dir=tmp_path, progress=False)
    failures = [(r.task_id, r.detail) for r in report.results if not r.passed]
    assert failures == []
    assert report.tasks == 164 and report.pass_at_1 == 1.0 and report.pass_at_k == {1: 1.0}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["pass@1"] == 1.0 and summary["greedy_passed"] == 164
    assert summary["statuses"] == {"passed": 164}


def test_empty_bodies_score_zero(tmp_path: Path) -> None:
    report = run_humaneval(
        None, completions=lambda p, i: "    pass\n", limit=40, out_dir=tmp_path, progress=False
    )
    assert report.tasks == 40 and report.pass_at_1 == 0.0
    assert report.statuses == {"failed": 40}
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 40
    first = json.loads(lines[0])
    assert first["task_id"] == "HumanEval/0" and first["status"] == "failed"
    assert {"completion", "detail", "sample"} <= set(first)
    markdown = (tmp_path / "summary.md").read_text()
    assert "pass@1 (greedy) | 0.0000 (0/40)" in markdown
    # The report names the confinement the checks ran under.
    sandbox = json.loads((tmp_path / "summary.json").read_text())["sandbox"]
    assert f"| sandbox | {sandbox['confinement']} |" in markdown
    if os.environ.get("CI") == "true":  # CI runs on Linux with Landlock and seccomp
        assert sandbox["files"] == "landlock" and sandbox["process_limit"], sandbox
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


MISBEHAVING = {
    "loop": ("    while True:\n        pass\n", "timeout"),
    "socket": (
        "    import socket\n    socket.create_connection(('example.com', 80))\n",
        "error",
    ),
    "alloc": ("    hog = []\n    while True:\n        hog.append(bytearray(10**7))\n", "error"),
    "fork": ("    import os\n    os.fork()\n    return None\n", "error"),
    "spawn": ("    import subprocess\n    subprocess.run(['sleep', '30'])\n", "error"),
    "huge_file": (
        "    with open('huge.bin', 'wb') as f:\n        while True:\n"
        "            f.write(b'x' * 2**20)\n",
        "error",
    ),
}


def test_misbehaving_solutions_are_stopped(problems: list[Problem], tmp_path: Path) -> None:
    """Each bad body fails with the right status; the good ones around it still pass."""
    kinds = list(MISBEHAVING)
    tasks = problems[: 2 * len(kinds)]

    def completions(problem: Problem, sample: int) -> str:
        index = tasks.index(problem)
        if index % 2:
            return problem.canonical_solution
        return MISBEHAVING[kinds[index // 2]][0]

    report = run_humaneval(
        None,
        completions=completions,
        problems=tasks,
        out_dir=tmp_path,
        progress=False,
        timeout_s=2.0,
    )
    by_task = {r.task_id: r for r in report.results}
    for i, kind in enumerate(kinds):
        bad = by_task[tasks[2 * i].task_id]
        assert bad.status == MISBEHAVING[kind][1], (kind, bad.detail)
        assert by_task[tasks[2 * i + 1].task_id].passed
    assert report.pass_at_1 == pytest.approx(0.5)
    assert report.statuses == {"passed": 6, "timeout": 1, "error": 5}


def test_samples_and_pass_at_k(problems: list[Problem], tmp_path: Path) -> None:
    """Sample 0 decides pass@1; the estimator uses all samples."""

    def completions(problem: Problem, sample: int) -> str:
        return problem.canonical_solution if sample in (1, 2) else "    pass\n"

    report = run_humaneval(
        None, completions=completions, limit=2, samples=4, out_dir=tmp_path, progress=False
    )
    assert report.pass_at_1 == 0.0
    assert report.pass_at_k[1] == pytest.approx(0.5)
    assert set(report.pass_at_k) == {1}
    assert [(r.sample, r.temperature) for r in report.results[:4]] == [
        (0, 0.0),
        (1, 0.8),
        (2, 0.8),
        (3, 0.8),
    ]


def test_tiny_model_run(tiny_model: TinyModel, tmp_path: Path) -> None:
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2)
    try:
        report = run_humaneval(
            engine,
            limit=3,
            samples=2,
            max_new_tokens=64,
            out_dir=tmp_path,
            progress=False,
            label="tiny",
        )
    finally:
        engine.close()
    assert report.tasks == 3 and len(report.results) == 6
    assert report.pass_at_1 == 0.0  # random weights
    assert sum(report.statuses.values()) == 6
    for name in ("samples.jsonl", "summary.json", "summary.md"):
        assert (tmp_path / name).is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["label"] == "tiny" and summary["samples_per_task"] == 2
    for r in report.results:
        assert truncate_completion(r.completion) == r.completion


# --- perturbations ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_perturbed_prompts_are_valid_and_changed(name: str, problems: list[Problem]) -> None:
    changed = 0
    for p in problems:
        prompt = PERTURBATIONS[name](p.prompt, p.entry_point)
        ast.parse(prompt)
        assert prompt.endswith('"""\n') or prompt.endswith("'''\n"), p.task_id
        changed += prompt != p.prompt
    assert changed >= 100, f"{name} changed only {changed} of 164 prompts"


@pytest.mark.slow
def test_perturbations_keep_canonical_solutions_passing(problems: list[Problem]) -> None:
    """Every perturbation of every task, with its adapted canonical solution, still passes.

    To keep this fast, one sandboxed process per task runs the task's five perturbed programs,
    each compiled and executed on its own in a fresh namespace (inside the sandbox).
    """
    names = list(PERTURBATIONS)
    skipped: dict[str, list[str]] = {name: [] for name in names}

    def batch_of(problem: Problem) -> str | None:
        programs = []
        for name in names:
            try:
                perturbed = perturb_problem(problem, name)
            except NotApplicable:
                skipped[name].append(problem.task_id)
                continue
            assert perturbed.test == problem.test
            programs.append((name, build_program(perturbed, perturbed.canonical_solution)))
        if not programs:
            return None
        return (
            f"PROGRAMS = {programs!r}\n"
            "for name, source in PROGRAMS:\n"
            "    print(name)\n"
            "    exec(compile(source, name, 'exec'), {'__name__': '__main__'})\n"
        )

    def check(task: tuple[str, str | None]) -> tuple[str, SandboxResult | None]:
        task_id, batch = task
        return task_id, run_sandboxed(batch, timeout_s=20.0) if batch else None

    # The perturbations (ast.parse) run here, on one thread: CPython 3.11's AST conversion is
    # not thread-safe ("AST constructor recursion depth mismatch", gh-106905). Only the
    # sandboxed runs go to the pool.
    batches = [(problem.task_id, batch_of(problem)) for problem in problems]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(check, batches))
    failures = [(task, r.detail, r.output[-300:]) for task, r in outcomes if r and not r.passed]
    assert failures == []
    assert all(len(tasks) <= 5 for tasks in skipped.values()), skipped


def test_rename_params_details(problems: list[Problem]) -> None:
    p = problems[0]
    assert rename_map(p.prompt, p.entry_point) == {
        "numbers": "values",
        "threshold": "threshold_value",
    }
    q = perturb_problem(p, "rename_params")
    assert "def has_close_elements(values: List[float], threshold_value: float)" in q.prompt
    assert "given list of values" in q.prompt and "numbers" not in q.prompt
    assert "enumerate(values)" in q.canonical_solution
    assert q.test == p.test  # tests are never touched
    # A new name that the solution already uses cannot be applied.
    clash = Problem(
        "x", 'def f(n):\n    """Add n."""\n', "    num = 1\n    return n + num\n", "", "f"
    )
    with pytest.raises(NotApplicable):
        perturb_problem(clash, "rename_params")


def test_tabs_follow_block_structure() -> None:
    p = Problem(
        "x",
        'def f(s):\n  """Two-space indents."""\n',
        "  if s:\n      return 1\n  return 0\n",
        "",
        "f",
    )
    q = perturb_problem(p, "tabs")
    assert q.prompt == 'def f(s):\n\t"""Two-space indents."""\n'
    assert q.canonical_solution == "\tif s:\n\t\treturn 1\n\treturn 0\n"


def test_reword_keeps_examples(problems: list[Problem]) -> None:
    p = next(p for p in problems if p.task_id == "HumanEval/0")
    reworded = PERTURBATIONS["reword_docstring"](p.prompt, p.entry_point)
    assert "Determine whether" in reworded
    examples = [line for line in p.prompt.splitlines() if ">>>" in line]
    assert examples and all(line in reworded for line in examples)


def test_robustness_report(tmp_path: Path) -> None:
    scores = run_robustness(
        None,
        completions=canonical,
        perturbations=["tabs", "rename_params"],
        limit=4,
        out_dir=tmp_path,
        progress=False,
    )
    assert [s.name for s in scores] == ["tabs", "rename_params"]
    assert all(s.pass_at_1 == 1.0 and s.drop == 0.0 and s.tasks == 4 for s in scores)
    rows = json.loads((tmp_path / "robustness.json").read_text())
    assert rows[0]["drop"] == 0.0
    assert (tmp_path / "original" / "summary.json").is_file()
    assert (tmp_path / "tabs" / "samples.jsonl").is_file()


@pytest.mark.parametrize(
    "char",
    ["\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_tabify_counts_lines_as_the_tokenizer_does(char: str) -> None:
    """tokenize's line numbers index LSP lines; str.splitlines would also split the comment."""
    source = f"def f(x):\n    # a{char}b\n    if x:\n        return 1\n"
    assert tabify(source) == f"def f(x):\n\t# a{char}b\n\tif x:\n\t\treturn 1\n"
