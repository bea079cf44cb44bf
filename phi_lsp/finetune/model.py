"""The model the trainer updates: phi's Hugging Face folder, loaded frozen in fp32 / bf16 / NF4
(device, dtype, attention and the NF4 config follow `phi_lsp.runtime.devices`, the engine's
rules), then LoRA adapters on its linear layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from phi_lsp.finetune.config import PHI3_TARGETS, PHI_TARGETS, TrainConfig
from phi_lsp.runtime.devices import nf4_config, pick_attention


def resolve_hf_dir(spec: str) -> Path:
    from phi_lsp.models.source import resolve_model

    source = resolve_model(spec)
    if source.hf_dir is None:
        raise ValueError(
            f"{spec}: fine-tuning needs the Hugging Face folder (config.json + safetensors), "
            "not only a GGUF file"
        )
    return source.hf_dir


def load_base_model(hf_dir: Path, device: str, dtype: torch.dtype, cfg: TrainConfig) -> Any:
    """(tokenizer, model) with the base weights frozen."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": pick_attention(device, dtype, cfg.attention),
        "use_safetensors": True,
        "trust_remote_code": False,
    }
    if cfg.quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(dtype)
        kwargs["device_map"] = {"": device}
    elif cfg.quantization != "none":
        raise ValueError(f"quantization must be none or nf4, not {cfg.quantization!r}")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, **kwargs)
    if cfg.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing
        )
        # bitsandbytes 0.50 on CPU: an eval-mode forward repacks the 4-bit weights into an
        # inference-only AVX512-BF16 layout that training cannot use afterwards (in-place bias
        # add on a leaf). Evaluation runs between training steps here, so keep the plain layout.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    else:
        model.to(device)  # type: ignore[arg-type]
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


def add_lora(model: Any, cfg: TrainConfig) -> Any:
    """The PeftModel: LoRA on `cfg.target_modules` (auto: phi's or phi-3's linear layers)."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.target_modules
    if targets == "auto":
        targets = PHI3_TARGETS if model.config.model_type == "phi3" else PHI_TARGETS
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets if targets == "all-linear" else targets.split(","),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)
