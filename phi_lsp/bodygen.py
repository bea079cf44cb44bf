"""Best of N function bodies for a docstring stub.

Candidates: one greedy, the rest sampled. Those that do not parse or do not fit the signature
are dropped; where the docstring has doctests, they run in the sandbox and the candidates that
pass more of them win; ties are broken by the mean token log-probability.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from phi_lsp.docfunc import (
    Stub,
    body_is_done,
    check_candidate,
    cut_body,
    doctest_examples,
    doctest_program,
)
from phi_lsp.engines.base import Engine, GenerationRequest

log = logging.getLogger(__name__)

DOCTEST_LINE = re.compile(r"^DOCTEST (\d+) (\d+)$", re.MULTILINE)
DoctestRunner = Callable[[Stub, str], tuple[int, int]]


@dataclass
class Candidate:
    body: str
    rejected: str | None = None
    doctests_passed: int = 0
    doctests_total: int = 0
    mean_logprob: float = 0.0

    @property
    def evidence(self) -> str:
        tests = (
            f"doctests {self.doctests_passed}/{self.doctests_total}, "
            if self.doctests_total
            else ""
        )
        return f"{tests}mean log-prob {self.mean_logprob:.2f}"


@dataclass
class BodyResult:
    chosen: Candidate | None
    candidates: list[Candidate]
    cancelled: bool = False
    note: str = ""  # why the doctests were not run, where they were not


def run_doctests_sandboxed(stub: Stub, body: str) -> tuple[int, int]:
    """(passed, failed) for the stub's doctests with `body`, run only in the sandbox."""
    from phi_lsp.sandbox import run_sandboxed

    result = run_sandboxed(doctest_program(stub, body), timeout_s=5.0)
    match = DOCTEST_LINE.search(result.output)
    if match is None:  # crashed, timed out or never reached the doctests
        return 0, doctest_examples(stub)
    return int(match.group(1)), int(match.group(2))


def doctest_runner(
    policy: str, features: dict[str, Any] | None = None
) -> tuple[DoctestRunner | None, str]:
    """The doctest runner the `generateRunDoctests` policy allows with these sandbox `features`
    (default: this machine's), or None and why: model-written code runs only under kernel
    confinement unless the user says so."""
    if policy == "never":
        return None, "doctests not run (generateRunDoctests: never)"
    if policy == "when-confined":
        if features is None:
            from phi_lsp.sandbox import sandbox_features

            features = sandbox_features()
        if not features["files_confined"]:
            return None, (
                f"doctests not run: the sandbox here is {features['confinement']}, with no "
                'kernel file confinement (generateRunDoctests: "always" runs them anyway)'
            )
    return run_doctests_sandboxed, ""


def generate_candidates(
    engine: Engine,
    stub: Stub,
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    stop: threading.Event,
) -> list[Candidate] | None:
    """N distinct candidate bodies (None when cancelled)."""
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for i in range(n):
        request = GenerationRequest(
            prompt=stub.prompt,
            max_new_tokens=max_new_tokens,
            temperature=0.0 if i == 0 else temperature,
            is_done=lambda text: body_is_done(text, stub),
            logprobs=True,
        )
        generation = engine.generate(request, stop)
        if generation.stopped == "cancelled" or stop.is_set():
            return None
        body = cut_body(generation.text, stub)
        if body in seen:
            continue
        seen.add(body)
        candidates.append(
            Candidate(body, check_candidate(body, stub), mean_logprob=generation.mean_logprob)
        )
    return candidates


def choose(candidates: list[Candidate]) -> Candidate | None:
    """The usable candidate with the most doctests passed, then the highest mean log-prob."""
    usable = [c for c in candidates if c.rejected is None]
    if not usable:
        return None
    return max(usable, key=lambda c: (c.doctests_passed, c.mean_logprob))


def best_body(
    engine: Engine,
    stub: Stub,
    *,
    n: int = 3,
    temperature: float = 0.8,
    max_new_tokens: int = 256,
    stop: threading.Event,
    run_doctests: DoctestRunner | None = run_doctests_sandboxed,
    not_run: str = "",
) -> BodyResult:
    """Generate `n` candidates and choose one; `not_run` says why `run_doctests` is None."""
    candidates = generate_candidates(
        engine, stub, n=n, temperature=temperature, max_new_tokens=max_new_tokens, stop=stop
    )
    if candidates is None:
        return BodyResult(None, [], cancelled=True)
    note = not_run if run_doctests is None and doctest_examples(stub) else ""
    if note:
        log.warning("%s: %s", stub.name, note)
    if run_doctests is not None and doctest_examples(stub):
        for candidate in candidates:
            if candidate.rejected is None and not stop.is_set():
                passed, failed = run_doctests(stub, candidate.body)
                candidate.doctests_passed, candidate.doctests_total = passed, passed + failed
    chosen = choose(candidates)
    for c in candidates:
        log.info(
            "candidate for %s: %s%s",
            stub.name,
            c.evidence,
            f" (rejected: {c.rejected})" if c.rejected else "",
        )
    return BodyResult(chosen, candidates, cancelled=stop.is_set(), note=note)
