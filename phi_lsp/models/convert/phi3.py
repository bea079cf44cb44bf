"""Phi-3 and Phi-3.5 mini/medium (`Phi3ForCausalLM`) → llama.cpp's `phi3` architecture.

The metadata follows llama.cpp's `Phi3MiniModel` (context, original context, rope dimension
count and base, sliding window, and for LongRoPE/"su" models the attention factor and the
`rope_factors_long`/`rope_factors_short` tensors, which this module generates from config.json).
The tokenizer goes through `tokenizers.add_llama_tokenizer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from phi_lsp.models.convert.common import OutType, TensorSpec

# RoPE types llama.cpp's phi3 graph reproduces: plain RoPE, and LongRoPE ("su" is its old
# name) through the rope_factors_long/short tensors plus an attention factor.
_PHI3_ROPE_TYPES = {"default", "longrope", "su"}


@dataclass(frozen=True)
class Phi3Params:
    """The hyperparameters llama.cpp's phi3 architecture needs, read from config.json."""

    vocab_size: int
    n_ctx: int
    n_ctx_orig: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    rms_eps: float
    rope_dims: int
    rope_theta: float
    sliding_window: int
    tied_embeddings: bool
    # LongRoPE: per-frequency divisors for contexts above / up to n_ctx_orig, and the
    # factor llama.cpp (like transformers) multiplies cos/sin by. None for plain RoPE.
    rope_long: tuple[float, ...] | None = None
    rope_short: tuple[float, ...] | None = None
    rope_attn_factor: float | None = None


def phi3_params(config: dict[str, Any], hf_dir: Path) -> Phi3Params:
    """Validate that config describes a Phi3ForCausalLM and extract what GGUF needs.

    Both config layouts are read: the published one (`rope_theta`, `rope_scaling`,
    `partial_rotary_factor` at top level) and the one transformers 5 saves
    (`rope_parameters` holding all of them).
    """
    archs = config.get("architectures") or []
    if archs and "Phi3ForCausalLM" not in archs:
        raise ValueError(
            f"{hf_dir}/config.json lists architectures {archs}; expected Phi3ForCausalLM"
        )
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"{hf_dir}: hidden_act {act!r}; llama.cpp's phi3 computes SwiGLU (silu)")
    try:
        n_embd = int(config["hidden_size"])
        n_head = int(config["num_attention_heads"])
        n_layer = int(config["num_hidden_layers"])
        vocab_size = int(config["vocab_size"])
        n_ff = int(config["intermediate_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{hf_dir}/config.json lacks a valid {e} entry") from e
    head_dim = n_embd // n_head
    if n_embd % n_head or int(config.get("head_dim") or head_dim) != head_dim:
        raise ValueError(
            f"{hf_dir}: head_dim must be hidden_size / num_attention_heads for llama.cpp's phi3"
        )
    n_ctx = int(config.get("max_position_embeddings", 4096))

    rope: dict[str, Any] = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope_type = str(rope.get("rope_type") or rope.get("type") or "default").lower()
    if rope_type not in _PHI3_ROPE_TYPES:
        raise ValueError(
            f"{hf_dir}: rope type {rope_type!r} is not supported for phi-3 "
            f"(supported: plain RoPE and LongRoPE/'su')"
        )
    theta = config.get("rope_theta")
    if theta is None:
        theta = rope.get("rope_theta", 10000.0)
    prf = config.get("partial_rotary_factor")
    if prf is None:
        prf = rope.get("partial_rotary_factor", 1.0)
    rope_dims = int(head_dim * float(prf))
    # transformers gives the top-level value priority over the one in the rope dict.
    n_ctx_orig = config.get("original_max_position_embeddings")
    if n_ctx_orig is None:
        n_ctx_orig = rope.get("original_max_position_embeddings", n_ctx)
    n_ctx_orig = int(n_ctx_orig)

    long = short = attn = None
    if rope_type != "default":
        long_f, short_f = rope.get("long_factor"), rope.get("short_factor")
        if not long_f or not short_f:
            raise ValueError(f"{hf_dir}: LongRoPE config lacks long_factor/short_factor")
        if len(long_f) != rope_dims // 2 or len(short_f) != rope_dims // 2:
            raise ValueError(
                f"{hf_dir}: LongRoPE long/short factors must have {rope_dims // 2} entries, "
                f"got {len(long_f)}/{len(short_f)}"
            )
        long = tuple(float(x) for x in long_f)
        short = tuple(float(x) for x in short_f)
        # Same rule as transformers' _compute_longrope_parameters (and, for the published
        # configs, as llama.cpp's converter): sqrt(1 + ln(scale) / ln(original context)).
        attn = rope.get("attention_factor")
        if attn is None:
            scale = rope.get("factor") or n_ctx / n_ctx_orig
            attn = 1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(n_ctx_orig))
        attn = float(attn)

    return Phi3Params(
        vocab_size=vocab_size,
        n_ctx=n_ctx,
        n_ctx_orig=n_ctx_orig,
        n_embd=n_embd,
        n_ff=n_ff,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=int(config.get("num_key_value_heads") or n_head),
        rms_eps=float(config.get("rms_norm_eps", 1e-5)),
        rope_dims=rope_dims,
        rope_theta=float(theta),
        # llama.cpp (0.3.x) reads it but keeps phi3's sliding window disabled; we record it
        # as its converter does (0 = none).
        sliding_window=int(config.get("sliding_window") or 0),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope_long=long,
        rope_short=short,
        rope_attn_factor=attn,
    )


def add_phi3_metadata(writer: gguf.GGUFWriter, p: Phi3Params, outtype: OutType, name: str) -> None:
    writer.add_name(name)
    writer.add_context_length(p.n_ctx)
    writer.add_rope_scaling_orig_ctx_len(p.n_ctx_orig)
    writer.add_embedding_length(p.n_embd)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_block_count(p.n_layer)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head_kv)
    writer.add_layer_norm_rms_eps(p.rms_eps)
    writer.add_rope_dimension_count(p.rope_dims)
    writer.add_rope_freq_base(p.rope_theta)
    writer.add_sliding_window(p.sliding_window)
    if p.rope_attn_factor is not None:
        writer.add_rope_scaling_attn_factors(p.rope_attn_factor)
    ftype = gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(ftype)


def phi3_rope_factor_tensors(p: Phi3Params) -> list[TensorSpec]:
    if p.rope_long is None or p.rope_short is None:
        return []
    names = gguf.TENSOR_NAMES
    specs = []
    for tensor, values in (
        (gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, p.rope_long),
        (gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT, p.rope_short),
    ):
        data = np.asarray(values, dtype=np.float32)
        specs.append(
            TensorSpec(
                f"{names[tensor]}.weight", "(config)", Path(), data.shape, "F32", np.float32, data
            )
        )
    return specs
