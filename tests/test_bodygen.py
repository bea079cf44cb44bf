"""Best-of-N ranking on crafted candidates, with doctests run in the real sandbox."""

from __future__ import annotations

import threading

import pytest

from phi_lsp.bodygen.ranking import (
    Candidate,
    best_body,
    choose,
    doctest_runner,
    run_doctests_sandboxed,
)
from phi_lsp.bodygen.stubs import body_is_done, check_candidate, cut_body, find_stub
from phi_lsp.runtime.engines.base import GenerationRequest
from testkit.tinymodel import TinyModel

SOURCE = '''def double(x: int) -> int:
    """Twice x.

    >>> double(2)
    4
    >>> double(-1)
    -2
    """
    pass
'''


def crafted() -> list[Candidate]:
    stub = find_stub(SOURCE, 1)
    assert stub is not None
    bodies = {
        "passes": "    return x * 2",
        "fails": "    return x + 2",  # right for 2, wrong for -1
        "broken": "    return x *",
    }
    out = []
    for name, body in bodies.items():
        candidate = Candidate(body, check_candidate(body, stub), mean_logprob=-0.1 * len(name))
        if candidate.rejected is None:
            passed, failed = run_doctests_sandboxed(stub, body)
            candidate.doctests_passed, candidate.doctests_total = passed, passed + failed
        out.append(candidate)
    return out


def test_the_candidate_that_passes_its_doctests_wins() -> None:
    passes, fails, broken = crafted()
    assert (passes.doctests_passed, passes.doctests_total) == (2, 2)
    assert (fails.doctests_passed, fails.doctests_total) == (1, 2)
    assert broken.rejected and "does not parse" in broken.rejected
    # `fails` has the better log-prob, but doctests come first.
    fails.mean_logprob = -0.01
    assert choose([broken, fails, passes]) is passes
    assert "doctests 2/2" in passes.evidence


def test_log_prob_breaks_ties_and_nothing_usable_gives_none() -> None:
    a = Candidate("    return 1", mean_logprob=-2.0)
    b = Candidate("    return 2", mean_logprob=-0.5)
    assert choose([a, b]) is b
    assert choose([Candidate("x", rejected="does not parse")]) is None


def test_best_body_with_the_tiny_model(tiny_model: TinyModel) -> None:
    """Random weights: the first candidate is the greedy continuation, each candidate is
    judged as check_candidate says, and the chosen one is what `choose` picks."""
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    stub = find_stub(SOURCE, 1)
    assert stub is not None
    engine = LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2)
    greedy = engine.generate(
        GenerationRequest(stub.prompt, max_new_tokens=24, is_done=lambda t: body_is_done(t, stub)),
        threading.Event(),
    )
    result = best_body(engine, stub, n=3, max_new_tokens=24, stop=threading.Event())
    engine.close()
    assert not result.cancelled and 1 <= len(result.candidates) <= 3
    assert result.candidates[0].body == cut_body(greedy.text, stub)
    assert len({c.body for c in result.candidates}) == len(result.candidates)
    for candidate in result.candidates:
        assert candidate.rejected == check_candidate(candidate.body, stub)
    assert result.chosen is choose(result.candidates)


def test_best_body_with_the_trained_model(trained_model: TinyModel) -> None:
    """The model that memorised `add` writes it, and its doctest passes in the sandbox."""
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    source = (
        'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n    """\n'
    )
    stub = find_stub(source + "    pass\n", 0)
    assert stub is not None
    engine = LlamaCppEngine(trained_model.gguf_f32, n_ctx=2048, n_threads=2)
    result = best_body(engine, stub, n=2, stop=threading.Event())
    engine.close()
    assert result.chosen is not None
    assert result.chosen.body == "    return a + b"
    assert (result.chosen.doctests_passed, result.chosen.doctests_total) == (1, 1)


def test_doctests_run_only_under_kernel_confinement_unless_the_user_says_always() -> None:
    guard_only = {"files_confined": False, "confinement": "python guard only"}
    confined = {"files_confined": True, "confinement": "landlock ABI 7, seccomp, python guard"}
    runner, why = doctest_runner("when-confined", guard_only)
    assert runner is None and "python guard only" in why and '"always"' in why
    assert doctest_runner("when-confined", confined) == (run_doctests_sandboxed, "")
    assert doctest_runner("always", guard_only) == (run_doctests_sandboxed, "")
    runner, why = doctest_runner("never", confined)
    assert runner is None and "never" in why
    # This machine: the answer follows what the sandbox probe found.
    from phi_lsp.sandbox import sandbox_features

    here, _ = doctest_runner("when-confined")
    assert (here is not None) == sandbox_features()["files_confined"]


@pytest.mark.parametrize("policy", ["never", "always"])
def test_best_body_says_when_the_doctests_were_not_run(tiny_model: TinyModel, policy: str) -> None:
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    stub = find_stub(SOURCE, 1)
    assert stub is not None
    runner, why = doctest_runner(policy)
    engine = LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2)
    try:
        result = best_body(
            engine,
            stub,
            n=2,
            max_new_tokens=16,
            stop=threading.Event(),
            run_doctests=runner,
            not_run=why,
        )
    finally:
        engine.close()
    if policy == "never":
        assert result.note == why and why
        assert all(c.doctests_total == 0 for c in result.candidates)
    else:
        assert result.note == ""
        usable = [c for c in result.candidates if c.rejected is None]
        assert all(c.doctests_total == 2 for c in usable)
