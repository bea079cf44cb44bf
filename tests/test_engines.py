"""Both engines on the tiny model, called directly: stop flag, early stop, prefix cache."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from needs import need_module

from phi_lsp.runtime.engines.base import Engine, GenerationRequest
from testkit.tinymodel import TinyModel

PROMPT = "import os\n\n\ndef read_config(path):\n    with open(path) as f:\n        return f."


@pytest.fixture(scope="module", params=["llamacpp", "transformers", "transformers-static"])
def engine(request: pytest.FixtureRequest, tiny_model: TinyModel) -> Iterator[Engine]:
    """Each engine; `transformers-static` is the static-cache decoder that CUDA compiles, run
    here without compiling (tests/test_static_decoding.py checks the traced step)."""
    if request.param == "llamacpp":
        need_module("llama_cpp")
        from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

        eng: Engine = LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2)
    else:
        from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

        decoding = "static" if request.param == "transformers-static" else "auto"
        eng = TransformersEngine(
            tiny_model.hf_dir, device="cpu", n_threads=2, compiled_decoding=decoding
        )
    yield eng
    eng.close()


def test_greedy_generation_is_deterministic(engine: Engine) -> None:
    request = GenerationRequest(prompt=PROMPT, max_new_tokens=16)
    first = engine.generate(request, threading.Event())
    again = engine.generate(request, threading.Event())
    assert first.text == again.text
    assert first.generated_tokens <= 16 and first.stopped in ("length", "eos")
    assert first.prompt_tokens == len(engine.tokenize(PROMPT))


@pytest.mark.parametrize("after", [1, 5])
def test_stop_flag_ends_generation_within_one_token(engine: Engine, after: int) -> None:
    stop = threading.Event()
    seen: list[str] = []

    def cancel_after(partial: str) -> bool:
        # Stands in for a superseding request arriving while token `after` is produced.
        seen.append(partial)
        if len(seen) == after:
            stop.set()
        return False

    request = GenerationRequest(prompt=PROMPT, max_new_tokens=200, is_done=cancel_after)
    generation = engine.generate(request, stop)
    assert generation.stopped == "cancelled"
    assert after <= generation.generated_tokens <= after + 1


def test_a_request_stopped_before_it_starts_generates_nothing(engine: Engine) -> None:
    stop = threading.Event()
    stop.set()
    generation = engine.generate(GenerationRequest(prompt=PROMPT, max_new_tokens=50), stop)
    assert generation.generated_tokens <= 1 and generation.stopped == "cancelled"


def test_is_done_stops_early(engine: Engine) -> None:
    request = GenerationRequest(prompt=PROMPT, max_new_tokens=50, is_done=lambda t: len(t) > 0)
    generation = engine.generate(request, threading.Event())
    assert generation.generated_tokens <= 1 and generation.stopped in ("done", "eos")


def test_llamacpp_reuses_the_prompt_prefix(tiny_model: TinyModel) -> None:
    need_module("llama_cpp")
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2)
    long_prompt = PROMPT * 40  # > one prefill chunk, so the chunked prefill runs too
    cold = engine.generate(GenerationRequest(long_prompt, max_new_tokens=4), threading.Event())
    warm = engine.generate(
        GenerationRequest(long_prompt + "read", max_new_tokens=4), threading.Event()
    )
    engine.close()
    assert cold.evaluated_tokens == cold.prompt_tokens
    assert warm.prompt_tokens > cold.prompt_tokens
    assert warm.evaluated_tokens <= warm.prompt_tokens - cold.prompt_tokens + 2


def test_token_logprobs_are_recorded_and_agree_between_engines(tiny_model: TinyModel) -> None:
    need_module("llama_cpp")
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine
    from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

    request = GenerationRequest(prompt=PROMPT, max_new_tokens=8, logprobs=True)
    results = []
    for engine in (
        LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2),
        TransformersEngine(tiny_model.hf_dir, device="cpu", n_threads=2),
    ):
        results.append(engine.generate(request, threading.Event()))
        engine.close()
    llama, hf = results
    assert llama.text == hf.text and len(llama.token_logprobs) == llama.generated_tokens > 0
    assert all(lp <= 0 for lp in llama.token_logprobs)
    assert (
        max(abs(a - b) for a, b in zip(llama.token_logprobs, hf.token_logprobs, strict=True)) < 1e-3
    )


def test_deadline_stops_generation_and_says_so(engine: Engine) -> None:
    import time

    request = GenerationRequest(prompt=PROMPT, max_new_tokens=200, deadline=time.monotonic())
    generation = engine.generate(request, threading.Event())
    assert generation.stopped in ("deadline", "eos") and generation.generated_tokens <= 1


def lookup_engine(tiny_model: TinyModel, backend: str, draft_tokens: int) -> Engine:
    """The tiny model on `backend` with prompt lookup drafting `draft_tokens` (0: off)."""
    if backend == "llamacpp":
        need_module("llama_cpp")
        from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(tiny_model.gguf_f32, n_threads=2, prompt_lookup_tokens=draft_tokens)
    from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

    decoding = "static" if backend == "transformers-static" else "auto"
    return TransformersEngine(
        tiny_model.hf_dir,
        device="cpu",
        prompt_lookup_tokens=draft_tokens,
        compiled_decoding=decoding,
    )


@pytest.mark.parametrize("backend", ["llamacpp", "transformers", "transformers-static"])
def test_prompt_lookup_decoding_gives_the_same_greedy_text(
    tiny_model: TinyModel, backend: str
) -> None:
    def make(n: int) -> Engine:
        return lookup_engine(tiny_model, backend, n)

    request = GenerationRequest(prompt=PROMPT * 3, max_new_tokens=24)
    texts = []
    for n in (0, 8):
        engine = make(n)
        texts.append(engine.generate(request, threading.Event()).text)
        engine.close()
    assert texts[0] == texts[1] and texts[0]


def test_transformers_reuses_the_kv_cache_of_the_common_prefix(tiny_model: TinyModel) -> None:
    from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

    warm = TransformersEngine(tiny_model.hf_dir, device="cpu", n_threads=2)
    cold = TransformersEngine(tiny_model.hf_dir, device="cpu", n_threads=2)
    warm.generate(GenerationRequest(PROMPT * 4, max_new_tokens=8), threading.Event())
    typed = GenerationRequest(PROMPT * 4 + "read", max_new_tokens=8)
    again = warm.generate(typed, threading.Event())
    fresh = cold.generate(typed, threading.Event())
    assert again.text == fresh.text
    assert fresh.evaluated_tokens == fresh.prompt_tokens
    assert again.evaluated_tokens <= 3  # only the typed tokens (re-tokenised tail) are new
    shorter = warm.generate(GenerationRequest(PROMPT * 2, max_new_tokens=8), threading.Event())
    assert shorter.evaluated_tokens == 1  # a prefix of what is cached: one token re-run
    assert (
        shorter.text
        == cold.generate(GenerationRequest(PROMPT * 2, max_new_tokens=8), threading.Event()).text
    )


def test_fresh_requests_skip_the_prefix_cache(engine: Engine) -> None:
    engine.generate(GenerationRequest(PROMPT * 3, max_new_tokens=2), threading.Event())
    warm = engine.generate(GenerationRequest(PROMPT * 3 + "x", max_new_tokens=2), threading.Event())
    cold = engine.generate(
        GenerationRequest(PROMPT * 3 + "x", max_new_tokens=2, fresh=True), threading.Event()
    )
    assert warm.evaluated_tokens < warm.prompt_tokens
    assert cold.evaluated_tokens == cold.prompt_tokens and cold.text == warm.text


def test_warm_fills_the_cache_so_the_request_after_it_evaluates_only_its_tail(
    engine: Engine,
) -> None:
    engine.generate(GenerationRequest("x = 1\n", max_new_tokens=1), threading.Event())
    lines = PROMPT * 6
    stable = lines[: lines.rfind("\n") + 1]  # what the server warms: up to the cursor's line
    tail = len(engine.tokenize(lines)) - len(engine.tokenize(stable))
    assert engine.warm(stable, threading.Event()) == len(engine.tokenize(stable))
    assert engine.warm(stable, threading.Event()) == 0  # already cached: nothing to do
    after = engine.generate(GenerationRequest(lines, max_new_tokens=6), threading.Event())
    fresh = engine.generate(
        GenerationRequest(lines, max_new_tokens=6, fresh=True), threading.Event()
    )
    assert after.evaluated_tokens <= tail + 2  # the line being typed (+ a re-tokenised seam)
    assert after.text == fresh.text  # the warmed cache is the same cache


def test_warm_stops_within_one_piece(engine: Engine) -> None:
    stop = threading.Event()
    stop.set()
    assert engine.warm(PROMPT * 40, stop) == 0
    timer = threading.Timer(0.0, stop.set)
    stop.clear()
    timer.start()  # set while the first piece runs (or before it)
    assert engine.warm(PROMPT * 40 + "#", stop) <= 64
    timer.join()


@pytest.mark.parametrize("backend", ["llamacpp", "transformers", "transformers-static"])
def test_logprobs_with_prompt_lookup_equal_the_plain_paths(
    tiny_model: TinyModel, backend: str
) -> None:
    """Ranking candidates reads each token's log-probability; with draft tokens evaluated in one
    batch the last logits are not the sampled token's, so log-probs turn prompt lookup off."""

    def make(n: int) -> Engine:
        return lookup_engine(tiny_model, backend, n)

    request = GenerationRequest(prompt=PROMPT * 3, max_new_tokens=24, logprobs=True)
    results = []
    for n in (0, 8):
        engine = make(n)
        results.append(engine.generate(request, threading.Event()))
        engine.close()
    plain, lookup = results
    assert plain.text == lookup.text and len(plain.token_logprobs) == plain.generated_tokens > 0
    assert len(lookup.token_logprobs) == len(plain.token_logprobs)
    worst = max(
        abs(a - b) for a, b in zip(plain.token_logprobs, lookup.token_logprobs, strict=True)
    )
    assert worst < 1e-4, (plain.token_logprobs, lookup.token_logprobs)


