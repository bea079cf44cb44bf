"""The static-cache decoder (compiled on CUDA) against transformers' generate(): same tokens,
same log-probs, the same cache reuse. tests/test_engines.py runs the engine behaviour tests
(stop flag, deadline, warm, fresh) on it too; the `cuda` tests here cover the compiled graph."""

from __future__ import annotations

import threading

import pytest
import torch
from needs import need_module

from phi_lsp.errors import ModelLoadError
from phi_lsp.runtime.engines.base import GenerationRequest
from phi_lsp.runtime.engines.decode_loop import lookup_draft
from phi_lsp.runtime.engines.static_decoding import StaticDecoder, decoding_plan
from phi_lsp.runtime.engines.transformers_engine import TransformersEngine
from testkit.tinymodel import TinyModel

# Each ends mid-word, mid-line or at a line's end: token healing gives back a different tail.
PROMPTS = [
    'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n    """\n',
    'def is_even(n: int) -> bool:\n    """Whether n is even."""\n    return n % ',
    'def greet(name):\n    """Say hello to name."""\n    return "Hel',
    "def fläche(länge, höhe):\n    ",
]


def engines(model: TinyModel, *decodings: str) -> list[TransformersEngine]:
    return [
        TransformersEngine(model.hf_dir, device="cpu", n_threads=2, compiled_decoding=d)
        for d in decodings
    ]


def test_decoding_plan_compiles_only_on_cuda_unless_asked() -> None:
    assert decoding_plan("auto", "cpu") is None and decoding_plan("auto", "mps") is None
    assert decoding_plan("auto", "cuda") == "cuda-graphs"
    assert decoding_plan("on", "cuda") == "cuda-graphs" and decoding_plan("on", "cpu") == "inductor"
    assert decoding_plan("off", "cuda") is None
    with pytest.raises(ModelLoadError, match="auto, on or off"):
        decoding_plan("fast", "cuda")


@pytest.mark.parametrize("logprobs", [False, True])
def test_static_decoding_writes_what_generate_writes(
    trained_model: TinyModel, logprobs: bool
) -> None:
    plain, static = engines(trained_model, "off", "static")
    assert (plain.decoding, static.decoding) == ("generate()", "static/off")
    for prompt in PROMPTS:
        request = GenerationRequest(prompt, max_new_tokens=24, logprobs=logprobs)
        want = plain.generate(request, threading.Event())
        got = static.generate(request, threading.Event())
        assert (got.text, got.stopped, got.healed) == (want.text, want.stopped, want.healed)
        assert got.generated_tokens == want.generated_tokens > 0
        assert len(got.token_logprobs) == len(want.token_logprobs)
        diffs = [abs(a - b) for a, b in zip(got.token_logprobs, want.token_logprobs, strict=True)]
        assert max(diffs, default=0.0) < 1e-4
    # The memorized body comes out of the static path, healed from mid-word.
    out = static.generate(GenerationRequest(PROMPTS[2], max_new_tokens=12), threading.Event())
    assert out.text.startswith('lo, " + name')


@pytest.mark.parametrize("tail_steps", [0, 8])
def test_the_cache_is_reused_across_keystrokes_and_edits(
    tiny_model: TinyModel, tail_steps: int
) -> None:
    """With tail_steps 8, each keystroke's tail goes through the step (as on a GPU)."""
    static, cold = engines(tiny_model, "static", "off")
    assert static.decoder is not None
    static.decoder.tail_steps = tail_steps
    base = PROMPTS[0] * 3
    static.generate(GenerationRequest(base, max_new_tokens=8), threading.Event())
    for prompt in (base + "de", base + "def", PROMPTS[0] * 2, PROMPTS[1] + base):
        got = static.generate(GenerationRequest(prompt, max_new_tokens=8), threading.Event())
        want = cold.generate(GenerationRequest(prompt, max_new_tokens=8), threading.Event())
        assert got.text == want.text, prompt
    edited = PROMPTS[1] + base  # the last prompt, changed at the top: nothing reused
    again = static.generate(GenerationRequest(edited, max_new_tokens=8), threading.Event())
    assert again.evaluated_tokens == 1  # the same prompt again: only its last token
    static.generate(GenerationRequest(base, max_new_tokens=8), threading.Event())
    typed = static.generate(GenerationRequest(base + "def x", max_new_tokens=8), threading.Event())
    assert typed.evaluated_tokens <= 4  # only the typed tail


