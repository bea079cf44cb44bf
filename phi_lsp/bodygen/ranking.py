"""Best of N function bodies for a docstring stub.

Candidates: one greedy, the rest sampled. Those that do not parse or do not fit the signature
are dropped; where the docstring has doctests, they run in the sandbox and the candidates that
pass more of them win; ties are broken by the mean token log-probability.

`best_body` runs it all on one thread (the CLI); `best_body_on_worker` is the server's: one
background job per candidate on the engine worker, doctests and parsing off it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from phi_lsp.bodygen.stubs import (
    Stub,
    body_is_done,
    check_candidate,
    cut_body,
    doctest_examples,
    doctest_program,
)
from phi_lsp.runtime.engines.base import Engine, GenerationRequest
from phi_lsp.runtime.runner import EngineRunner, Priority

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


def sample_candidate(
    engine: Engine,
    stub: Stub,
    *,
    greedy: bool,
    temperature: float,
    max_new_tokens: int,
    stop: threading.Event,
) -> Candidate | None:
    """One candidate body, not yet judged (None when stopped)."""
    request = GenerationRequest(
        prompt=stub.prompt,
        max_new_tokens=max_new_tokens,
        temperature=0.0 if greedy else temperature,
        is_done=lambda text: body_is_done(text, stub),
        logprobs=True,
    )
    generation = engine.generate(request, stop)
    if generation.stopped == "cancelled" or stop.is_set():
        log.info(
            "%s(): a candidate stopped after %d tokens", stub.name, generation.generated_tokens
        )
        return None
    return Candidate(cut_body(generation.text, stub), mean_logprob=generation.mean_logprob)


def keep_if_new(candidates: list[Candidate], candidate: Candidate, stub: Stub) -> None:
    """Add `candidate`, judged (parses, fits the signature), unless its body is already there."""
    if any(c.body == candidate.body for c in candidates):
        return
    candidate.rejected = check_candidate(candidate.body, stub)
    candidates.append(candidate)


def generate_candidates(
    engine: Engine,
    stub: Stub,
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    stop: threading.Event,
) -> list[Candidate] | None:
    """N distinct candidate bodies: one greedy, the rest sampled (None when cancelled)."""
    candidates: list[Candidate] = []
    for i in range(n):
        candidate = sample_candidate(
            engine,
            stub,
            greedy=i == 0,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            stop=stop,
        )
        if candidate is None:
            return None
        keep_if_new(candidates, candidate, stub)
    return candidates


def to_doctest(candidates: list[Candidate], stub: Stub) -> list[Candidate]:
    """The candidates whose doctests are worth running (usable, and the docstring has some)."""
    if not doctest_examples(stub):
        return []
    return [c for c in candidates if c.rejected is None]


def score(candidate: Candidate, passed: int, failed: int) -> None:
    candidate.doctests_passed, candidate.doctests_total = passed, passed + failed


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
    note = doctests_note(stub, run_doctests, not_run)
    if run_doctests is not None:
        for candidate in to_doctest(candidates, stub):
            if not stop.is_set():
                score(candidate, *run_doctests(stub, candidate.body))
    return BodyResult(
        chosen_among(candidates, stub), candidates, cancelled=stop.is_set(), note=note
    )


def doctests_note(stub: Stub, run_doctests: DoctestRunner | None, not_run: str) -> str:
    """Why the stub's doctests are not run ("" when they are or it has none); logged."""
    note = not_run if run_doctests is None and doctest_examples(stub) else ""
    if note:
        log.warning("%s: %s", stub.name, note)
    return note


def chosen_among(candidates: list[Candidate], stub: Stub) -> Candidate | None:
    """The best candidate, after one log line per candidate."""
    for c in candidates:
        log.info(
            "candidate for %s: %s%s",
            stub.name,
            c.evidence,
            f" (rejected: {c.rejected})" if c.rejected else "",
        )
    return choose(candidates)


async def best_body_on_worker(
    runner: EngineRunner,
    stub: Stub,
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    report: Callable[[str], None] = lambda message: None,
    run_doctests: DoctestRunner | None = run_doctests_sandboxed,
    not_run: str = "",
) -> BodyResult:
    """`best_body` for the server: each candidate is its own background job on the runner's
    worker, so completions queued meanwhile run between candidates; doctests run in a thread,
    off the worker. Raises CancelledError or Superseded when stopped.
    """
    candidates: list[Candidate] = []
    key = f"body:{stub.name}:{stub.start[0]}"
    for i in range(n):
        report(f"candidate {i + 1} of {n}")

        def work(engine: Engine, stop: threading.Event, greedy: bool = i == 0) -> Candidate | None:
            return sample_candidate(
                engine,
                stub,
                greedy=greedy,
                temperature=temperature,
                max_new_tokens=max_new_tokens,
                stop=stop,
            )

        candidate = await runner.run(key, work, 300, Priority.BACKGROUND)
        if candidate is None:  # stopped by the watchdog
            return BodyResult(None, candidates, cancelled=True)
        keep_if_new(candidates, candidate, stub)
    note = doctests_note(stub, run_doctests, not_run)
    if run_doctests is not None:
        for candidate in to_doctest(candidates, stub):
            report(f"doctests of candidate {candidates.index(candidate) + 1}")
            score(candidate, *await asyncio.to_thread(run_doctests, stub, candidate.body))
    return BodyResult(chosen_among(candidates, stub), candidates, note=note)
