"""Convert a Hugging Face phi checkpoint (phi-1, phi-1.5, phi-2) to GGUF for llama.cpp.

We write the GGUF ourselves with the `gguf` package instead of running llama.cpp's
`convert_hf_to_gguf.py`: that script is not in the llama-cpp-python wheel, pins other
torch/transformers versions and rejects tokenizers whose pre-tokenizer hash it does not
know. The phi architecture is small enough that the mapping fits in this file.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
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
    """Convert the phi model in `hf_dir` to a GGUF file at `out_path` and return its path.

    2-D weights are written as `outtype`, 1-D tensors (norms, biases) always as f32, which is
    what llama.cpp expects. The file is written under a temporary name and renamed at the end,
    so an interrupted conversion never leaves a file that looks complete.
    """
    hf_dir = Path(hf_dir)
    out_path = Path(out_path)
    if outtype not in ("f32", "f16"):
        raise ValueError(f"outtype must be 'f32' or 'f16', got {outtype!r}")
    if not hf_dir.is_dir():
        raise ValueError(f"{hf_dir} is not a directory with a Hugging Face model")

    config = _read_config(hf_dir)
    params = _phi_params(config, hf_dir)
    shards = _safetensors_files(hf_dir)
    _check_tokenizer_files(hf_dir)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Unique, hidden, not ending in .gguf: nothing mistakes it for a finished model.
    tmp_path = out_path.with_name(f".{out_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        writer = gguf.GGUFWriter(tmp_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.PHI2])
        try:
            _add_metadata(writer, params, outtype, name=_model_name(hf_dir, config))
            _add_tokenizer(writer, hf_dir, params.vocab_size)
            _write_tensors(writer, shards, params.n_layer, outtype)
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
            f"only phi models (model_type 'phi', PhiForCausalLM: phi-1, phi-1.5, phi-2) "
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


def _plan_tensors(shards: list[Path], n_layer: int, outtype: OutType) -> list[_TensorSpec]:
    """Map every source tensor to its GGUF name and output dtype without loading data."""
    from safetensors import safe_open

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.PHI2, n_layer)
    specs: list[_TensorSpec] = []
    seen: set[str] = set()
    for shard in shards:
        with safe_open(str(shard), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                if name.endswith(_IGNORED_SUFFIXES):
                    continue
                new_name = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise ValueError(f"{shard.name}: tensor {name!r} has no phi2 GGUF equivalent")
                if new_name in seen:
                    raise ValueError(f"{shard.name}: tensor {name!r} appears twice")
                seen.add(new_name)
                sl = f.get_slice(name)
                shape = tuple(int(d) for d in sl.get_shape())
                out: type[np.floating[Any]] = (
                    np.float16 if outtype == "f16" and len(shape) >= 2 else np.float32
                )
                specs.append(_TensorSpec(new_name, name, shard, shape, sl.get_dtype(), out))
    if "output.weight" not in seen:
        raise ValueError("no lm_head.weight found; tied-embedding phi checkpoints are unsupported")
    return specs


def _load_tensors(specs: list[_TensorSpec]) -> Iterator[np.ndarray[Any, Any]]:
    """Yield each tensor converted to its output dtype, one at a time to bound memory."""
    from safetensors import safe_open

    with ExitStack() as stack:
        handles: dict[tuple[Path, str], Any] = {}
        for spec in specs:
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
    writer: gguf.GGUFWriter, shards: list[Path], n_layer: int, outtype: OutType
) -> None:
    """Stream tensors into the file: header and tensor infos first, then data one by one."""
    specs = _plan_tensors(shards, n_layer, outtype)
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