def test_a_tail_through_the_step_leaves_what_an_eager_pass_leaves(tiny_model: TinyModel) -> None:
    """A tail of up to `tail_steps` tokens is written one compiled step at a time (on a GPU
    that beats one eager pass): the logits, and the cache the next step reads, are the same;
    a stop between its tokens stops it."""
    (engine,) = engines(tiny_model, "static")
    eager = StaticDecoder(engine.model, 256, "off", tail_steps=0)
    stepped = StaticDecoder(engine.model, 256, "off", tail_steps=4)
    base = engine.tokenize(PROMPTS[0] * 2)
    with torch.inference_mode():
        for tail in ([5], [5, 9, 11], [5, 9, 11, 13], [5, 9, 11, 13, 17], [6]):
            want, reused = eager.prefill(base + tail, threading.Event())
            got, _ = stepped.prefill(base + tail, threading.Event())
            assert want is not None and got is not None and stepped.ids == eager.ids
            assert (got - want).abs().max() < 1e-4, tail
            assert (stepped.step(3) - eager.step(3)).abs().max() < 1e-4, tail
        assert reused == len(base)  # the last tail was written after the cached prompt
        stop = threading.Event()
        stop.set()
        assert stepped.prefill(base + [7, 8], stop)[0] is None


def test_a_prompt_longer_than_the_cache_falls_back_to_generate(tiny_model: TinyModel) -> None:
    static = TransformersEngine(
        tiny_model.hf_dir, device="cpu", n_ctx=64, compiled_decoding="static"
    )
    plain = TransformersEngine(tiny_model.hf_dir, device="cpu", n_ctx=64, compiled_decoding="off")
    assert static.decoder is not None and static.decoder.capacity == 64
    prompt = "x = 1\n" * 20  # ~60 tokens: with 16 new ones it does not fit 64 positions
    request = GenerationRequest(prompt, max_new_tokens=16)
    assert (
        static.generate(request, threading.Event()).text
        == plain.generate(request, threading.Event()).text
    )


def test_sampling_on_the_static_path_follows_torch_seed(tiny_model: TinyModel) -> None:
    (static,) = engines(tiny_model, "static")
    request = GenerationRequest(PROMPTS[3], max_new_tokens=16, temperature=1.0, fresh=True)
    texts = []
    for seed in (0, 0, 1, 2, 3):
        torch.manual_seed(seed)
        texts.append(static.generate(request, threading.Event()).text)
    assert texts[0] == texts[1]  # seeded: reproducible
    assert len(set(texts)) > 1  # and sampled: seeds differ


def test_the_decode_step_traces_as_one_graph(tiny_model: TinyModel) -> None:
    """fullgraph=True: a graph break (a Python branch on a tensor, a `.item()`) fails here, on
    CPU in seconds, before it would cost CUDA graphs their speed on a GPU."""
    static, traced = engines(tiny_model, "static", "trace")
    assert traced.decoding == "static/trace"  # compiled by dynamo at load, not generate()
    assert traced.decoder is not None and traced.decoder.pass_ms is not None  # measured at load
    assert 0 <= traced.decoder.tail_steps <= 16
    for prompt in PROMPTS[:2]:
        request = GenerationRequest(prompt, max_new_tokens=20, logprobs=True)
        want = static.generate(request, threading.Event())
        got = traced.generate(request, threading.Event())
        assert got.text == want.text and got.token_logprobs == pytest.approx(want.token_logprobs)


def test_no_request_after_load_compiles_again(tiny_model: TinyModel) -> None:
    """Compiling happens at load. A recompile in a request (a guard on a value that changes
    every step, a new shape) would stall that request for tens of seconds on a GPU, so here
    a recompile is an error while keystrokes, edits, sampling, log-probs, prompt lookup, a
    long prompt and idle prefill run."""
    engine = TransformersEngine(
        tiny_model.hf_dir, device="cpu", compiled_decoding="trace", prompt_lookup_tokens=4
    )
    assert engine.decoder is not None
    engine.decoder.tail_steps = 6
    base = PROMPTS[0] * 3
    with torch._dynamo.config.patch(error_on_recompile=True):
        for prompt, options in [
            (base, {}),
            (base + "de", {}),
            (base + "def", {"logprobs": True}),
            (PROMPTS[1] + base, {"temperature": 0.8}),
            ("".join(PROMPTS) * 12, {"fresh": True}),  # more than one prefill piece
            (base, {"max_new_tokens": 60}),  # drafts accepted and rejected
        ]:
            request = GenerationRequest(prompt, **{"max_new_tokens": 16, **options})
            assert engine.generate(request, threading.Event()).generated_tokens > 0
        engine.warm(base + "x = 1\n", threading.Event())
    assert engine.decoder.drafted > 0


