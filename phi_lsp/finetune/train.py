"""The LoRA / QLoRA trainer. `train()` reads top to bottom, like nanoGPT's train.py:

setup → data → model → base-model loss filter → optimizer → resume → loop (eval, step,
checkpoint) → final eval → adapter.

The rules it keeps:

- Loss only on the body: prompt tokens (imports, class header, signature, docstring) and padding
  have label -100; the target is the body and `<|endoftext|>`. A step's loss is the mean over
  every target token of its micro-batches (token-weighted, whatever `grad_accum` is).
- Precision: fp32 on CPU; on CUDA, bf16 (fp16 where bf16 is missing) with autocast, and
  flash-attention 2 when flash-attn is installed (SDPA otherwise). `quantization=nf4` loads
  the base model in 4-bit NF4 through bitsandbytes (QLoRA); the LoRA weights stay fp32.
- Exact resume: the batch at step s is a pure function of (seed, s) — example positions
  s·B·A … run through seeded per-epoch permutations — so the data position is the step count.
  A checkpoint holds the LoRA weights, the optimizer and scheduler states, the torch / CUDA /
  Python RNG states, the step, the examples seen and the history, written to a temporary file
  and renamed (a SIGKILL never leaves half a checkpoint). SIGTERM / SIGINT finish the current
  step, write a checkpoint and raise `Interrupted`. `resume=True` continues bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from phi_lsp.finetune.config import PHI3_TARGETS, PHI_TARGETS, TrainConfig
from phi_lsp.finetune.dataset import Dataset, load_dataset
from phi_lsp.finetune.exercise import Exercise
from phi_lsp.fs import atomic_write_bytes
from phi_lsp.runtime.devices import (
    eos_token_id,
    nf4_config,
    pick_attention,
    pick_device,
    pick_dtype,
)

CHECKPOINT = "checkpoint.pt"
IGNORE = -100


class Interrupted(Exception):
    """SIGTERM / SIGINT: a checkpoint at `step` was written; `--resume` continues."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}; a checkpoint was written")
        self.step = step


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


@dataclass
class Row:
    ids: list[int]
    labels: list[int]


def train(
    run_dir: Path,
    cfg: TrainConfig,
    resume: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    from peft import LoraConfig, get_peft_model
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
    model = get_peft_model(model, lora)
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
        )
        atomic_write_bytes(filter_path, _json(filter_report))
    filter_report = _read_json(filter_path)
    kept = set(filter_report["kept"])
    train_rows = [r for r, ex in zip(train_rows, dataset.train, strict=True) if ex.id in kept]
    val_rows = [r for r, ex in zip(val_rows, dataset.val, strict=False) if ex.id in kept]
    if not train_rows:
        raise ValueError("the loss filter dropped every training exercise")

    # ---------------------------------------------------------------------------------------
    # Optimizer and schedule: AdamW on the LoRA weights, linear warmup then cosine decay.
    optimizer = torch.optim.AdamW(
        trainable, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))

    # ---------------------------------------------------------------------------------------
    # Resume: weights, optimizer, scheduler, RNG states, data position, history.
    step = 0
    history: dict[str, Any] = {"train": [], "eval": [], "trainable_params": n_trainable}
    if resuming:
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        load_trainable(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = state["step"], state["history"]
        if state["examples_seen"] != step * cfg.batch_size * cfg.grad_accum:
            raise ValueError("the checkpoint's data position does not match its step")
        set_rng_state(state["rng"])

    # ---------------------------------------------------------------------------------------
    # The loop. Evaluate at the top (step 0 is the base model), take one optimizer step of
    # grad_accum micro-batches, checkpoint at the bottom.
    micro = cfg.batch_size
    bar = tqdm(
        total=cfg.max_steps,
        initial=step,
        disable=not cfg.progress,
        file=sys.stderr,
        dynamic_ncols=True,
        desc="finetune",
    )
    model.train()
    with _stop_on_signals() as stop:
        while True:
            due = step % cfg.eval_every == 0 or step == cfg.max_steps
            if due and (not history["eval"] or history["eval"][-1][0] != step):
                val = evaluate(model, val_rows, micro, eos, device, autocast)
                history["eval"].append([step, val])
                if val is not None:
                    tqdm.write(f"step {step}: val loss {val:.4f}", file=sys.stderr)
            if step >= cfg.max_steps:
                break

            t0 = time.perf_counter()
            positions = range(step * micro * cfg.grad_accum, (step + 1) * micro * cfg.grad_accum)
            order = [stream_index(len(train_rows), cfg.seed, p) for p in positions]
            batches = [order[i : i + micro] for i in range(0, len(order), micro)]
            targets_in_step = sum(
                sum(label != IGNORE for label in train_rows[i].labels[1:]) for i in order
            )
            loss_total, tokens = 0.0, 0
            for chunk in batches:
                ids, mask, labels = collate([train_rows[i] for i in chunk], eos, device)
                with autocast:
                    logits = model(input_ids=ids, attention_mask=mask).logits
                loss = token_loss_sum(logits, labels) / targets_in_step
                loss.backward()
                loss_total += loss.item()
                tokens += int(mask.sum())
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seconds = time.perf_counter() - t0
            history["train"].append([step, loss_total, tokens / seconds, lr])
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss_total:.3f}", tok_s=f"{tokens / seconds:.0f}", lr=f"{lr:.2e}"
            )

            if on_step is not None:
                on_step(step)
            stopping = stop.is_set()  # read once: a signal from now on stops after the next step
            if step % cfg.checkpoint_every == 0 or stopping:
                save_checkpoint(ckpt_path, model, optimizer, scheduler, step, cfg, history)
            if stopping:
                bar.close()
                raise Interrupted(step)
    bar.close()

    # ---------------------------------------------------------------------------------------
    # The result: the adapter folder (written atomically), the final checkpoint, the history.
    save_checkpoint(ckpt_path, model, optimizer, scheduler, step, cfg, history)
    adapter_dir = run_dir / "adapter"
    save_adapter(model, adapter_dir)
    atomic_write_bytes(run_dir / "metrics.json", _json(history))
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


