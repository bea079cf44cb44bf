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
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import StaticCache

from phi_lsp.errors import ModelLoadError
from phi_lsp.runtime.engines.base import common_prefix

log = logging.getLogger(__name__)

# Prompt tokens per eager forward pass: a stop flag is looked at between pieces. Prefill ahead
# of a request (`warm`) takes smaller pieces, so that a request waits for less.
PREFILL_CHUNK = 512
WARM_CHUNK = 64
# The longest prompt tail that may go through the compiled step token by token (see
# `StaticDecoder._calibrate`).
MAX_TAIL_STEPS = 16

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


class StaticDecoder:
    """The model, a static KV cache of `capacity` positions, and the token ids it holds.

    With `draft` > 0 (prompt lookup) a second fixed-shape step checks a token and `draft`
    drafted ones in one call: compiled too, it costs about one decode step. A prompt tail of
    up to `tail_steps` tokens (a keystroke's worth) is written by the compiled step, one token
    at a time; None measures at load where that is cheaper than one eager pass.

    Use it from the thread that built it: CUDA graph trees are kept per thread, so another
    thread would record the graphs again during a request. The engine worker loads and serves
    on its one thread."""

    def __init__(
        self,
        model: Any,
        capacity: int,
        compile: str = "off",
        draft: int = 0,
        tail_steps: int | None = None,
    ) -> None:
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
        self.tail_steps = 0
        self.pass_ms: tuple[float, float] | None = None  # a 1-token eager pass, a step
        if options is not None:
            self._step = torch.compile(self._forward, **options)
            self._verify = torch.compile(self._forward_all, **options)
            self.compile_seconds = self._compile_now()
            if tail_steps is None:
                tail_steps = self._calibrate()
        self.tail_steps = min(tail_steps or 0, MAX_TAIL_STEPS)
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

    def _calibrate(self) -> int:
        """How many tokens of prompt tail cost less as compiled steps than as one eager pass.
        On a GPU an eager pass of a few tokens costs what one token does (Python and kernel
        launches: ~10 ms at phi-1's shape) and a CUDA-graph step a fraction of that, so a
        keystroke's tail goes through the graph; on a CPU the matrix products dominate and
        the answer is 0 or 1. Measured on this machine, once, at load."""
        one = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        at_one = torch.ones((1,), dtype=torch.long, device=self.device)

        def clock(run: Callable[[], object]) -> float:
            times = []
            for _ in range(3):
                self._seek(1)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                run()
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)

        with torch.inference_mode():
            self.prefill([0], threading.Event(), reuse=False)
            eager = clock(lambda: self._call(self._forward, one, at_one, [0]))
            step = clock(lambda: self.step(0))
        self._seek(0)
        self.pass_ms = (eager * 1000, step * 1000)
        steps = min(MAX_TAIL_STEPS, int(eager / step))
        log.info(
            "a 1-token eager pass %.2f ms, a compiled step %.2f ms: tails of up to %d tokens "
            "go through the step",
            *self.pass_ms,
            steps,
        )
        return steps

    def _check(self) -> None:
        """Refuse to serve if the cache path disagrees with a plain forward pass: a transformers
        release that moves the cache's write position elsewhere, or an attention kernel that
        ignores the mask, would otherwise serve confident nonsense. Eager pieces, tails through
        the step, and both compiled steps are checked (the drafts' one with prompt lookup)."""
        vocab = int(self.model.config.vocab_size)
        ids = [(7 * i + 3) % vocab for i in range(10 + self.draft)]
        with torch.inference_mode():
            plain = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
            want = plain.logits[0, 7:].float()
            worst = max(self._check_with(tail, ids, want) for tail in {0, self.tail_steps})
        scale = float(want.abs().max())
        tolerance = 1e-3 * (1 + scale) if self.model.dtype == torch.float32 else 0.05 * (1 + scale)
        if worst > tolerance:
            raise RuntimeError(
                "the static KV cache disagrees with a plain forward pass "
                f"(max |Δlogit| {worst:.3g})"
            )

    def _check_with(self, tail_steps: int, ids: list[int], want: torch.Tensor) -> float:
        """The largest |Δlogit| against `want` (a plain forward pass's logits over `ids` from
        position 7 on) with tails of up to `tail_steps` tokens written by the step."""
        kept, self.tail_steps = self.tail_steps, tail_steps
        try:
            self.prefill(ids[:4], threading.Event(), reuse=False)
            self.prefill(ids[:2] + ids[4:8], threading.Event())  # reuse 2, overwrite 2
            last, _ = self.prefill(ids[:8], threading.Event())  # reuse 2: stale ones behind
            assert last is not None
            got = [last[0], self.step(ids[8])[0]]
            if self.draft:
                got.extend(self.verify(ids[9:]))
            return float((torch.stack(got) - want[: len(got)]).abs().max())
        finally:
            self.tail_steps = kept
            self._seek(0)

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
        """Append `ids` to the cache, in eager pieces or (a short tail) compiled steps; the
        last logits (None if stopped or there was nothing to add)."""
        logits = None
        if len(ids) <= self.tail_steps:
            for token in ids:
                if stop.is_set():
                    return None
                logits = self.step(token)
            return logits
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
