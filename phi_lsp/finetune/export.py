"""Hand a fine-tuned adapter to the server.

The adapter folder (`RUN/adapter/`) serves both engines:

- transformers: `adapter_config.json` + `adapter_model.safetensors` (peft); `apply_adapter`
  loads them onto a base model (merged into the weights unless the base is 4-bit).
- llama.cpp: `lora.gguf`, a llama.cpp LoRA adapter written here with the `gguf` package
  (`general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, tensors
  `blk.N.attn_q.weight.lora_a` / `.lora_b`); llama-cpp-python loads it with
  `Llama(model_path=BASE.gguf, lora_path=ADAPTER/lora.gguf)` on top of any base quantization.

`export_merged_gguf` instead merges the adapter into the base weights and converts the result
with phi-lsp's converter: one self-contained GGUF (`--export gguf`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from phi_lsp.runtime.adapters import LORA_GGUF, apply_adapter

PEFT_PREFIX = "base_model.model."


def write_lora_gguf(adapter_dir: Path, base_hf_dir: Path, out_path: Path | None = None) -> Path:
    """Write the peft adapter in `adapter_dir` as a llama.cpp LoRA GGUF (f32 tensors)."""
    import gguf
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    out_path = Path(out_path) if out_path else adapter_dir / LORA_GGUF
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    base_cfg = json.loads((Path(base_hf_dir) / "config.json").read_text())
    arch = gguf.MODEL_ARCH.PHI3 if base_cfg.get("model_type") == "phi3" else gguf.MODEL_ARCH.PHI2
    names = gguf.get_tensor_name_map(arch, int(base_cfg["num_hidden_layers"]))
    r = int(cfg["r"])
    alpha = float(cfg["lora_alpha"])
    if cfg.get("use_rslora"):
        alpha *= math.sqrt(r)  # llama.cpp scales by alpha / r; rsLoRA by alpha / sqrt(r)
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError("per-module rank / alpha patterns are not supported in a LoRA GGUF")
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in weights.items():
        module, _, kind = key.removeprefix(PEFT_PREFIX).rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise ValueError(f"unexpected tensor {key} in the adapter (only LoRA A/B supported)")
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ValueError(f"{module} has no llama.cpp tensor for arch {arch.name}")
        pairs.setdefault(target, {})[kind[0]] = tensor.float().numpy()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
        try:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
            writer.add_name("phi-lsp finetune adapter")
            for target in sorted(pairs):
                pair = pairs[target]
                if set(pair) != {"A", "B"}:
                    raise ValueError(f"{target}: LoRA A or B is missing")
                # torch shapes A (r, in) and B (out, r) are llama.cpp's ne [in, r] and [r, out].
                writer.add_tensor(f"{target}.lora_a", pair["A"])
                writer.add_tensor(f"{target}.lora_b", pair["B"])
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def merge_adapter(base_hf_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """The base model with the adapter merged in, saved as an HF folder (fp32 safetensors +
    tokenizer), written next to `out_dir` and renamed into place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(
        base_hf_dir, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
    )
    merged = apply_adapter(model, adapter_dir, merge=True)
    tokenizer = AutoTokenizer.from_pretrained(base_hf_dir, trust_remote_code=False)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_merged_gguf(
    base_hf_dir: Path, adapter_dir: Path, out_path: Path, outtype: str = "f16"
) -> Path:
    """Merge, then convert with phi-lsp's converter (`models.convert`)."""
    from phi_lsp.models.convert import convert_hf_to_gguf

    out_path = Path(out_path)
    merged = merge_adapter(base_hf_dir, adapter_dir, out_path.with_name(out_path.stem + "-hf"))
    return convert_hf_to_gguf(merged, out_path, outtype)  # type: ignore[arg-type]
