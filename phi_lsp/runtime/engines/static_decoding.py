"""Decoding on a static KV cache, with the one-token step compiled once at load.

transformers' `generate()` on a dynamic cache spends most of a decode step in Python and kernel
launches: on an H200 at phi-1's shape a token took 13–21 ms where reading the weights takes
0.66 ms. Here the cache is one preallocated tensor per layer, sized to the context, so the
decode step has one shape for the life of the engine. torch.compile turns that step into one
graph (`mode="reduce-overhead"` replays it as a CUDA graph on CUDA), compiled and captured in
`StaticDecoder.__init__`, i.e. while the model loads, so that no request pays for it.

Prefill runs eagerly in pieces (its length changes every keystroke) into the same cache. The
cache's first N positions are reused across keystrokes: moving the write position back is all a
"crop" takes, because the causal mask hides every position past the one being written.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StaticCache

from phi_lsp.errors import ModelLoadError
from phi_lsp.runtime.engines.base import common_prefix
from phi_lsp.runtime.engines.healing import Constraint

log = logging.getLogger(__name__)

# Prompt tokens per eager forward pass: a stop flag is looked at between pieces. Prefill ahead
# of a request (`warm`) takes smaller pieces, so that a request waits for less.
PREFILL_CHUNK = 512
WARM_CHUNK = 64
TOP_P = 0.95

# How the decode step runs: not compiled; traced by dynamo with no code generation (checks
# on any CPU, in seconds, that the step is one graph); inductor; inductor + CUDA graphs.
COMPILE_OPTIONS: dict[str, dict[str, Any] | None] = {
    "off": None,
    "trace": {"backend": "eager", "fullgraph": True},
    "inductor": {"fullgraph": True},
    "cuda-graphs": {"mode": "reduce-overhead", "fullgraph": True},
}


def decoding_plan(setting: str, device: str) -> str | None:
    """How the static decoder compiles its step for `compiledDecoding` on `device`; None:
    transformers' generate() on a dynamic cache. `auto` compiles on CUDA only: on a CPU the
    step is bound by the matrix products, not by Python, and inductor takes minutes to compile.
    `static` (no compiling) and `trace` (dynamo, no code generation) are for tests."""
    if setting == "off" or (setting == "auto" and device != "cuda"):
        return None
    if setting in ("auto", "on"):
        return "cuda-graphs" if device == "cuda" else "inductor"
    plans = {"static": "off", "trace": "trace"}
    if setting not in plans:
        raise ModelLoadError(f"compiledDecoding must be auto, on or off, not {setting!r}")
    return plans[setting]


def cache_argument(model: Any) -> str:
    """The name of the forward's KV-cache argument: transformers 5.25 renamed
    `past_key_values` to `cache` (the old name still works, with a warning)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class Decoded:
    """What one decoding run produced: the new tokens (eos included), their log-probs, why it
    ended ("": eos or length) and how many prompt tokens came from the cache."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reason: str = ""
    reused: int = 0


class StaticDecoder:
    """The model, a static KV cache of `capacity` positions, and the token ids it holds.

    With `draft` > 0 (prompt lookup) a second fixed-shape step checks a token and `draft`
    drafted ones in one call: compiled too, it costs about one decode step."""

    def __init__(self, model: Any, capacity: int, compile: str = "off", draft: int = 0) -> None:
        if compile not in COMPILE_OPTIONS:
            raise ValueError(f"compile must be one of {sorted(COMPILE_OPTIONS)}, not {compile!r}")
        self.model, self.capacity, self.compile = model, capacity, compile
        self.device = model.device
        self.cache = StaticCache(config=model.config, max_cache_len=capacity)
        self._cache_arg = cache_argument(model)
        self.ids: list[int] = []  # the token ids whose keys and values are in the cache
        self._token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self._position = torch.zeros((1,), dtype=torch.long, device=self.device)
        self.draft = draft
        self._drafts = torch.zeros((1, draft + 1), dtype=torch.long, device=self.device)
        self._positions = torch.zeros((draft + 1,), dtype=torch.long, device=self.device)
        self.drafted = self.accepted = 0  # prompt lookup's draft tokens, and those it kept
        options = COMPILE_OPTIONS[compile]
        self._step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = self._forward
        self._verify: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = self._forward_all
        self.compile_seconds = 0.0
        if options is not None:
            self._step = torch.compile(self._forward, **options)
            self._verify = torch.compile(self._forward_all, **options)
            self.compile_seconds = self._compile_now()
        self._check()

    # --- the model calls ---------------------------------------------------------------------

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits of the last position (fp32) after writing `tokens` at `positions`."""
        return self._logits(tokens, positions, 1)[:, -1]

    def _forward_all(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits of every position, [len(tokens), vocab] (fp32)."""
        return self._logits(tokens, positions, 0)[0]

    def _logits(self, tokens: torch.Tensor, positions: torch.Tensor, keep: int) -> torch.Tensor:
        out = self.model(
            input_ids=tokens,
            position_ids=positions.unsqueeze(0),
            cache_position=positions,
            use_cache=True,
            logits_to_keep=keep,
            **{self._cache_arg: self.cache},
        )
        return out.logits.float()

    def _seek(self, length: int) -> None:
        """Make `length` the next write position (transformers ≥ 5 keeps it in each layer)."""
        for layer in getattr(self.cache, "layers", []):
            if getattr(layer, "is_initialized", False) and hasattr(layer, "cumulative_length"):
                layer.cumulative_length.fill_(length)
        del self.ids[length:]

    def _compile_now(self) -> float:
        """Compile (and on CUDA capture) the decode step with a throwaway prompt, long enough
        that the prefill's kernels for a full piece and a tail are warm too."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            warmup = [0] * max(2, min(self.capacity - 8, PREFILL_CHUNK + 3))
            self.prefill(warmup, threading.Event(), reuse=False)
            for _ in range(3):  # cudagraph trees record on the second or third call
                self.step(0)
                if self.draft:
                    self.verify([0] * (self.draft + 1))
                    self._seek(len(self.ids) - self.draft)
        self._seek(0)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        log.info("decode step compiled (%s) in %.1f s", self.compile, seconds)
        return seconds

    def _check(self) -> None:
        """Refuse to serve if the cache path disagrees with a plain forward pass: a transformers
        release that moves the cache's write position elsewhere, or an attention kernel that
        ignores the mask, would otherwise serve confident nonsense. Both compiled steps are
        checked (the drafts' one when prompt lookup is on)."""
        vocab = int(self.model.config.vocab_size)
        ids = [(7 * i + 3) % vocab for i in range(10 + self.draft)]
        with torch.inference_mode():
            self.prefill(ids[:4], threading.Event(), reuse=False)
            self.prefill(ids[:2] + ids[4:8], threading.Event())  # reuse 2, overwrite 2
            self.prefill(ids[:8], threading.Event())  # reuse 2 again: stale positions behind
            got = [self.step(ids[8])[0]]
            if self.draft:
                got.extend(self.verify(ids[9:]))
            plain = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
            want = plain.logits[0, 8 : 8 + len(got)].float()
        self._seek(0)
        worst = float((torch.stack(got) - want).abs().max())
        scale = float(want.abs().max())
        tolerance = 1e-3 * (1 + scale) if self.model.dtype == torch.float32 else 0.05 * (1 + scale)
        if worst > tolerance:
            raise RuntimeError(
                "the static KV cache disagrees with a plain forward pass "
                f"(max |Δlogit| {worst:.3g})"
            )

    def prefill(
        self, ids: list[int], stop: threading.Event, reuse: bool = True
    ) -> tuple[torch.Tensor | None, int]:
        """Bring the cache to `ids` and return the next-token logits (None when `stop` was set)
        and how many tokens were reused: the longest common prefix with what the cache holds,
        less at least the last token, whose logits are needed."""
        kept = max(0, min(common_prefix(self.ids, ids), len(ids) - 1)) if reuse else 0
        self._seek(kept)
        return self.extend(ids[kept:], stop), kept

    def warm(self, ids: list[int], stop: threading.Event) -> int:
        """Prefill ahead of a request (idle time); returns the tokens evaluated."""
        kept = common_prefix(self.ids, ids)
        self._seek(kept)
        self.extend(ids[kept:], stop, WARM_CHUNK)
        return len(self.ids) - kept

    def extend(
        self, ids: list[int], stop: threading.Event, chunk: int = PREFILL_CHUNK
    ) -> torch.Tensor | None:
        """Append `ids` to the cache in eager pieces; the last piece's logits (None if stopped
        or there was nothing to add)."""
        logits = None
        done = 0
        while done < len(ids):
            if stop.is_set():
                return None
            piece = ids[done : done + chunk]
            start = len(self.ids)
            positions = torch.arange(start, start + len(piece), device=self.device)
            tokens = torch.tensor([piece], device=self.device)
            logits = self._call(self._forward, tokens, positions, piece)
            done += len(piece)
        return logits

    def step(self, token: int) -> torch.Tensor:
        """Write one token at the next position and return the next logits (one graph call)."""
        self._token.fill_(token)
        self._position.fill_(len(self.ids))
        return self._call(self._step, self._token, self._position, [token])

    def verify(self, tokens: list[int]) -> torch.Tensor:
        """Write a token and `draft` drafted ones (exactly `draft` + 1) at the next positions;
        the logits after each, [draft + 1, vocab]. The caller `rewind`s what it rejects."""
        self._drafts.copy_(torch.tensor([tokens], device=self.device))
        torch.arange(len(self.ids), len(self.ids) + len(tokens), out=self._positions)
        return self._call(self._verify, self._drafts, self._positions, tokens)

    def _call(
        self,
        graph: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        tokens: torch.Tensor,
        positions: torch.Tensor,
        written: list[int],
    ) -> torch.Tensor:
        """Run a forward pass that writes `written` into the cache: a prefill piece, or a
        compiled step on its fixed input buffers. A CUDA graph reuses its output memory on the
        next replay, so its logits are copied out; a failure (out of memory) leaves a cache
        written half-way, so it is forgotten."""
        if self.compile == "cuda-graphs":
            torch.compiler.cudagraph_mark_step_begin()
        try:
            logits = graph(tokens, positions)
        except BaseException:
            self._seek(0)
            raise
        self.ids.extend(written)
        return logits.clone() if self.compile == "cuda-graphs" else logits

    def rewind(self, length: int) -> None:
        """Forget every position from `length` on (drafted tokens the model did not write)."""
        self._seek(length)

    def room(self) -> int:
        """Positions left after the current contents."""
        return self.capacity - len(self.ids)


def heal_mask(scores: torch.Tensor, constraint: Constraint) -> torch.Tensor:
    """`scores` ([1, vocab]) with every token healing does not allow yet at -inf (as they are
    while it has nothing to say). Notes in `constraint.forced` when the model's own first
    choice was refused."""
    allowed = constraint.allowed()
    if allowed is None:
        return scores
    index = torch.from_numpy(allowed).to(scores.device)
    masked = torch.full_like(scores, -float("inf"))
    masked[:, index] = scores[:, index]
    if not torch.isfinite(masked[0, int(scores[0].argmax())]):
        constraint.forced = True
    return masked


def choose(logits: torch.Tensor, temperature: float, constraint: Constraint) -> tuple[int, float]:
    """The next token (greedy, or sampled with top-p 0.95) and its log-probability under the
    unconstrained distribution; `constraint` masks tokens while healing."""
    scores = heal_mask(logits, constraint)[0]
    if temperature > 0:
        probs = torch.softmax(scores / temperature, dim=-1)
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < TOP_P
        sorted_probs = sorted_probs * keep
        token = int(order[torch.multinomial(sorted_probs / sorted_probs.sum(), 1)])
    else:
        token = int(scores.argmax())
    logprob = float(torch.log_softmax(logits[0], dim=-1)[token])
    constraint.advance(token)
    return token, logprob


def lookup_draft(history: list[int], size: int, ngrams: tuple[int, ...] = (3, 2)) -> list[int]:
    """Prompt lookup: the `size` tokens that followed the latest earlier occurrence of the
    history's last 3 (else 2) tokens; [] when there is none. Searched as bytes (C speed)."""
    data = array("i", history).tobytes()
    for n in ngrams:
        if len(history) <= n:
            continue
        tail = data[-4 * n :]
        at = data.rfind(tail, 0, len(data) - 4)  # ends before the last token: not the tail
        while at > 0 and at % 4:  # a match must start on a token boundary
            at = data.rfind(tail, 0, at + len(tail) - 1)
        if at >= 0 and not at % 4:
            return history[at // 4 + n : at // 4 + n + size]
    return []


def decode(
    decoder: StaticDecoder,
    logits: torch.Tensor,
    max_new: int,
    temperature: float,
    constraint: Constraint,
    eos_id: int,
    should_stop: Callable[[list[int]], str],
    lookup: bool = False,
) -> Decoded:
    """Generate up to `max_new` tokens from `logits` (the prompt's last). `should_stop(tokens)`
    is asked after every token and returns a reason ("" to go on). With `lookup` (greedy), a
    step also checks up to `decoder.draft` tokens copied from earlier in the text and keeps
    those the model would have written itself."""
    out = Decoded()

    def take(token: int, logprob: float) -> bool:
        """Record a token; whether decoding is over."""
        out.tokens.append(token)
        out.logprobs.append(logprob)
        if token == eos_id:
            return True
        out.reason = should_stop(out.tokens)
        return bool(out.reason) or len(out.tokens) == max_new

    token, logprob = choose(logits, temperature, constraint)
    if take(token, logprob):
        return out
    while decoder.room() > 0:
        draft: list[int] = []
        if lookup and constraint.done and decoder.room() > decoder.draft > 0:
            draft = lookup_draft([*decoder.ids, token], decoder.draft)
        if not draft:
            token, logprob = choose(decoder.step(token), temperature, constraint)
            if take(token, logprob):
                return out
            continue
        start = len(decoder.ids)
        checked = decoder.verify([token, *draft, *[draft[-1]] * (decoder.draft - len(draft))])
        best = checked.argmax(-1)
        logprobs = torch.log_softmax(checked, dim=-1).gather(-1, best[:, None])[:, 0].tolist()
        best_ids = best.tolist()
        kept, over = 0, False
        while not over and kept < len(draft) and best_ids[kept] == draft[kept]:
            over = take(draft[kept], logprobs[kept])
            kept += 1
        decoder.drafted += len(draft)
        decoder.accepted += kept
        decoder.rewind(start + 1 + kept)  # the token and the drafts the model agreed with
        if over:
            return out
        token, logprob = best_ids[kept], logprobs[kept]
        if take(token, logprob):
            return out
    return out
