"""Convert a Hugging Face phi or phi-3 checkpoint to GGUF for llama.cpp.

Two families are supported:

* phi (`PhiForCausalLM`: phi-1, phi-1.5, phi-2) → llama.cpp architecture `phi2`, with the
  GPT-2 style byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`).
* phi-3 (`Phi3ForCausalLM`: Phi-3/Phi-3.5 mini and medium) → architecture `phi3`, with the
  Llama/SentencePiece BPE tokenizer (`tokenizer.ggml.model = "llama"`: scores + token types).

We write the GGUF ourselves with the `gguf` package instead of running llama.cpp's
`convert_hf_to_gguf.py`: that script is not in the llama-cpp-python wheel, pins other
torch/transformers versions and rejects tokenizers whose pre-tokenizer hash it does not
know. Both architectures are small enough that the mapping fits in this file. The metadata
written for phi-3 follows llama.cpp's `Phi3MiniModel` (context, original context, rope
dimension count and base, sliding window, and for LongRoPE/"su" models the attention factor
and the `rope_factors_long`/`rope_factors_short` tensors).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

logger = logging.getLogger(__name__)

OutType = Literal["f32", "f16"]

ENDOFTEXT = "<|endoftext|>"
# Activations llama.cpp's phi2 graph computes (it always uses the tanh GELU).
_TANH_GELUS = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}
# Buffers some older checkpoints carry that llama.cpp recomputes itself.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


@dataclass(frozen=True)
class _PhiParams:
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


def convert_hf_to_gguf(hf_dir: str | Path, out_path: str | Path, outtype: OutType = "f16") -> Path:
    """Convert the phi or phi-3 model in `hf_dir` to a GGUF file at `out_path`; return its path.

    The family is chosen by config.json's `model_type` ("phi" → llama.cpp arch `phi2`,
    "phi3" → arch `phi3`). 2-D weights are written as `outtype`, 1-D tensors (norms, biases,
    rope factors) always as f32, which is what llama.cpp expects. The file is written under a
    temporary name and renamed at the end, so an interrupted conversion never leaves a file
    that looks complete.
    """
    hf_dir = Path(hf_dir)
    out_path = Path(out_path)
    if outtype not in ("f32", "f16"):
        raise ValueError(f"outtype must be 'f32' or 'f16', got {outtype!r}")
    if not hf_dir.is_dir():
        raise ValueError(f"{hf_dir} is not a directory with a Hugging Face model")

    config = _read_config(hf_dir)
    phi3: _Phi3Params | None = None
    if config.get("model_type") == "phi3":
        phi3 = _phi3_params(config, hf_dir)
        arch = gguf.MODEL_ARCH.PHI3
        n_layer = phi3.n_layer
    else:
        params = _phi_params(config, hf_dir)
        arch = gguf.MODEL_ARCH.PHI2
        n_layer = params.n_layer
    shards = _safetensors_files(hf_dir)
    if phi3 is None:
        _check_tokenizer_files(hf_dir)
    elif not (hf_dir / "tokenizer.json").is_file():
        raise ValueError(
            f"{hf_dir} has no tokenizer.json: phi-3 conversion reads the Llama/SentencePiece "
            f"BPE tokenizer from tokenizer.json (tokenizer.model alone is not supported)"
        )

    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Unique, hidden, not ending in .gguf: nothing mistakes it for a finished model.
    tmp_path = out_path.with_name(f".{out_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        writer = gguf.GGUFWriter(tmp_path, gguf.MODEL_ARCH_NAMES[arch])
        try:
            name = _model_name(hf_dir, config)
            extra: list[_TensorSpec] = []
            require_output = True
            if phi3 is None:
                _add_metadata(writer, params, outtype, name=name)
                _add_tokenizer(writer, hf_dir, params.vocab_size)
            else:
                _add_phi3_metadata(writer, phi3, outtype, name=name)
                _add_llama_tokenizer(writer, hf_dir, phi3.vocab_size)
                extra = _phi3_rope_factor_tensors(phi3)
                require_output = not phi3.tied_embeddings
            _write_tensors(
                writer,
                shards,
                n_layer,
                outtype,
                arch=arch,
                extra=extra,
                require_output=require_output,
            )
        finally:
            writer.close()
        os.replace(tmp_path, out_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return out_path


# --- config -------------------------------------------------------------------------------


def _read_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{hf_dir} has no config.json; expected a Hugging Face model folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not contain a JSON object")
    return config


def _phi_params(config: dict[str, Any], hf_dir: Path) -> _PhiParams:
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
    return _PhiParams(
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


def _model_name(hf_dir: Path, config: dict[str, Any]) -> str:
    name = config.get("_name_or_path")
    if isinstance(name, str) and name and not os.path.isabs(name):
        return name.rsplit("/", 1)[-1]
    return hf_dir.resolve().name


def _add_metadata(writer: gguf.GGUFWriter, p: _PhiParams, outtype: OutType, name: str) -> None:
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


# --- tokenizer ----------------------------------------------------------------------------


def _check_tokenizer_files(hf_dir: Path) -> None:
    if (hf_dir / "tokenizer.json").is_file():
        return
    if (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        return
    raise ValueError(
        f"{hf_dir} has no tokenizer: expected tokenizer.json or vocab.json + merges.txt "
        f"(the CodeGen/GPT-2 BPE tokenizer files of the phi model)"
    )


def _add_tokenizer(writer: gguf.GGUFWriter, hf_dir: Path, vocab_size: int) -> None:
    """Write the GPT-2 style BPE vocabulary the way llama.cpp's own converter does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir), trust_remote_code=False)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{hf_dir}: the tokenizer has no fast (tokenizers) backend")
    tok_json = json.loads(backend.to_str())
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"{hf_dir}: expected a BPE tokenizer, got {model.get('type')!r}")

    vocab: dict[str, int] = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ValueError(
            f"{hf_dir}: tokenizer has token id {max(vocab.values())} but the model's "
            f"vocab_size is {vocab_size}"
        )
    added = tok.get_added_vocab()
    added_decoder = tok.added_tokens_decoder
    reverse = {i: t for t, i in vocab.items()}

    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            # Added tokens (e.g. CodeGen's whitespace runs) are stored as raw text; llama.cpp
            # matches USER_DEFINED/CONTROL tokens verbatim before BPE, like HF does.
            tokens.append(text)
            special = added_decoder[i].special if i in added_decoder else False
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)

    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    eot = vocab.get(ENDOFTEXT)
    if eot is None:
        eot = tok.eos_token_id
    if eot is None:
        raise ValueError(f"{hf_dir}: tokenizer has no {ENDOFTEXT} (or eos) token")

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_unk_token_id(eot)
    writer.add_add_bos_token(False)