def test_transformers_drops_its_kv_cache_when_generate_raises(tiny_model: TinyModel) -> None:
    """A generation that fails half-way (CUDA out of memory, say) has already written into the
    kept cache: the next request must not reuse it as if it held what it held before."""
    from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(tiny_model.hf_dir, device="cpu", n_threads=2)
    cold = TransformersEngine(tiny_model.hf_dir, device="cpu", n_threads=2)
    first = PROMPT * 3
    engine.generate(GenerationRequest(first, max_new_tokens=8), threading.Event())

    def fail(text: str) -> bool:
        raise MemoryError("CUDA out of memory (raised from inside generate)")

    other = PROMPT + "import sys\n\n\ndef main(argv):\n    return len(argv)\n" * 4
    with pytest.raises(MemoryError):
        engine.generate(GenerationRequest(other, max_new_tokens=8, is_done=fail), threading.Event())
    request = GenerationRequest(first, max_new_tokens=8, logprobs=True)
    again = engine.generate(request, threading.Event())
    fresh = cold.generate(request, threading.Event())
    assert again.text == fresh.text
    worst = max(abs(a - b) for a, b in zip(again.token_logprobs, fresh.token_logprobs, strict=True))
    assert worst < 1e-4, (again.token_logprobs, fresh.token_logprobs)
    engine.close()
    cold.close()
