"""The LoRA / QLoRA trainer. `train()` reads top to bottom, like nanoGPT's train.py:

setup → data → model → base-model loss filter → optimizer → resume → loop (eval, step,
checkpoint) → final eval → adapter.

The rules it keeps, and the modules that keep them:

- Loss only on the body (`batches`, `losses`): prompt tokens (imports, class header, signature,
  docstring) and padding have label -100; the target is the body and `<|endoftext|>`. A step's
  loss is the mean over every target token of its micro-batches (token-weighted, however its
  exercises are split or packed).
- Throughput (`batches`): a step's exercises are packed (`pack`, auto: on CUDA) into rows of
  `pack_len` tokens with no attention across exercises, as many rows per micro-batch as the free
  GPU memory holds (`micro_tokens`). The loss stays on the device until a log, eval or
  checkpoint is due (one sync then, for all pending steps); token counts are known on the host.
  AdamW is fused on CUDA.
- Precision (`model`, after `phi_lsp.runtime.devices`): fp32 on CPU; on CUDA, bf16 (fp16 where
  bf16 is missing) with autocast, and flash-attention 2 when flash-attn is installed (SDPA
  otherwise). `quantization=nf4` loads the base model in 4-bit NF4 through bitsandbytes
  (QLoRA); the LoRA weights stay fp32.
- Exact resume (`batches`, `checkpoint`): the batch at step s is a pure function of (seed, s) —
  example positions s·B·A … run through seeded per-epoch permutations — so the data position is
  the step count. A checkpoint holds the LoRA weights, the optimizer and scheduler states, the
  torch / CUDA / Python RNG states, the step, the examples seen and the history, written to a
  temporary file and renamed (a SIGKILL never leaves half a checkpoint). SIGTERM / SIGINT finish
  the current step, write a checkpoint and raise `Interrupted`. `resume=True` continues bit for
  bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from phi_lsp.finetune.batches import (
    Layout,
    encode,
    micro_batches,
    micro_tokens_for_memory,
    step_batches,
    target_count,
)
from phi_lsp.finetune.checkpoint import (
    CHECKPOINT,
    Interrupted,
    restore_checkpoint,
    save_adapter,
    save_checkpoint,
    seed_everything,
    stop_on_signals,
    write_json,
)
from phi_lsp.finetune.config import TrainConfig
from phi_lsp.finetune.dataset import load_dataset
from phi_lsp.finetune.losses import backward_step, evaluate, loss_filter
from phi_lsp.finetune.model import add_lora, load_base_model, resolve_hf_dir
from phi_lsp.runtime.devices import eos_token_id, pick_attention, pick_device, pick_dtype


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    history: dict[str, Any]
    steps: int
    val_loss_before: float | None
    val_loss_after: float | None
    train_tokens_per_s: float
    model: Any = None  # the PeftModel, still loaded (for the report)
    tokenizer: Any = None
    base_hf_dir: Path | None = None
    device: str = "cpu"


def train(
    run_dir: Path,
    cfg: TrainConfig,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """LoRA on `run_dir/dataset` per `cfg`; `resume` continues from `run_dir`'s checkpoint.
    `on_step(step)` runs after each optimizer step (before its checkpoint)."""
    from tqdm import tqdm

    # ---------------------------------------------------------------------------------------
    # Setup: threads, device, precision. Everything random is seeded here; a resumed run
    # overwrites the RNG states from the checkpoint further down.
    run_dir = Path(run_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    dtype = pick_dtype(device, cfg.dtype)
    autocast = (
        torch.autocast("cuda", dtype=dtype)
        if device == "cuda" and dtype != torch.float32
        else contextlib.nullcontext()
    )
    seed_everything(cfg.seed)

    # ---------------------------------------------------------------------------------------
    # Data: the dataset stage wrote train / val JSONL with their hashes (checked on load).
    dataset = load_dataset(run_dir / "dataset")
    if not dataset.train:
        raise ValueError("the dataset has no training exercises")

    # ---------------------------------------------------------------------------------------
    # Model: the base model (fp32 / bf16 / NF4), then the LoRA adapter on phi-1's linears.
    base_hf_dir = resolve_hf_dir(cfg.model)
    tokenizer, model = load_base_model(base_hf_dir, device, dtype, cfg)
    model = add_lora(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    eos = eos_token_id(model.config.to_dict(), tokenizer)
    train_rows = [
        encode(tokenizer, ex, cfg.max_seq_len, eos if cfg.append_eos else None)
        for ex in dataset.train
    ]
    val_rows = [
        encode(tokenizer, ex, cfg.max_seq_len, eos if cfg.append_eos else None)
        for ex in dataset.val[: cfg.eval_max_examples]
    ]

    # ---------------------------------------------------------------------------------------
    # Micro-batches: unpacked, batch_size exercises each; packed, rows of pack_len tokens, as
    # many as `micro_tokens` holds (auto: from the free GPU memory after loading on CUDA, the
    # tokens of batch_size full-length exercises elsewhere). A resumed run keeps its layout.
    attention = pick_attention(device, dtype, cfg.attention)
    layout = Layout(pack_len=0, rows=cfg.batch_size, attention=attention)
    if cfg.pack == "on" or (cfg.pack == "auto" and device == "cuda"):
        pack_len = max(cfg.pack_len, 1)
        micro_tokens = cfg.micro_tokens or cfg.batch_size * cfg.max_seq_len
        if device == "cuda" and not cfg.micro_tokens:
            micro_tokens = micro_tokens_for_memory(
                torch.cuda.mem_get_info()[0],
                model.config.to_dict(),
                torch.finfo(dtype).bits // 8,
                attention,
                pack_len,
                cfg.gradient_checkpointing,
            )
        layout = Layout(pack_len, max(1, micro_tokens // pack_len), attention)

    # ---------------------------------------------------------------------------------------
    # Base-model loss filter (Refact's rule): an exercise the base model finds very surprising
    # is likely noise. Computed once, before any update (the LoRA B matrices start at zero, so
    # this is the base model); the kept ids are saved so that a resumed run trains on the same.
    ckpt_path = run_dir / CHECKPOINT
    resuming = resume and ckpt_path.is_file()  # no checkpoint yet: a fresh start
    filter_path = run_dir / "dataset" / "loss_filter.json"
    if not resuming:
        kept_ids, filter_report = loss_filter(
            model,
            [*dataset.train, *dataset.val[: cfg.eval_max_examples]],
            [*train_rows, *val_rows],
            cfg,
            eos,
            device,
            autocast,
            layout,
        )
        write_json(filter_path, filter_report)
    filter_report = json.loads(filter_path.read_text())
    kept = set(filter_report["kept"])
    train_rows = [r for r, ex in zip(train_rows, dataset.train, strict=True) if ex.id in kept]
    val_rows = [r for r, ex in zip(val_rows, dataset.val, strict=False) if ex.id in kept]
    if not train_rows:
        raise ValueError("the loss filter dropped every training exercise")

    # ---------------------------------------------------------------------------------------
    # Optimizer and schedule: AdamW on the LoRA weights (one fused kernel on CUDA), linear
    # warmup then cosine decay.
    optimizer = torch.optim.AdamW(
        trainable,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        weight_decay=cfg.weight_decay,
        **({"fused": True} if device == "cuda" else {"foreach": True}),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))

    # ---------------------------------------------------------------------------------------
    # Resume: weights, optimizer, scheduler, RNG states, data position, history, layout.
    step = 0
    history: dict[str, Any] = {"train": [], "eval": [], "trainable_params": n_trainable}
    if resuming:
        step, history = restore_checkpoint(ckpt_path, model, optimizer, scheduler, cfg, device)
        layout = Layout(**{**vars(layout), **history.get("layout", {})})
    history["layout"] = {"pack_len": layout.pack_len, "rows": layout.rows}

    # ---------------------------------------------------------------------------------------
    # The loop. Evaluate at the top (step 0 is the base model), take one optimizer step of
    # batch_size · grad_accum exercises, log and checkpoint at the bottom. The step losses stay
    # on the device (`pending`) until a log, eval or checkpoint reads them all at once.
    pending: list[tuple[int, torch.Tensor, float]] = []
    window_start, window_tokens = time.perf_counter(), 0
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        disable=not cfg.progress,
        file=sys.stderr,
        dynamic_ncols=True,
        desc="finetune",
    )
    model.train()
    with stop_on_signals() as stop:
        while True:
            due = step % cfg.eval_every == 0 or step == cfg.max_steps
            if due and (not history["eval"] or history["eval"][-1][0] != step):
                log_steps(history, pending, window_tokens, window_start, bar)
                val = evaluate(model, val_rows, layout, eos, device, autocast)
                history["eval"].append([step, val])
                if val is not None:
                    tqdm.write(f"step {step}: val loss {val:.4f}", file=sys.stderr)
                window_start, window_tokens = time.perf_counter(), 0
            if step >= cfg.max_steps:
                break

            chunks = step_batches(len(train_rows), cfg.seed, step, cfg.batch_size, cfg.grad_accum)
            rows = [train_rows[i] for chunk in chunks for i in chunk]
            batches = micro_batches(rows, layout, eos)
            loss = backward_step(model, batches, target_count(rows), device, attention, autocast)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            pending.append((step, loss, lr))
            window_tokens += sum(mb.tokens for mb in batches)
            bar.update(1)

            if on_step is not None:
                on_step(step)
            stopping = stop.is_set()  # read once: a signal from now on stops after the next step
            checkpoint = step % cfg.checkpoint_every == 0 or stopping
            if checkpoint or step % cfg.log_every == 0 or step == cfg.max_steps:
                log_steps(history, pending, window_tokens, window_start, bar)
                if checkpoint:
                    save_checkpoint(ckpt_path, model, optimizer, scheduler, step, cfg, history)
                window_start, window_tokens = time.perf_counter(), 0
            if stopping:
                bar.close()
                raise Interrupted(step)
    bar.close()

    # ---------------------------------------------------------------------------------------
    # The result: the adapter folder (written atomically), the final checkpoint, the history.
    if device == "cuda":  # the peak, to check the micro-batch memory rule against
        history["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    save_checkpoint(ckpt_path, model, optimizer, scheduler, step, cfg, history)
    adapter_dir = run_dir / "adapter"
    save_adapter(model, adapter_dir)
    write_json(run_dir / "metrics.json", history)
    evals = [v for _, v in history["eval"] if v is not None]
    speeds = [s for _, _, s, _ in history["train"]]
    return TrainResult(
        run_dir=run_dir,
        adapter_dir=adapter_dir,
        history=history,
        steps=step,
        val_loss_before=evals[0] if evals else None,
        val_loss_after=evals[-1] if evals else None,
        train_tokens_per_s=statistics.median(speeds) if speeds else 0.0,
        model=model,
        tokenizer=tokenizer,
        base_hf_dir=base_hf_dir,
        device=device,
    )


# --- logging -------------------------------------------------------------------------------------


def log_steps(
    history: dict[str, Any],
    pending: list[tuple[int, torch.Tensor, float]],
    tokens: int,
    since: float,
    bar: Any,
) -> None:
    """The pending steps' losses off the device (one sync for them all) into history["train"],
    each with the tokens/s of the window since `since` (timed after the sync)."""
    if not pending:
        return
    losses = torch.stack([loss for _, loss, _ in pending]).tolist()
    speed = tokens / max(time.perf_counter() - since, 1e-9)
    for (step, _, lr), loss in zip(pending, losses, strict=True):
        history["train"].append([step, loss, speed, lr])
    bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{speed:.0f}", lr=f"{pending[-1][2]:.2e}")
    pending.clear()


# --- schedule ------------------------------------------------------------------------------------


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning rate at `step` over the peak: linear warmup, then cosine to min_lr_ratio."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