# --- phi-3 --------------------------------------------------------------------------------

# RoPE types llama.cpp's phi3 graph reproduces: plain RoPE, and LongRoPE ("su" is its old
# name) through the rope_factors_long/short tensors plus an attention factor.
_PHI3_ROPE_TYPES = {"default", "longrope", "su"}


@dataclass(frozen=True)
class _Phi3Params:
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


def _phi3_params(config: dict[str, Any], hf_dir: Path) -> _Phi3Params:
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

    return _Phi3Params(
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


def _add_phi3_metadata(
    writer: gguf.GGUFWriter, p: _Phi3Params, outtype: OutType, name: str
) -> None:
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


def _phi3_rope_factor_tensors(p: _Phi3Params) -> list[_TensorSpec]:
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
            _TensorSpec(
                f"{names[tensor]}.weight", "(config)", Path(), data.shape, "F32", np.float32, data
            )
        )
    return specs


_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
_SPIECE = "\u2581"  # ▁, SentencePiece's visible space


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """The components of a tokenizers normalizer/pre-tokenizer, Sequences flattened."""
    if isinstance(node, dict):
        yield node
        for key in ("normalizers", "pretokenizers"):
            for child in node.get(key) or []:
                yield from _walk(child)


def _space_handling(tok_json: dict[str, Any]) -> tuple[bool, bool]:
    """(spaces become ▁, a ▁ is prepended) for a Llama-style tokenizers pipeline."""
    escapes = prepends = False
    for n in _walk(tok_json.get("normalizer")):
        if n.get("type") == "Replace" and n.get("content") == _SPIECE:
            escapes = True
        elif n.get("type") == "Prepend" and n.get("prepend") == _SPIECE:
            prepends = True
    for n in _walk(tok_json.get("pre_tokenizer")):
        if n.get("type") == "Metaspace" and n.get("replacement", _SPIECE) == _SPIECE:
            escapes = True
            scheme = n.get("prepend_scheme")
            if scheme is None:  # tokenizers < 0.19 spelt it add_prefix_space
                scheme = "always" if n.get("add_prefix_space", True) else "never"
            prepends = prepends or scheme != "never"
    return escapes, prepends