def test_lookup_drafts_what_followed_the_last_ngram_earlier() -> None:
    history = [5, 6, 7, 8, 9, 1, 2, 6, 7, 3, 5, 6, 7]
    assert lookup_draft(history, 3) == [8, 9, 1]  # "5 6 7" came before, followed by 8 9 1
    assert lookup_draft([1, 2, 6, 7, 3, 9, 6, 7], 2) == [3, 9]  # no 3-gram: the 2-gram "6 7"
    assert lookup_draft([1, 2, 3, 4], 4) == []  # nothing repeats
    # The tail's bytes (00 00 00 01 00 00 00 00) also appear one byte into 5, 1, 256: no match.
    assert lookup_draft([5, 1, 256, 99, 1 << 24, 0], 2) == []
    assert lookup_draft([7, 7, 7, 7, 7], 8) == [7]  # the most recent earlier occurrence


@pytest.mark.parametrize("decoding", ["static", "trace"])
def test_prompt_lookup_on_the_static_path_keeps_drafts_and_the_text(
    trained_model: TinyModel, tiny_model: TinyModel, decoding: str
) -> None:
    """Code repeats itself: with drafts copied from the prompt, the model agrees with many of
    them, and what it writes is what it writes without them, also after a draft it rejected
    half-way (the random tiny model loops, so long generations draft and reject often)."""
    add = PROMPTS[0] + "    return a + b\n\n\n"  # the memorized body, earlier in the file
    greet = PROMPTS[2] + 'lo, " + name\n\n\n'
    cases = [
        (trained_model, [add * 2 + PROMPTS[0], greet + PROMPTS[2], "".join(PROMPTS) * 2], 40),
        (tiny_model, [PROMPTS[0] * 3, PROMPTS[1] + "2 == 0\n\n\n" + PROMPTS[0]], 60),
    ]
    for model, prompts, new_tokens in cases:
        plain = TransformersEngine(model.hf_dir, device="cpu", compiled_decoding="off")
        lookup = TransformersEngine(
            model.hf_dir, device="cpu", compiled_decoding=decoding, prompt_lookup_tokens=6
        )
        assert lookup.decoder is not None and lookup.decoder.draft == 6
        for prompt in prompts:
            request = GenerationRequest(prompt, max_new_tokens=new_tokens)
            want = plain.generate(request, threading.Event())
            got = lookup.generate(request, threading.Event())
            assert (got.text, got.stopped) == (want.text, want.stopped)
        assert 0 < lookup.decoder.accepted < lookup.decoder.drafted  # kept some, rejected some


def test_an_unknown_compile_mode_is_refused(tiny_model: TinyModel) -> None:
    (static,) = engines(tiny_model, "static")
    with pytest.raises(ValueError, match="compile must be one of"):
        StaticDecoder(static.model, 64, "fastest")


@pytest.mark.cuda
@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_cuda_graph_decoding_matches_generate(trained_model: TinyModel, quantization: str) -> None:
    if quantization == "nf4":
        need_module("bitsandbytes")
    compiled = TransformersEngine(trained_model.hf_dir, device="cuda", quantization=quantization)
    plain = TransformersEngine(
        trained_model.hf_dir, device="cuda", quantization=quantization, compiled_decoding="off"
    )
    if quantization == "none":
        assert compiled.decoding == "static/cuda-graphs"
    for prompt in PROMPTS:
        request = GenerationRequest(prompt, max_new_tokens=24)
        got = compiled.generate(request, threading.Event())
        assert got.text == plain.generate(request, threading.Event()).text
    typed = compiled.generate(
        GenerationRequest(PROMPTS[3] + "r", max_new_tokens=8), threading.Event()
    )
    assert typed.evaluated_tokens <= 3
    stop = threading.Event()
    seen: list[str] = []

    def cancel_after_three(partial: str) -> bool:
        seen.append(partial)
        if len(seen) == 3:
            stop.set()
        return False

    request = GenerationRequest(PROMPTS[0], max_new_tokens=100, is_done=cancel_after_three)
    cut = compiled.generate(request, stop)
    assert cut.stopped == "cancelled" and 3 <= cut.generated_tokens <= 4
    lookup = TransformersEngine(
        trained_model.hf_dir, device="cuda", quantization=quantization, prompt_lookup_tokens=6
    )
    repeated = "".join(PROMPTS) * 2
    request = GenerationRequest(repeated, max_new_tokens=40)
    assert lookup.generate(request, threading.Event()).text == (
        plain.generate(request, threading.Event()).text
    )


def test_a_cache_that_disagrees_with_the_model_is_refused_at_load(
    tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load-time check: with the write position never moved back (what a transformers
    release that keeps it elsewhere would do), `on` fails the load and says why."""
    monkeypatch.setattr(
        StaticDecoder, "_seek", lambda self, n: self.ids.__delitem__(slice(n, None))
    )
    with pytest.raises(ModelLoadError, match="disagrees with a plain forward pass"):
        TransformersEngine(tiny_model.hf_dir, device="cpu", compiled_decoding="static")
