"""phi-1, phi-1.5 and phi-2 (`PhiForCausalLM`) → llama.cpp's `phi2` architecture.

Reads config.json's hyperparameters (refusing what llama.cpp's phi2 graph cannot compute) and
writes them as GGUF metadata. The tensors go through `common`; the tokenizer through
`tokenizers.add_gpt2_tokenizer`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from phi_lsp.models.convert.common import OutType

logger = logging.getLogger(__name__)

# Activations llama.cpp's phi2 graph computes (it always uses the tanh GELU).
_TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}


@dataclass(frozen=True)
class PhiParams:
    """The hyperparameters llama.cpp's phi2 architecture needs, read from config.json."""

    vocab_size: int
    n_ctx: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    norm_eps: float
    rope_dims: int
    rope_theta: float | None


def phi_params(config: dict[str, Any], hf_dir: Path) -> PhiParams:
    """Validate that config describes a PhiForCausalLM and extract what GGUF needs."""
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    if model_type != "phi":
        hint = ""
        if model_type == "phi-msft":
            hint = " (old remote-code phi format; download a revision with model_type 'phi')"
        raise ValueError(
            f"{hf_dir}/config.json has model_type {model_type!r} (architectures {archs}); "
            f"only phi models (model_type 'phi', PhiForCausalLM: phi-1, phi-1.5, phi-2; or "
            f"model_type 'phi3', Phi3ForCausalLM: Phi-3/Phi-3.5 mini and medium) "
            f"can be converted{hint}"
        )
    if archs and "PhiForCausalLM" not in archs:
        raise ValueError(
            f"{hf_dir}/config.json lists architectures {archs}; expected PhiForCausalLM"
        )
    if config.get("qk_layernorm"):
        raise ValueError(f"{hf_dir}: qk_layernorm=true phi models are not supported by llama.cpp")
    act = config.get("hidden_act", "gelu_new")
    if act not in _TANH_GELUS:
        logger.warning("hidden_act %r: llama.cpp's phi2 uses tanh GELU; outputs may differ", act)

    try:
        n_embd = int(config["hidden_size"])
        n_head = int(config["num_attention_heads"])
        n_layer = int(config["num_hidden_layers"])
        vocab_size = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{hf_dir}/config.json lacks a valid {e} entry") from e
    rope_params = config.get("rope_parameters") or {}
    prf = config.get("partial_rotary_factor")
    if prf is None:
        prf = rope_params.get("partial_rotary_factor", 0.5)
    theta = config.get("rope_theta")
    if theta is None:
        theta = rope_params.get("rope_theta")
    head_dim = n_embd // n_head
    return PhiParams(
        vocab_size=vocab_size,
        n_ctx=int(config.get("max_position_embeddings", 2048)),
        n_embd=n_embd,
        n_ff=int(config.get("intermediate_size") or 4 * n_embd),
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=int(config.get("num_key_value_heads") or n_head),
        norm_eps=float(config.get("layer_norm_eps", 1e-5)),
        rope_dims=int(float(prf) * head_dim),
        rope_theta=float(theta) if theta is not None else None,
    )


def add_phi2_metadata(writer: gguf.GGUFWriter, p: PhiParams, outtype: OutType, name: str) -> None:
    writer.add_name(name)
    writer.add_context_length(p.n_ctx)
    writer.add_embedding_length(p.n_embd)
    writer.add_feed_forward_length(p.n_ff)
    writer.add_block_count(p.n_layer)
    writer.add_head_count(p.n_head)
    writer.add_head_count_kv(p.n_head_kv)
    writer.add_layer_norm_eps(p.norm_eps)
    writer.add_rope_dimension_count(p.rope_dims)
    if p.rope_theta is not None:
        writer.add_rope_freq_base(p.rope_theta)
    ftype = gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(ftype)
