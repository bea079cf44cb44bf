"""The trainer's knobs: one dataclass, each field a `phi-lsp finetune --flag`.

Kept apart from the trainer so that building the CLI does not import torch (every `phi-lsp`
command builds the whole parser, `serve` included).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

PHI_TARGETS = "q_proj,k_proj,v_proj,dense,fc1,fc2"
PHI3_TARGETS = "qkv_proj,o_proj,gate_up_proj,down_proj"


def _help(text: str, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"help": text, "choices": choices}


@dataclass
class TrainConfig:
    """Every knob of the trainer (each is a `phi-lsp finetune --flag`)."""

    model: str = field(default="phi-1", metadata=_help("base model: a cached name or HF folder"))
    seed: int = field(default=1337, metadata=_help("seed for LoRA init, dropout, data order"))
    max_steps: int = field(default=300, metadata=_help("optimizer steps"))
    batch_size: int = field(
        default=4, metadata=_help("exercises per micro-batch (packed: per step, with grad-accum)")
    )
    grad_accum: int = field(
        default=1, metadata=_help("micro-batches per optimizer step (batch-size × this exercises)")
    )
    pack: str = field(
        default="auto",
        metadata=_help(
            "pack a step's exercises into rows of --pack-len tokens, no attention across "
            "exercises (auto: on CUDA)",
            ("auto", "on", "off"),
        ),
    )
    pack_len: int = field(default=2048, metadata=_help("tokens per packed row"))
    micro_tokens: int = field(
        default=0,
        metadata=_help(
            "packed: tokens per micro-batch (0: from the free GPU memory on CUDA, "
            "batch-size × max-seq-len elsewhere)"
        ),
    )
    lr: float = field(default=2e-4, metadata=_help("peak learning rate"))
    min_lr_ratio: float = field(default=0.1, metadata=_help("final lr / peak lr (cosine)"))
    warmup_steps: int = field(default=20, metadata=_help("linear warmup steps"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    beta2: float = field(default=0.999, metadata=_help("AdamW beta2"))
    grad_clip: float = field(default=1.0, metadata=_help("clip grad norm (0: off)"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (scale = alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("dropout on the LoRA input"))
    target_modules: str = field(
        default="auto",
        metadata=_help(f"comma-separated module names, all-linear, or auto ({PHI_TARGETS})"),
    )
    max_seq_len: int = field(default=1024, metadata=_help("tokens per exercise (prompt cut left)"))
    append_eos: bool = field(default=True, metadata=_help("train <|endoftext|> after the body"))
    eval_every: int = field(default=50, metadata=_help("validation loss every N steps"))
    log_every: int = field(
        default=10, metadata=_help("read the loss off the device every N steps (progress bar)")
    )
    eval_max_examples: int = field(default=200, metadata=_help("validation exercises used"))
    checkpoint_every: int = field(default=50, metadata=_help("checkpoint every N steps"))
    device: str = field(
        default="auto", metadata=_help("where to train", ("auto", "cpu", "cuda", "mps"))
    )
    dtype: str = field(
        default="auto",
        metadata=_help("weights / autocast", ("auto", "float32", "bfloat16", "float16")),
    )
    quantization: str = field(
        default="none", metadata=_help("nf4: 4-bit base model (QLoRA)", ("none", "nf4"))
    )
    attention: str = field(
        default="auto",
        metadata=_help(
            "auto: FA2 on CUDA if installed", ("auto", "sdpa", "eager", "flash_attention_2")
        ),
    )
    gradient_checkpointing: bool = field(default=False, metadata=_help("trade compute for memory"))
    threads: int = field(default=0, metadata=_help("torch CPU threads (0: torch's default)"))
    loss_filter: bool = field(default=True, metadata=_help("drop base-model loss outliers"))
    max_loss: float = field(
        default=3.0, metadata=_help("loss filter: drop only above this mean body loss (nats)")
    )
    loss_outlier_mads: float = field(
        default=3.0, metadata=_help("loss filter: ... and above median + N robust sigmas")
    )
    progress: bool = field(default=True, metadata=_help("progress bar on stderr"))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A saved run's `train` settings; keys this version no longer knows are dropped."""
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in data.items() if k in names})
