"""The transformers engine: `PhiForCausalLM` from an HF safetensors folder.

On CUDA: bf16 (fp16 where bf16 is missing) with flash-attention 2 when flash-attn is importable,
else SDPA; optional 4-bit NF4 through bitsandbytes. On CPU: fp32. phi-1's config says float32
and has no eos id, so the dtype is always chosen here and eos falls back to `<|endoftext|>`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from phi_lsp.errors import ModelLoadError
from phi_lsp.models.check import check_hf_folder
from phi_lsp.runtime.devices import (
    eos_token_id,
    nf4_config,
    pick_attention,
    pick_device,
    pick_dtype,
    sdpa_decode_kernel,
)
from phi_lsp.runtime.engines.base import Generation, GenerationRequest, common_prefix
from phi_lsp.runtime.engines.decode_loop import Decoded, decode, heal_mask
from phi_lsp.runtime.engines.healing import Constraint, TokenTable, hf_pieces, text_after
from phi_lsp.runtime.engines.static_decoding import (
    WARM_CHUNK,
    StaticDecoder,
    cache_argument,
    decoding_plan,
)

log = logging.getLogger(__name__)


class _StopOnEvent(StoppingCriteria):
    """Ends generate() after the current token when the request is superseded or done."""

    def __init__(self, ask: Callable[[list[int]], str], prompt_len: int) -> None:
        self.ask, self.prompt_len = ask, prompt_len
        self.reason = ""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kw: Any) -> Any:
        self.reason = self.ask(input_ids[0, self.prompt_len :].tolist())
        return bool(self.reason)


class _Healing(LogitsProcessor):
    """Masks the first generated tokens until they have written the healed-away text again.

    It runs before sampling's temperature and top-p, so a sampled token also obeys it.
    """

    def __init__(self, constraint: Constraint, prompt_len: int) -> None:
        self.constraint, self.prompt_len = constraint, prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        if self.constraint.done:
            return scores
        if input_ids.shape[1] > self.prompt_len:
            self.constraint.advance(int(input_ids[0, -1]))
        return heal_mask(scores, self.constraint)


class TransformersEngine:
    name = "transformers"
    warms = True

    def __init__(
        self,
        path: Path,
        device: str = "auto",
        n_ctx: int = 2048,
        n_threads: int | None = None,
        quantization: str = "none",
        prompt_lookup_tokens: int = 0,
        adapter: Path | None = None,
        compiled_decoding: str = "auto",
    ) -> None:
        config = check_hf_folder(path)
        self.device = pick_device(device)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError("device is 'cuda' but torch sees no CUDA GPU; set device to auto.")
        if n_threads:
            torch.set_num_threads(n_threads)
        dtype = pick_dtype(self.device)
        kwargs: dict[str, Any] = {
            "dtype": dtype,
            "attn_implementation": pick_attention(self.device, dtype),
            "use_safetensors": True,
            "trust_remote_code": False,
        }
        if quantization == "nf4":
            kwargs["quantization_config"] = nf4_config(dtype)
            kwargs["device_map"] = self.device
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if quantization != "nf4":
            self.model.to(self.device)  # type: ignore[arg-type]
        if adapter is not None:
            self.model = _with_adapter(self.model, adapter, merge=quantization != "nf4")
        self.model.eval()
        self.n_ctx = min(n_ctx, int(config.get("max_position_embeddings") or n_ctx))
        try:
            self.eos_id = eos_token_id(config, self.tokenizer)
        except ValueError as exc:
            raise ModelLoadError(f"{path}: {exc}") from exc
        rows = int(self.model.config.vocab_size)
        self.table = TokenTable(hf_pieces(self.tokenizer, rows), exclude=[self.eos_id])
        self.prompt_lookup_tokens = prompt_lookup_tokens
        # The KV cache of the last generation and the token ids it holds, reused for the
        # longest common prefix of the next prompt (typing at the end of a file).
        self._cache: DynamicCache | None = None
        self._cache_ids: list[int] = []
        plan = decoding_plan(compiled_decoding, self.device)
        self.decoder = self._static_decoder(plan, strict=compiled_decoding != "auto")
        self.decoding = "generate()" if self.decoder is None else f"static/{self.decoder.compile}"
        self.attention = kwargs["attn_implementation"]
        if self.attention == "sdpa" and self.device == "cuda":
            kernel = sdpa_decode_kernel(dtype, self.model.config)
            self.attention += f" ({kernel} kernel)" if kernel else ""
        log.info(
            "transformers: %s on %s, %s, attention %s, decoding %s",
            path,
            self.device,
            dtype,
            self.attention,
            self.decoding,
        )

    def _static_decoder(self, plan: str | None, strict: bool) -> StaticDecoder | None:
        """The static-cache decoder, compiled now (at load) so that no request pays for it.
        If compiling fails on `auto` (e.g. an NF4 kernel dynamo cannot trace), generate()
        serves instead and the log says why; an explicit `on` fails the load."""
        if plan is None:
            return None
        try:
            return StaticDecoder(self.model, self.n_ctx, plan, self.prompt_lookup_tokens)
        except Exception as exc:
            if strict:
                raise ModelLoadError(
                    f"compiledDecoding: the decode step did not compile: {exc}"
                ) from exc
            log.warning("compiled decoding is off: the decode step did not compile: %s", exc)
            return None

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, tokens: list[int]) -> str:
        return str(self.tokenizer.decode(tokens, skip_special_tokens=True))

    def generate(self, request: GenerationRequest, stop: threading.Event) -> Generation:
        t0 = time.perf_counter()
        ids = self.tokenize(request.prompt)
        heal = self.table.plan(request.prompt, ids, request.heal)
        if heal.removed:
            ids = ids[: heal.keep]
        if not ids:
            ids = [self.eos_id]
        constraint = Constraint(self.table, heal.removed)
        max_new = request.max_new_tokens + heal.given_back

        def ask(new: list[int]) -> str:
            """Why to stop after `new` ("" to go on): superseded, done, or out of time."""
            if stop.is_set():
                return "cancelled"
            if request.is_done is not None:
                text = text_after(self.table, new, heal, self.decode)
                if text is not None and request.is_done(text):
                    return "done"
            return "deadline" if request.past_deadline() else ""

        lookup = bool(self.prompt_lookup_tokens) and request.temperature == 0
        lookup = lookup and not request.logprobs
        if self.decoder is not None and len(ids) + max_new <= self.n_ctx:
            run = self._decode_static(ids, request, constraint, max_new, ask, stop, lookup)
        else:
            run = self._decode_generate(ids, request, constraint, max_new, ask, lookup)
        new, logprobs = run.tokens, run.logprobs
        hit_eos = bool(new) and new[-1] == self.eos_id
        if hit_eos:
            new, logprobs = new[:-1], logprobs[: len(new) - 1]
        return Generation(
            text=text_after(self.table, new, heal, self.decode) or "",
            prompt_tokens=len(ids),
            evaluated_tokens=len(ids) - run.reused,
            generated_tokens=len(new),
            stopped=run.reason or ("eos" if hit_eos else "length"),
            timings_ms={"total": (time.perf_counter() - t0) * 1000},
            token_logprobs=logprobs,
            healed=heal.text,
            forced=constraint.forced,
        )

    def _decode_static(
        self,
        ids: list[int],
        request: GenerationRequest,
        constraint: Constraint,
        max_new: int,
        ask: Callable[[list[int]], str],
        stop: threading.Event,
        lookup: bool,
    ) -> Decoded:
        """The compiled path: prefill into the static cache, then one graph call per token
        (with prompt lookup, one call per token and its drafts)."""
        assert self.decoder is not None
        with torch.inference_mode():
            logits, reused = self.decoder.prefill(ids, stop, reuse=not request.fresh)
            if logits is None:
                return Decoded(reason="cancelled")
            out = decode(
                self.decoder,
                logits,
                max_new,
                request.temperature,
                constraint,
                self.eos_id,
                ask,
                lookup,
            )
        out.reused = reused
        if not request.logprobs:
            out.logprobs = []
        return out

    def _decode_generate(
        self,
        ids: list[int],
        request: GenerationRequest,
        constraint: Constraint,
        max_new: int,
        ask: Callable[[list[int]], str],
        lookup: bool,
    ) -> Decoded:
        """transformers' generate() on a dynamic cache (CPU, MPS, prompt lookup)."""
        input_ids = torch.tensor([ids], device=self.model.device)
        criteria = _StopOnEvent(ask, len(ids))
        sampling: dict[str, Any] = {"do_sample": False}
        if request.temperature > 0:
            sampling = {"do_sample": True, "temperature": request.temperature, "top_p": 0.95}
        if lookup:
            # Draft tokens copied from the prompt (code repeats itself), verified in one pass.
            sampling["prompt_lookup_num_tokens"] = self.prompt_lookup_tokens
            reused, cache = 0, None
        else:
            reused, cache = self._reusable_cache([] if request.fresh else ids)
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=max_new,
                    eos_token_id=self.eos_id,
                    pad_token_id=self.eos_id,
                    stopping_criteria=StoppingCriteriaList([criteria]),
                    logits_processor=LogitsProcessorList([_Healing(constraint, len(ids))]),
                    return_dict_in_generate=True,
                    output_logits=request.logprobs,
                    **{cache_argument(self.model): cache},
                    **sampling,
                )
        except BaseException:
            self._cache, self._cache_ids = None, []  # written half-way (e.g. CUDA OOM): unusable
            raise
        assert not isinstance(out, torch.Tensor)  # return_dict_in_generate=True
        kept = getattr(out, cache_argument(self.model)) if cache is not None else None
        self._keep_cache(kept, out.sequences[0])
        new = out.sequences[0, len(ids) :].tolist()
        logprobs = []
        if request.logprobs and out.logits:
            for step, token in zip(out.logits, new, strict=False):
                logprobs.append(float(torch.log_softmax(step[0].float(), dim=-1)[token]))
        return Decoded(new, logprobs, criteria.reason, reused)

    def warm(self, prompt: str, stop: threading.Event) -> int:
        ids = self.tokenize(prompt)
        if len(ids) < 2:
            return 0
        if self.decoder is not None:
            with torch.inference_mode():
                return self.decoder.warm(ids[: self.n_ctx], stop)
        if self.prompt_lookup_tokens:
            return 0  # generate() does not reuse the cache with prompt lookup
        # A token that never matches: every token of `ids` that is cached can be reused.
        reused, cache = self._reusable_cache([*ids, -1])
        done = reused
        try:
            with torch.inference_mode():
                while done < len(ids) and not stop.is_set():
                    piece = ids[done : done + WARM_CHUNK]
                    self.model(
                        input_ids=torch.tensor([piece], device=self.model.device),
                        use_cache=True,
                        **{cache_argument(self.model): cache},
                    )
                    done += len(piece)
        except BaseException:
            self._cache, self._cache_ids = None, []  # a half-filled cache: start over
            raise
        self._cache, self._cache_ids = cache, ids[:done]
        return done - reused

    def _reusable_cache(self, ids: list[int]) -> tuple[int, DynamicCache]:
        """The kept KV cache cut to the longest prefix it shares with `ids`, and that length.

        At least one prompt token is always left to evaluate: generate() needs fresh logits.
        """
        if self._cache is None:
            return 0, DynamicCache(config=self.model.config)
        reuse = min(common_prefix(self._cache_ids, ids), len(ids) - 1)
        if reuse <= 0:
            return 0, DynamicCache(config=self.model.config)
        extra = self._cache.get_seq_length() - reuse
        if extra > 0:
            self._cache.crop(-extra)  # a negative count removes tokens (transformers 4 and 5)
        return reuse, self._cache

    def _keep_cache(self, cache: Any, sequence: torch.Tensor) -> None:
        """Keep the cache after a generation, with the token ids it holds."""
        self._cache = cache
        self._cache_ids = sequence[: cache.get_seq_length()].tolist() if cache is not None else []

    def close(self) -> None:
        self._cache = None
        self.decoder = None
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _with_adapter(model: Any, adapter: Path, merge: bool) -> Any:
    """The model with a LoRA adapter from `phi-lsp finetune` applied (merged when possible)."""
    try:
        from phi_lsp.runtime.adapters import apply_adapter

        return apply_adapter(model, adapter, merge=merge)
    except ImportError as exc:
        raise ModelLoadError(f"adapters need peft: pip install 'phi-lsp[train]' ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"the adapter {adapter} cannot be applied: {exc}") from exc