# --- setup ---------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


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


# --- data ----------------------------------------------------------------------------------------


def encode(tokenizer: Any, ex: Exercise, max_len: int, eos: int | None) -> Row:
    """Prompt and body tokenized separately (the prompt ends with a newline, as at inference),
    labels only on the body (+ eos). Too long: the body keeps up to half of max_len (more when
    the prompt is short), the prompt keeps its end."""
    prompt = list(tokenizer.encode(ex.prompt, add_special_tokens=False))
    body = list(tokenizer.encode(ex.completion, add_special_tokens=False))
    if eos is not None:
        body.append(eos)
    if len(prompt) + len(body) > max_len:
        body = body[: max(max_len - len(prompt), max_len // 2)]
        prompt = prompt[len(prompt) - (max_len - len(body)) :] if max_len > len(body) else []
    return Row(prompt + body, [IGNORE] * len(prompt) + body)


@lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def stream_index(n: int, seed: int, position: int) -> int:
    """The example at `position` of the endless training stream (a seeded shuffle per epoch)."""
    epoch, i = divmod(position, n)
    return _permutation(n, seed, epoch)[i]


def collate(
    rows: Sequence[Row], pad: int, device: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        mask[i, : len(r.ids)] = 1
        labels[i, : len(r.labels)] = torch.tensor(r.labels)
    return ids.to(device), mask.to(device), labels.to(device)


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy (fp32) over labelled positions."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten(),
        ignore_index=IGNORE,
        reduction="sum",
    )


def lr_factor(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --- evaluation ----------------------------------------------------------------------------------


@torch.no_grad()
def example_losses(
    model: Any, rows: Sequence[Row], batch: int, pad: int, device: str, autocast: Any
) -> list[tuple[float, int]]:
    """(summed body loss, body tokens) per row, in eval mode (no dropout, no RNG used)."""
    was_training = model.training
    model.eval()
    out: list[tuple[float, int]] = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        ids, mask, labels = collate(chunk, pad, device)
        with autocast:
            logits = model(input_ids=ids, attention_mask=mask).logits
        losses = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2),
            labels[:, 1:],
            ignore_index=IGNORE,
            reduction="none",
        )
        counts = (labels[:, 1:] != IGNORE).sum(dim=1)
        for total, n in zip(losses.sum(dim=1).tolist(), counts.tolist(), strict=True):
            out.append((float(total), int(n)))
    model.train(was_training)
    return out


def evaluate(
    model: Any, rows: Sequence[Row], batch: int, pad: int, device: str, autocast: Any
) -> float | None:
    """Token-weighted mean body loss over `rows` (None when there are none)."""
    if not rows:
        return None
    losses = example_losses(model, rows, batch, pad, device, autocast)
    tokens = sum(n for _, n in losses)
    return sum(t for t, _ in losses) / max(1, tokens)


def loss_filter(
    model: Any,
    exercises: Sequence[Exercise],
    rows: Sequence[Row],
    cfg: TrainConfig,
    pad: int,
    device: str,
    autocast: Any,
) -> tuple[list[str], dict[str, Any]]:
    """Keep an exercise unless its mean body loss under the base model is above both
    `max_loss` and median + `loss_outlier_mads` robust sigmas (1.4826 MAD) of all of them."""
    ids = [ex.id for ex in exercises]
    if not cfg.loss_filter or not rows:
        return ids, {
            "enabled": False,
            "threshold": math.inf,
            "dropped": 0,
            "kept": ids,
            "dropped_ids": [],
        }
    means = [
        t / max(1, n) for t, n in example_losses(model, rows, cfg.batch_size, pad, device, autocast)
    ]
    median = statistics.median(means)
    mad = statistics.median(abs(m - median) for m in means) * 1.4826
    threshold = max(cfg.max_loss, median + cfg.loss_outlier_mads * mad)
    kept = [i for i, m in zip(ids, means, strict=True) if m <= threshold]
    dropped = [(i, round(m, 4)) for i, m in zip(ids, means, strict=True) if m > threshold]
    return kept, {
        "enabled": True,
        "threshold": threshold,
        "median": median,
        "robust_sigma": mad,
        "dropped": len(dropped),
        "dropped_ids": dropped,
        "kept": kept,
    }


# --- checkpoints ---------------------------------------------------------------------------------


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, state: dict[str, torch.Tensor]) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        raise ValueError("the checkpoint's LoRA weights do not match this model and LoRA config")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    path: Path,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    step: int,
    cfg: TrainConfig,
    history: dict[str, Any],
) -> None:
    """Everything `--resume` needs, written to a temporary file, flushed, then renamed."""
    state = {
        "step": step,
        "examples_seen": step * cfg.batch_size * cfg.grad_accum,
        "adapter": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "history": history,
        "config": asdict(cfg),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_bytes(path.parent / "metrics.json", _json(history))


def save_adapter(model: Any, folder: Path) -> None:
    """peft's adapter folder (adapter_config.json + adapter_model.safetensors), swapped in
    whole: written next to `folder`, then renamed over it."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Any]:
    """An event set by SIGTERM / SIGINT (main thread only; elsewhere it never fires)."""
    import threading

    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _json(data: Any) -> bytes:
    import json

    return json.dumps(data, indent=1, default=str).encode()


def _read_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text())


__all__ = ["Dataset", "Interrupted", "TrainConfig", "TrainResult", "train"]
