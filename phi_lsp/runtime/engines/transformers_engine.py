"""The transformers engine: `PhiForCausalLM` from an HF safetensors folder.

On CUDA: bf16 (fp16 where bf16 is missing) with flash-attention 2 when flash-attn is importable,
else SDPA; optional 4-bit NF4 through bitsandbytes. On CPU: fp32. phi-1's config says float32
and has no eos id, so the dtype is always chosen here and eos falls back to `<|endoftext|>`.
"""

from __future__ import annotations

import logging
import threading
import time
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
)
from phi_lsp.runtime.engines.base import Generation, GenerationRequest, common_prefix
from phi_lsp.runtime.engines.healing import Constraint, Heal, TokenTable, hf_pieces, text_after

log = logging.getLogger(__name__)


class _StopOnEvent(StoppingCriteria):
    """Ends generate() after the current token when the request is superseded or done."""

    def __init__(
        self,
        stop: threading.Event,
        request: GenerationRequest,
        engine: TransformersEngine,
        prompt_len: int,
        heal: Heal,
    ) -> None:
        self.stop, self.request, self.engine, self.prompt_len = stop, request, engine, prompt_len
        self.heal = heal
        self.reason = ""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kw: Any) -> Any:
        if self.stop.is_set():
            self.reason = "cancelled"
            return True
        if self.request.is_done is not None:
            new = input_ids[0, self.prompt_len :].tolist()
            text = text_after(self.engine.table, new, self.heal, self.engine.decode)
            if text is not None and self.request.is_done(text):
                self.reason = "done"
                return True
        if self.request.past_deadline():
            self.reason = "deadline"
            return True
        return False


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
        allowed = self.constraint.allowed()
        if allowed is None:
            return scores
        index = torch.from_numpy(allowed).to(scores.device)
        masked = torch.full_like(scores, -float("inf"))
        masked[:, index] = scores[:, index]
        if not torch.isfinite(masked[0, int(scores[0].argmax())]):
            self.constraint.forced = True
        return masked


# Prompt tokens per forward pass when prefilling ahead of a request (see `warm`).
WARM_CHUNK = 64


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
        log.info(
            "transformers: %s on %s, %s, %s",
            path,
            self.device,
            dtype,
            kwargs["attn_implementation"],
        )

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
        input_ids = torch.tensor([ids], device=self.model.device)
        criteria = _StopOnEvent(stop, request, self, len(ids), heal)
        constraint = Constraint(self.table, heal.removed)
        sampling: dict[str, Any] = {"do_sample": False}
        if request.temperature > 0:
            sampling = {"do_sample": True, "temperature": request.temperature, "top_p": 0.95}
        if self.prompt_lookup_tokens and request.temperature == 0 and not request.logprobs:
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
                    max_new_tokens=request.max_new_tokens + heal.given_back,
                    eos_token_id=self.eos_id,
                    pad_token_id=self.eos_id,
                    stopping_criteria=StoppingCriteriaList([criteria]),
                    logits_processor=LogitsProcessorList([_Healing(constraint, len(ids))]),
                    return_dict_in_generate=True,
                    output_logits=request.logprobs,
                    past_key_values=cache,
                    **sampling,
                )
        except BaseException:
            self._cache, self._cache_ids = None, []  # written half-way (e.g. CUDA OOM): unusable
            raise
        assert not isinstance(out, torch.Tensor)  # return_dict_in_generate=True
        self._keep_cache(out.past_key_values if cache is not None else None, out.sequences[0])
        new = out.sequences[0, len(ids) :].tolist()
        logprobs = []
        if request.logprobs and out.logits:
            for step, token in zip(out.logits, new, strict=False):
                logprobs.append(float(torch.log_softmax(step[0].float(), dim=-1)[token]))
        hit_eos = bool(new) and new[-1] == self.eos_id
        if hit_eos:
            new, logprobs = new[:-1], logprobs[: len(new) - 1]
        return Generation(
            text=text_after(self.table, new, heal, self.decode) or "",
            prompt_tokens=len(ids),
            evaluated_tokens=len(ids) - reused,
            generated_tokens=len(new),
            stopped=criteria.reason or ("eos" if hit_eos else "length"),
            timings_ms={"total": (time.perf_counter() - t0) * 1000},
            token_logprobs=logprobs,
            healed=heal.text,
            forced=constraint.forced,
        )

    def warm(self, prompt: str, stop: threading.Event) -> int:
        if self.prompt_lookup_tokens:
            return 0  # generate() does not reuse the cache with prompt lookup
        ids = self.tokenize(prompt)
        if len(ids) < 2:
            return 0
        # A token that never matches: every token of `ids` that is cached can be reused.
        reused, cache = self._reusable_cache([*ids, -1])
        done = reused
        try:
            with torch.inference_mode():
                while done < len(ids) and not stop.is_set():
                    piece = ids[done : done + WARM_CHUNK]
                    self.model(
                        input_ids=torch.tensor([piece], device=self.model.device),
                        past_key_values=cache,
                        use_cache=True,
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
