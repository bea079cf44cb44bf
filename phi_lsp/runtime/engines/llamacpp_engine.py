"""The llama.cpp engine: a GGUF file through llama-cpp-python.

One long-lived `Llama` per loaded model: llama-cpp-python keeps the evaluated tokens and their KV
cache, and `Llama.generate` only evaluates the part of a new prompt that differs, so a keystroke
at the end of a long file costs a few tokens, not the whole prompt. `Llama` is not thread-safe:
the caller runs one generation at a time.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

from phi_lsp.errors import ModelLoadError
from phi_lsp.models.check import GGUFInfo, check_gguf
from phi_lsp.runtime.engines.base import Generation, GenerationRequest, common_prefix
from phi_lsp.runtime.engines.healing import Constraint, TokenTable, pick_token, text_after
from phi_lsp.runtime.engines.llama_buffers import weight_buffers

log = logging.getLogger(__name__)

# Prompt tokens evaluated between two looks at the stop flag: a cold prompt is evaluated in
# pieces so that a superseded request or an idle-time prefill gives the engine up within one
# piece (~0.8 s at phi-1's size on 2 CPU cores; 64-token batches run at the speed of 256).
PREFILL_CHUNK = 64


# `kvCacheValues` → ggml type of the V cache.
KV_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0}


def v_cache_type(kv_cache_values: str, info: GGUFInfo) -> str:
    """The V cache type to use: q8_0 blocks are 32 wide, so a head size must fit them."""
    if kv_cache_values == "q8_0" and (info.head_dim or 0) % 32:
        return "f16"  # e.g. tiny test models
    return kv_cache_values


class LlamaCppEngine:
    name = "llamacpp"
    warms = True

    def __init__(
        self,
        path: Path,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        gpu_layers: int = -1,
        cpu_buffers: str = "auto",
        kv_cache_values: str = "f16",
        prompt_lookup_tokens: int = 0,
        adapter: Path | None = None,
    ) -> None:
        info = check_gguf(path)
        lora = None
        if adapter is not None:
            from phi_lsp.runtime.adapters import lora_gguf_path

            lora = lora_gguf_path(adapter)
            if lora is None:
                raise ModelLoadError(
                    f"{adapter} has no lora.gguf for llama.cpp (run `phi-lsp finetune --export "
                    "gguf`, or use the transformers backend)."
                )
        self.n_ctx = min(n_ctx, info.context_length or n_ctx)
        kv_cache_values = v_cache_type(kv_cache_values, info)
        threads = n_threads or max(1, os.cpu_count() or 1)
        try:
            with weight_buffers(cpu_buffers, path) as self._buffers:
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    n_batch=PREFILL_CHUNK,  # the compute buffer for one piece is all it needs
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=gpu_layers if llama_cpp.llama_supports_gpu_offload() else 0,
                    flash_attn=True,  # also what a quantized V cache needs
                    type_v=KV_TYPES[kv_cache_values],
                    verbose=False,
                    lora_path=str(lora) if lora else None,
                    use_mmap=self._buffers.use_mmap,
                    # Draft tokens copied from the prompt, verified in one pass. It costs
                    # logits for every position (n_ctx x n_vocab floats: 419 MB at phi-1's
                    # size): opt-in. llama-cpp-python sizes that array by `logits_all`, so a
                    # draft model without it fails on prompts longer than one batch.
                    draft_model=LlamaPromptLookupDecoding(num_pred_tokens=prompt_lookup_tokens)
                    if prompt_lookup_tokens
                    else None,
                    logits_all=bool(prompt_lookup_tokens),
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc
        self.eos_id = int(self.llm.token_eos())
        self.draft_model = self.llm.draft_model
        self.table = TokenTable(
            [self.llm.detokenize([i]) for i in range(self.llm.n_vocab())], exclude=[self.eos_id]
        )
        self._rng = np.random.default_rng()
        log.info(
            "llama.cpp: %s (%s, %d threads, ctx %d, V cache %s, %s)",
            path,
            info.architecture,
            threads,
            self.n_ctx,
            kv_cache_values,
            self._buffers.description,
        )

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def decode(self, tokens: list[int]) -> str:
        return self.llm.detokenize(tokens).decode("utf-8", errors="replace")

    def cached_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens of `tokens` are already in the KV cache."""
        return common_prefix(self.llm._input_ids[: self.llm.n_tokens], tokens)

    def generate(self, request: GenerationRequest, stop: threading.Event) -> Generation:
        t0 = time.perf_counter()
        tokens = self.tokenize(request.prompt)
        heal = self.table.plan(request.prompt, tokens, request.heal)
        if heal.removed:
            tokens = tokens[: heal.keep]
        tokens = tokens or [self.eos_id]
        if request.fresh:
            self.llm.reset()
        evaluated = len(tokens) - self.cached_prefix(tokens)
        if not self._prefill(tokens, stop):
            return Generation("", len(tokens), evaluated, 0, "cancelled", _ms(t0))
        t_prompt = time.perf_counter()
        constraint = Constraint(self.table, heal.removed)
        out = self._heal(tokens, constraint, request.temperature, stop)
        logprobs: list[float] = []
        stopped = "cancelled" if stop.is_set() else "length"
        limit = request.max_new_tokens + heal.given_back
        text = text_after(self.table, out, heal, self.decode)
        # Draft tokens are evaluated in one batch, so the last logits would not be those the
        # token was sampled from: log-probabilities (ranking bodies) turn prompt lookup off.
        self.llm.draft_model = None if request.logprobs else self.draft_model
        sampled = self.llm.generate(
            tokens + out, temp=request.temperature, top_k=40, top_p=0.95, min_p=0.05,
            repeat_penalty=1.0,
        )  # fmt: skip
        for token in sampled if stopped != "cancelled" else ():
            if token == self.eos_id:
                stopped = "eos"
                break
            out.append(token)
            text = text_after(self.table, out, heal, self.decode)
            if request.logprobs:
                logprobs.append(self._last_logprob(token))
            if stop.is_set():
                stopped = "cancelled"
                break
            if len(out) >= limit:
                break
            if request.is_done is not None and text is not None and request.is_done(text):
                stopped = "done"
                break
            if request.past_deadline():
                stopped = "deadline"
                break
        timings = _ms(t0)
        timings["prompt"] = (t_prompt - t0) * 1000
        return Generation(
            text or "",
            len(tokens),
            evaluated,
            len(out),
            stopped,
            timings,
            logprobs,
            healed=heal.text,
            forced=constraint.forced,
        )

    def _heal(
        self, tokens: list[int], constraint: Constraint, temperature: float, stop: threading.Event
    ) -> list[int]:
        """Generate until the healed-away text is written again; the tokens chosen.

        Each step evaluates one token and picks the next from the masked logits, as
        llama.cpp's own sampler would; the last token chosen is left for generate() to
        evaluate, so healing adds no model evaluation.
        """
        out: list[int] = []
        while not constraint.done and not stop.is_set():
            seq = tokens + out
            self.llm.n_tokens = len(seq) - 1  # the KV cache holds seq[:-1] (see _prefill)
            self.llm.eval(seq[-1:])
            logits = constraint.mask(self._logits())
            token = pick_token(logits, temperature, self._rng)
            constraint.advance(token)
            out.append(token)
        return out

    def _logits(self) -> np.ndarray:
        """The logits of the last evaluated position."""
        pointer = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),))

    def _last_logprob(self, token: int) -> float:
        """log p(token) from the logits it was just sampled from (the last evaluated position)."""
        logits = self._logits().astype(np.float64)
        peak = logits.max()
        return float(logits[token] - peak - np.log(np.exp(logits - peak).sum()))

    def warm(self, prompt: str, stop: threading.Event) -> int:
        tokens = self.tokenize(prompt)
        return self._evaluate(tokens, len(tokens), stop)

    def _prefill(self, tokens: list[int], stop: threading.Event) -> bool:
        """Evaluate all but the last prompt token (generate() evaluates it), looking at `stop`."""
        self._evaluate(tokens, len(tokens) - 1, stop)
        return not stop.is_set()

    def _evaluate(self, tokens: list[int], upto: int, stop: threading.Event) -> int:
        """Extend the KV cache to hold `tokens[:upto]`, in pieces; the tokens evaluated."""
        done = start = self.cached_prefix(tokens)
        while done < upto and not stop.is_set():
            # Drop a cached tail that diverges (eval() clears the KV cells from n_tokens on);
            # only right before an eval, so the logits always belong to the last cached token.
            self.llm.n_tokens = done
            piece = tokens[done : min(upto, done + PREFILL_CHUNK)]
            self.llm.eval(piece)
            done += len(piece)
        return done - start

    def close(self) -> None:
        self.llm.close()


def _ms(t0: float) -> dict[str, float]:
    return {"total": (time.perf_counter() - t0) * 1000}
