"""The transformers engine's device, dtype and attention choices, and its CUDA paths."""

from __future__ import annotations

import importlib.util
import threading

import pytest
import torch
from needs import need_module

from phi_lsp.runtime.devices import pick_attention, pick_dtype
from phi_lsp.runtime.engines.base import GenerationRequest
from phi_lsp.runtime.engines.transformers_engine import TransformersEngine
from testkit.tinymodel import TinyModel

PROMPT = "def add(a, b):\n    return"


def test_cpu_runs_fp32_with_sdpa() -> None:
    assert pick_dtype("cpu") == torch.float32
    assert pick_attention("cpu", torch.float32) == "sdpa"
    # flash-attention 2 is only ever chosen on CUDA in half precision
    assert pick_attention("cuda", torch.float32) == "sdpa"


def test_cpu_engine_loads_in_fp32(tiny_model: TinyModel) -> None:
    engine = TransformersEngine(tiny_model.hf_dir, device="cpu")
    assert engine.model.dtype == torch.float32
    assert engine.model.config._attn_implementation == "sdpa"
    assert engine.eos_id == 0  # the tiny tokenizer's <|endoftext|>
    engine.close()


@pytest.mark.cuda
def test_cuda_engine_uses_half_precision_and_flash_attention_when_installed(
    tiny_model: TinyModel,
) -> None:
    engine = TransformersEngine(tiny_model.hf_dir, device="cuda")
    assert engine.model.dtype in (torch.bfloat16, torch.float16)
    want = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    assert engine.model.config._attn_implementation == want
    out = engine.generate(GenerationRequest(PROMPT, max_new_tokens=8), threading.Event())
    assert out.generated_tokens > 0 or out.stopped == "eos"
    engine.close()


@pytest.mark.cuda
def test_cuda_engine_in_4bit_nf4(tiny_model: TinyModel) -> None:
    need_module("bitsandbytes")
    engine = TransformersEngine(tiny_model.hf_dir, device="cuda", quantization="nf4")
    assert getattr(engine.model, "is_loaded_in_4bit", False)
    out = engine.generate(GenerationRequest(PROMPT, max_new_tokens=8), threading.Event())
    assert out.generated_tokens > 0 or out.stopped == "eos"
    engine.close()
