"""From exercises to training batches: the loss mask, the padding, and the data order.

- `encode`: an exercise becomes token ids and labels; the prompt is labelled `IGNORE`, so the
  loss falls only on the body (+ `<|endoftext|>`).
- `stream_index` / `step_batches`: the batch at step s is a pure function of (seed, s) —
  example positions s·B·A … run through seeded per-epoch permutations — so the data position
  is the step count and a resumed run sees the same batches.
- `collate`: rows right-padded into tensors (padding is labelled `IGNORE` too).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from phi_lsp.finetune.exercise import Exercise

IGNORE = -100  # the label of a token the loss skips (cross_entropy's ignore_index)


@dataclass
class Row:
    """One encoded exercise: input ids, and labels (`IGNORE` on the prompt)."""

    ids: list[int]
    labels: list[int]


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


def step_batches(n: int, seed: int, step: int, micro: int, accum: int) -> list[list[int]]:
    """The row indices of step `step`'s `accum` micro-batches of `micro` examples each."""
    positions = range(step * micro * accum, (step + 1) * micro * accum)
    order = [stream_index(n, seed, p) for p in positions]
    return [order[i : i + micro] for i in range(0, len(order), micro)]


def target_count(rows: Sequence[Row]) -> int:
    """Labelled next-token targets in `rows` (the first token is never a target)."""
    return sum(sum(label != IGNORE for label in r.labels[1:]) for r in rows)


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
