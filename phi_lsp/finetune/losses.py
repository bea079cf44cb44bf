"""The body loss, in fp32 over labelled tokens only: summed over a training step's micro-batches
(`backward_step`), per exercise for the validation loss (packed rows split back by exercise),
and the base-model loss filter (Refact's rule) built on it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from phi_lsp.finetune.batches import (
    IGNORE,
    Layout,
    MicroBatch,
    Row,
    micro_batches,
    model_inputs,
    target_count,
)
from phi_lsp.finetune.config import TrainConfig
from phi_lsp.finetune.exercise import Exercise


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy (fp32) over labelled positions."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten(),
        ignore_index=IGNORE,
        reduction="sum",
    )


def backward_step(
    model: Any,
    batches: Sequence[MicroBatch],
    targets: int,
    device: str,
    attention: str,
    autocast: Any,
) -> torch.Tensor:
    """Forward and backward over one optimizer step's micro-batches. Each micro-batch's summed
    loss is divided by the step's target count, so the gradients and the returned loss (a
    device tensor: reading it is the caller's sync, when it logs) are the token-weighted mean
    over every target of the step, however its exercises were split into micro-batches or
    packed into rows."""
    total = torch.zeros((), device=device)
    for mb in batches:
        inputs, labels = model_inputs(mb, device, attention)
        with autocast:
            logits = model(**inputs).logits
        loss = token_loss_sum(logits, labels) / max(1, targets)
        loss.backward()
        total += loss.detach()
    return total


@torch.no_grad()
def example_losses(
    model: Any, rows: Sequence[Row], layout: Layout | int, pad: int, device: str, autocast: Any
) -> list[tuple[float, int]]:
    """(summed body loss, body tokens) per row, in eval mode (no dropout, no RNG used).
    `layout`: packed or not (an int: unpacked, that many exercises per forward pass). Packed
    rows are split back by exercise: each sum is the exercise's loss alone, within fp noise."""
    if isinstance(layout, int):
        layout = Layout(pack_len=0, rows=layout)
    was_training = model.training
    model.eval()
    totals = torch.zeros(len(rows) + 1, device=device)  # the last slot takes the padding
    for mb in micro_batches(rows, layout, pad):
        inputs, labels = model_inputs(mb, device, layout.attention)
        with autocast:
            logits = model(**inputs).logits
        losses = F.cross_entropy(
            logits[:, :-1].float().transpose(1, 2),
            labels[:, 1:],
            ignore_index=IGNORE,
            reduction="none",
        )
        owner = mb.owner[:, 1:].to(device)  # the exercise of each target token
        totals.index_add_(0, torch.where(owner < 0, len(rows), owner).flatten(), losses.flatten())
    model.train(was_training)
    counts = [target_count([r]) for r in rows]
    return [(float(t), n) for t, n in zip(totals[:-1].tolist(), counts, strict=True)]


def evaluate(
    model: Any, rows: Sequence[Row], layout: Layout | int, pad: int, device: str, autocast: Any
) -> float | None:
    """Token-weighted mean body loss over `rows` (None when there are none)."""
    if not rows:
        return None
    losses = example_losses(model, rows, layout, pad, device, autocast)
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
    layout: Layout,
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
    means = [t / max(1, n) for t, n in example_losses(model, rows, layout, pad, device, autocast)]
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
