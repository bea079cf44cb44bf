"""What makes `--resume` exact, and what makes stopping safe.

A checkpoint holds the LoRA weights, the optimizer and scheduler states, the torch / CUDA /
Python RNG states, the step, the examples seen and the history. It is written to a temporary
file, flushed and renamed, so a SIGKILL never leaves half a checkpoint; the adapter folder is
swapped in whole the same way. SIGTERM / SIGINT only set an event (`stop_on_signals`): the
trainer finishes the step, writes a checkpoint and raises `Interrupted`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from phi_lsp.finetune.config import TrainConfig
from phi_lsp.fs import atomic_write_bytes

CHECKPOINT = "checkpoint.pt"


class Interrupted(Exception):
    """SIGTERM / SIGINT: a checkpoint at `step` was written; `--resume` continues."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}; a checkpoint was written")
        self.step = step


# --- random state --------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # CPU and every CUDA device


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
    write_json(path.parent / "metrics.json", history)


def restore_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any, cfg: TrainConfig, device: str
) -> tuple[int, dict[str, Any]]:
    """Load weights, optimizer, scheduler and RNG states from `path`; (step, history)."""
    state = torch.load(path, map_location=device, weights_only=True)
    load_trainable(model, state["adapter"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step, history = state["step"], state["history"]
    if state["examples_seen"] != step * cfg.batch_size * cfg.grad_accum:
        raise ValueError("the checkpoint's data position does not match its step")
    set_rng_state(state["rng"])
    return step, history


def save_adapter(model: Any, folder: Path) -> None:
    """peft's adapter folder (adapter_config.json + adapter_model.safetensors), swapped in
    whole: written next to `folder`, then renamed over it."""
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


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON, written atomically (values JSON lacks become strings)."""
    atomic_write_bytes(path, json.dumps(data, indent=1, default=str).encode())


# --- stopping ------------------------------------------------------------------------------------


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM / SIGINT (main thread only; elsewhere it never fires)."""
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
