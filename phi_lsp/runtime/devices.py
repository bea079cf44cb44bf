"""Device, precision, attention, 4-bit quantization and eos: one rule for engine and trainer.

A LoRA adapter trained on one precision and served on another behaves differently, so the
transformers engine and the trainer choose these the same way:

- device "auto": CUDA, then Apple's MPS, then the CPU;
- dtype "auto": bf16 on CUDA (fp16 where the card lacks bf16), fp16 on MPS (half the memory;
  MPS has no bf16 matmul on older macOS), fp32 on the CPU (phi-1's config says float32);
- attention "auto": flash-attention 2 on CUDA in half precision when flash-attn is installed,
  else PyTorch's SDPA;
- NF4: 4-bit NormalFloat with double quantization (the quantization constants quantized too,
  ~0.4 bit per weight less), computing in the chosen dtype: QLoRA's recipe, and what the
  adapter then runs on;
- eos: the config's, else the tokenizer's, else `<|endoftext|>` in the vocabulary (phi-1's
  config has no eos id).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def accelerators() -> tuple[str | None, bool]:
    """(the CUDA GPU's name or None, whether Apple's MPS is there), for `phi-lsp doctor`."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return cuda, mps


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: str = "auto") -> torch.dtype:
    if requested != "auto":
        return DTYPES[requested]
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def pick_attention(device: str, dtype: torch.dtype, requested: str = "auto") -> str:
    """flash-attention 2 only on CUDA in half precision with flash-attn installed; else SDPA."""
    if requested != "auto":
        return requested
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if device == "cuda" and dtype in (torch.float16, torch.bfloat16) and has_flash:
        return "flash_attention_2"
    return "sdpa"


def sdpa_decode_kernel(dtype: torch.dtype, config: Any) -> str | None:
    """The SDPA kernel that runs a masked decode step of this shape on CUDA (what the static
    KV cache's step asks for: one query over a masked run of keys): the first of torch's
    kernels, fastest first, that accepts it. None off CUDA."""
    if not torch.cuda.is_available():
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    q = torch.zeros((1, heads, 1, head_dim), dtype=dtype, device="cuda")
    k = torch.zeros((1, heads, 64, head_dim), dtype=dtype, device="cuda")
    mask = torch.ones((1, 1, 1, 64), dtype=torch.bool, device="cuda")
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, k, k, attn_mask=mask)
        except RuntimeError:
            continue
        return name.lower()
    return None


def nf4_config(dtype: torch.dtype) -> Any:
    """bitsandbytes' 4-bit NF4 with double quantization, computing in `dtype`."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
    )


def eos_token_id(config: dict[str, Any], tokenizer: Any) -> int:
    """The config's eos id, else the tokenizer's, else `<|endoftext|>`'s id in the vocabulary."""
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        token = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            eos = token
    if eos is None:
        raise ValueError("the model has no eos id and its tokenizer no <|endoftext|> token")
    return int(eos)