def _add_llama_tokenizer(writer: gguf.GGUFWriter, hf_dir: Path, vocab_size: int) -> None:
    """Write a Llama/SentencePiece BPE vocabulary (phi-3's) as llama.cpp's "llama" (SPM) model.

    llama.cpp's SPM tokenizer merges the adjacent pair whose concatenation is the token with
    the highest *score*; transformers' BPE applies *merges* by rank. Tokenizer.json files
    converted from SentencePiece list, for every token, all its splits into two tokens, ordered
    by the token's SentencePiece score, so score = -(rank of the first merge producing the
    token) gives llama.cpp the same merge order transformers uses. tokenizer.model (needing the
    sentencepiece package) is not read.

    tokenizer.json is loaded as it is, which is what AutoTokenizer does for phi3 (transformers
    5 lists it among models whose hub tokenizer_class, LlamaTokenizer, it ignores; 4.x loads
    the fast tokenizer from tokenizer.json) without parsing config.json a second time.
    """
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(hf_dir))
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{hf_dir}: the tokenizer has no fast (tokenizers) backend")
    tok_json = json.loads(backend.to_str())
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ValueError(
            f"{hf_dir}: phi-3 conversion supports the Llama/SentencePiece BPE tokenizer "
            f"(BPE with byte_fallback), got {model.get('type')!r} with "
            f"byte_fallback={model.get('byte_fallback')!r} (byte-level GPT-2 style tokenizers, "
            f"e.g. Phi-4-mini's, are not supported)"
        )
    escapes, prepends = _space_handling(tok_json)
    if not escapes:
        raise ValueError(
            f"{hf_dir}: the tokenizer does not map spaces to '\u2581' (no Replace normalizer or "
            f"Metaspace pre-tokenizer); llama.cpp's SentencePiece tokenizer would differ"
        )

    vocab: dict[str, int] = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ValueError(
            f"{hf_dir}: tokenizer has token id {max(vocab.values())} but the model's "
            f"vocab_size is {vocab_size}"
        )
    missing_bytes = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in vocab]
    if missing_bytes:
        raise ValueError(
            f"{hf_dir}: byte-fallback tokenizer lacks {len(missing_bytes)} byte tokens "
            f"(e.g. {missing_bytes[0]}); llama.cpp needs all 256"
        )

    merges: list[tuple[str, str]] = []
    for m in model.get("merges", []):
        pair = m.split(" ") if isinstance(m, str) else m
        if len(pair) != 2:
            raise ValueError(f"{hf_dir}: cannot read merge {m!r} in tokenizer.json")
        merges.append((pair[0], pair[1]))
    first_rank: dict[str, int] = {}
    for rank, (a, b) in enumerate(merges):
        first_rank.setdefault(a + b, rank)
    _warn_on_unlisted_splits(hf_dir, vocab, set(merges), first_rank)

    base_vocab: dict[str, int] = model.get("vocab") or {}
    added_decoder = tok.added_tokens_decoder
    unk_id = tok.unk_token_id
    reverse = {i: t for t, i in vocab.items()}
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(vocab_size):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-10000.0)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(text)
        added = added_decoder.get(i)
        if i == unk_id:
            scores.append(0.0)
            types.append(gguf.TokenType.UNKNOWN)
        elif added is not None and added.special:
            scores.append(0.0 if text in base_vocab else -1000.0)
            types.append(gguf.TokenType.CONTROL)
        elif added is not None and text not in base_vocab:
            scores.append(-1000.0)
            types.append(gguf.TokenType.USER_DEFINED)
        elif _BYTE_TOKEN.fullmatch(text):
            scores.append(0.0)
            types.append(gguf.TokenType.BYTE)
        else:
            merge_rank = first_rank.get(text)
            # Tokens no merge produces (single characters) are never a bigram's result.
            scores.append(-float(merge_rank if merge_rank is not None else len(merges) + i))
            types.append(gguf.TokenType.NORMAL)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(prepends)
    for setter, tid in (
        (writer.add_bos_token_id, tok.bos_token_id),
        (writer.add_eos_token_id, tok.eos_token_id),
        (writer.add_unk_token_id, unk_id),
        (writer.add_pad_token_id, tok.pad_token_id),
    ):
        if isinstance(tid, int):
            setter(tid)
    # What transformers actually does when asked to add special tokens.
    probe = list(tok("a", add_special_tokens=True)["input_ids"])
    writer.add_add_bos_token(bool(probe) and probe[0] == tok.bos_token_id)
    writer.add_add_eos_token(len(probe) > 1 and probe[-1] == tok.eos_token_id)
    template = getattr(tok, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)


