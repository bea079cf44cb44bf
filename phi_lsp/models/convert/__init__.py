"""Convert a Hugging Face phi or phi-3 checkpoint to GGUF for llama.cpp.

Two families are supported:

* phi (`PhiForCausalLM`: phi-1, phi-1.5, phi-2) → llama.cpp architecture `phi2`, with the
  GPT-2 style byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`).
* phi-3 (`Phi3ForCausalLM`: Phi-3/Phi-3.5 mini and medium) → architecture `phi3`, with the
  Llama/SentencePiece BPE tokenizer (`tokenizer.ggml.model = "llama"`: scores + token types).

We write the GGUF ourselves with the `gguf` package instead of running llama.cpp's
`convert_hf_to_gguf.py`: that script is not in the llama-cpp-python wheel, pins other
torch/transformers versions and rejects tokenizers whose pre-tokenizer hash it does not
know. Both architectures are small enough that the mapping fits in this package. The metadata
written for phi-3 follows llama.cpp's `Phi3MiniModel` (context, original context, rope
dimension count and base, sliding window, and for LongRoPE/"su" models the attention factor
and the `rope_factors_long`/`rope_factors_short` tensors).

This module holds the entry point, `convert_hf_to_gguf`. `phi2` and `phi3` read each family's
config.json and write its metadata, `tokenizers` writes the two tokenizers, and `common`
finds the safetensors shards and streams the tensors.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import gguf

from phi_lsp.models.convert.common import (
    OutType,
    TensorSpec,
    model_name,
    read_config,
    safetensors_files,
    write_tensors,
)
from phi_lsp.models.convert.phi2 import add_phi2_metadata, phi_params
from phi_lsp.models.convert.phi3 import (
    Phi3Params,
    add_phi3_metadata,
    phi3_params,
    phi3_rope_factor_tensors,
)
from phi_lsp.models.convert.tokenizers import (
    add_gpt2_tokenizer,
    add_llama_tokenizer,
    check_tokenizer_files,
)

__all__ = ["OutType", "convert_hf_to_gguf"]


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

    config = read_config(hf_dir)
    phi3: Phi3Params | None = None
    if config.get("model_type") == "phi3":
        phi3 = phi3_params(config, hf_dir)
        arch = gguf.MODEL_ARCH.PHI3
        n_layer = phi3.n_layer
    else:
        params = phi_params(config, hf_dir)
        arch = gguf.MODEL_ARCH.PHI2
        n_layer = params.n_layer
    shards = safetensors_files(hf_dir)
    if phi3 is None:
        check_tokenizer_files(hf_dir)
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
            name = model_name(hf_dir, config)
            extra: list[TensorSpec] = []
            require_output = True
            if phi3 is None:
                add_phi2_metadata(writer, params, outtype, name=name)
                add_gpt2_tokenizer(writer, hf_dir, params.vocab_size)
            else:
                add_phi3_metadata(writer, phi3, outtype, name=name)
                add_llama_tokenizer(writer, hf_dir, phi3.vocab_size)
                extra = phi3_rope_factor_tensors(phi3)
                require_output = not phi3.tied_embeddings
            write_tensors(
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
