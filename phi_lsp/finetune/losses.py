"""The body loss, in fp32 over labelled tokens only: summed for a training step, per exercise
for the validation loss, and the base-model loss filter (Refact's rule) built on it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from phi_lsp.finetune.batches import IGNORE, Row, collate
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