def _warn_on_unlisted_splits(
    hf_dir: Path,
    vocab: dict[str, int],
    merge_set: set[tuple[str, str]],
    first_rank: dict[str, int],
) -> None:
    """Warn when llama.cpp could form a token from a pair that transformers never merges.

    SentencePiece-converted tokenizer.json files list every split, so this stays silent for
    them; a BPE trained directly with `tokenizers` usually does not, and llama.cpp's tokens
    may then differ from transformers' on some inputs.
    """
    unlisted = 0
    example = ""
    for text in first_rank:
        for k in range(1, len(text)):
            left, right = text[:k], text[k:]
            if left in vocab and right in vocab and (left, right) not in merge_set:
                unlisted += 1
                example = example or f"{left!r} + {right!r}"
    if unlisted:
        logger.warning(
            "%s: %d token splits (e.g. %s) are not listed as merges; llama.cpp's SentencePiece "
            "tokenizer may split some text differently from transformers",
            hf_dir,
            unlisted,
            example,
        )


# --- tensors ------------------------------------------------------------------------------


def _safetensors_files(hf_dir: Path) -> list[Path]:
    """The safetensors shards of the model; pickled .bin weights are never loaded."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = sorted({hf_dir / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{hf_dir}: shards listed in {index.name} are missing: {missing}")
        if files:
            return files
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return [single]
    # Unindexed shards; never pick up unrelated files such as adapter_model.safetensors.
    files = sorted(hf_dir.glob("model*.safetensors"))
    if files:
        return files
    bins = sorted(p.name for p in hf_dir.glob("*.bin"))
    hint = (
        f" (found {bins}; pickled .bin weights are not loaded for safety — download the "
        f"model.safetensors files instead)"
        if bins
        else ""
    )
    raise ValueError(f"{hf_dir} has no .safetensors weights{hint}")


@dataclass(frozen=True)
class _TensorSpec:
    gguf_name: str
    src_name: str
    shard: Path
    shape: tuple[int, ...]
    src_dtype: str
    out_dtype: type[np.floating[Any]]
    # Set for tensors the converter generates (phi-3's rope factors) rather than reads.
    data: np.ndarray[Any, Any] | None = field(default=None, compare=False, repr=False)


def _plan_tensors(
    shards: list[Path],
    n_layer: int,
    outtype: OutType,
    arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.PHI2,
    require_output: bool = True,
) -> list[_TensorSpec]:
    """Map every source tensor to its GGUF name and output dtype without loading data.

    `require_output=False` lets a tied-embedding model go without `output.weight`: llama.cpp's
    phi3 then reuses token_embd (its phi2 always needs the separate output tensor).
    """
    from safetensors import safe_open

    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    tmap = gguf.get_tensor_name_map(arch, n_layer)
    specs: list[_TensorSpec] = []
    seen: set[str] = set()
    for shard in shards:
        with safe_open(str(shard), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                if name.endswith(_IGNORED_SUFFIXES):
                    continue
                new_name = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise ValueError(
                        f"{shard.name}: tensor {name!r} has no {arch_name} GGUF equivalent"
                    )
                if arch == gguf.MODEL_ARCH.PHI3 and name.endswith(".bias"):
                    raise ValueError(
                        f"{shard.name}: tensor {name!r}: llama.cpp's phi3 has no biases"
                    )
                if new_name in seen:
                    raise ValueError(f"{shard.name}: tensor {name!r} appears twice")
                seen.add(new_name)
                sl = f.get_slice(name)
                shape = tuple(int(d) for d in sl.get_shape())
                out: type[np.floating[Any]] = (
                    np.float16 if outtype == "f16" and len(shape) >= 2 else np.float32
                )
                specs.append(_TensorSpec(new_name, name, shard, shape, sl.get_dtype(), out))
    if require_output and "output.weight" not in seen:
        raise ValueError(
            "no lm_head.weight found; tied-embedding phi checkpoints are unsupported (phi-3 "
            "ones need tie_word_embeddings=true in config.json)"
        )
    return specs


def _load_tensors(specs: list[_TensorSpec]) -> Iterator[np.ndarray[Any, Any]]:
    """Yield each tensor converted to its output dtype, one at a time to bound memory."""
    from safetensors import safe_open

    with ExitStack() as stack:
        handles: dict[tuple[Path, str], Any] = {}
        for spec in specs:
            if spec.data is not None:
                yield np.ascontiguousarray(spec.data.astype(spec.out_dtype, copy=False))
                continue
            framework = "pt" if spec.src_dtype == "BF16" else "numpy"
            key = (spec.shard, framework)
            if key not in handles:
                handles[key] = stack.enter_context(safe_open(str(spec.shard), framework=framework))
            data = handles[key].get_tensor(spec.src_name)
            if framework == "pt":
                # numpy has no bfloat16; torch widens it exactly to float32.
                data = data.float().numpy()
            yield np.ascontiguousarray(data.astype(spec.out_dtype, copy=False))


def _write_tensors(
    writer: gguf.GGUFWriter,
    shards: list[Path],
    n_layer: int,
    outtype: OutType,
    arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.PHI2,
    extra: list[_TensorSpec] | None = None,
    require_output: bool = True,
) -> None:
    """Stream tensors into the file: header and tensor infos first, then data one by one."""
    specs = list(extra or []) + _plan_tensors(shards, n_layer, outtype, arch, require_output)
    for spec in specs:
        dtype = np.dtype(spec.out_dtype)
        nbytes = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
        writer.add_tensor_info(spec.gguf_name, spec.shape, dtype, nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for spec, data in zip(specs, _load_tensors(specs), strict=True):
        if data.shape != spec.shape:
            raise ValueError(f"{spec.src_name}: shape changed while reading ({data.shape})")
        writer.write_tensor_data(data)
    writer.flush()
