"""From exercises to training batches: the loss mask, packing, the data order, the micro-batch.

- `encode`: an exercise becomes token ids and labels; the prompt is labelled `IGNORE`, so the
  loss falls only on the body (+ `<|endoftext|>`).
- `stream_index` / `step_batches`: the exercises of step s are a pure function of (seed, s) —
  example positions s·B·A … run through seeded per-epoch permutations — so the data position
  is the step count and a resumed run sees the same exercises (packed or not).
- `Layout` / `micro_batches`: how a step's exercises become forward passes. Unpacked: B
  right-padded exercises per micro-batch. Packed: first-fit decreasing into rows of up to
  `pack_len` tokens, each exercise with positions from 0, the first token of each exercise
  labelled `IGNORE` (never the target of the previous exercise's last token), and no attention
  across exercises: a block-diagonal causal mask (SDPA, eager), or one flat row with
  cu_seqlens (flash-attention 2's varlen kernels).
- `micro_tokens_for_memory`: the micro-batch size that fits a GPU's free memory.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
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


def pack(rows: Sequence[Row], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the indices of `rows` in bins of at most `capacity` tokens (a row
    longer than that gets a bin of its own). Ties keep the input order, so the bins are a pure
    function of the rows (exact resume)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(rows)), key=lambda i: -len(rows[i].ids)):
        n = len(rows[i].ids)
        b = next((b for b, free in enumerate(room) if n <= free), len(bins))
        if b == len(bins):
            bins.append([])
            room.append(capacity)
        bins[b].append(i)
        room[b] -= n
    return bins


@dataclass
class MicroBatch:
    """One forward pass, built on the host: tensors stay on the CPU until `model_inputs`, and
    the counts the trainer logs are plain ints (reading them needs no device sync)."""

    ids: torch.Tensor  # [rows, width]; flash-attention 2 packed: [1, tokens]
    labels: torch.Tensor  # IGNORE on prompts, padding and each exercise's first token
    positions: torch.Tensor  # from 0 in each exercise
    owner: torch.Tensor  # the index of each token's exercise in the rows given; -1: padding
    packed: bool
    cu_seqlens: list[int] | None  # flash-attention 2 packed: the exercises' bounds in the row
    tokens: int  # real tokens (no padding)
    targets: int  # labelled next-token targets


@dataclass(frozen=True)
class Layout:
    """How exercises become forward passes: `pack_len` 0 is one exercise per row (right
    padded); `rows` rows make a micro-batch. `attention` is the model's implementation: it
    decides the mask's form (see `model_inputs`)."""

    pack_len: int
    rows: int
    attention: str = "sdpa"

    @property
    def flat(self) -> bool:
        return bool(self.pack_len) and self.attention == "flash_attention_2"


def micro_batches(rows: Sequence[Row], layout: Layout, pad: int) -> list[MicroBatch]:
    """`rows` as micro-batches: unpacked, `layout.rows` exercises each in order; packed,
    `layout.rows` first-fit-decreasing bins each (flash-attention 2: concatenated)."""
    bins = pack(rows, layout.pack_len) if layout.pack_len else [[i] for i in range(len(rows))]
    groups = [bins[k : k + layout.rows] for k in range(0, len(bins), layout.rows)]
    if layout.flat:
        groups = [[[i for b in group for i in b]] for group in groups]
    return [collate(rows, group, pad, packed=bool(layout.pack_len)) for group in groups]


def collate(
    rows: Sequence[Row], seqs: Sequence[Sequence[int]], pad: int, packed: bool
) -> MicroBatch:
    """The exercises `seqs[r]` side by side in row r, right-padded to the longest row."""
    width = max(sum(len(rows[i].ids) for i in seq) for seq in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(seqs), width), dtype=torch.long)
    owner = torch.full((len(seqs), width), -1, dtype=torch.long)
    bounds = [0]
    for r, seq in enumerate(seqs):
        at = 0
        for i in seq:
            n = len(rows[i].ids)
            ids[r, at : at + n] = torch.tensor(rows[i].ids)
            labels[r, at + 1 : at + n] = torch.tensor(rows[i].labels[1:])
            positions[r, at : at + n] = torch.arange(n)
            owner[r, at : at + n] = i
            at += n
            bounds.append(bounds[-1] + n)
    picked = [rows[i] for seq in seqs for i in seq]
    return MicroBatch(
        ids=ids,
        labels=labels,
        positions=positions,
        owner=owner,
        packed=packed,
        cu_seqlens=bounds if packed and len(seqs) == 1 else None,
        tokens=bounds[-1],
        targets=target_count(picked),
    )


def model_inputs(
    mb: MicroBatch, device: str, attention: str
) -> tuple[dict[str, Any], torch.Tensor]:
    """(the model's keyword arguments, the labels) on `device`, with no device sync.

    Unpacked: a 2D padding mask, as transformers expects. Packed: position ids from 0 per
    exercise and, for SDPA and eager, an explicit 4D block-diagonal causal mask (boolean for
    SDPA, additive fp32 for eager: half-precision scores are promoted, as eager softmaxes in
    fp32 anyway). transformers 5 also derives that mask from position
    ids alone (`find_packed_sequence_indices`), but only when no 2D mask is given, with a host
    sync per forward, and older versions do not; the explicit mask does not depend on it.
    flash-attention 2 packed: one flat row and cu_seqlens, so the varlen kernel sees each
    exercise alone (transformers infers them from position ids only for a batch of one)."""

    def move(t: torch.Tensor) -> torch.Tensor:
        if device == "cuda":  # pinned: the copy is queued, the host runs on
            return t.pin_memory().to(device, non_blocking=True)
        return t.to(device)

    ids, labels = move(mb.ids), move(mb.labels)
    if not mb.packed:
        return {"input_ids": ids, "attention_mask": move((mb.owner >= 0).long())}, labels
    inputs: dict[str, Any] = {"input_ids": ids, "position_ids": move(mb.positions)}
    if attention == "flash_attention_2":
        if mb.cu_seqlens is None:
            raise ValueError("flash-attention 2 takes packed exercises as one flat row")
        cu = move(torch.tensor(mb.cu_seqlens, dtype=torch.int32))
        longest = max(b - a for a, b in pairwise(mb.cu_seqlens))
        inputs.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest)
        inputs.update(max_length_k=longest)
        return inputs, labels
    owner = move(mb.owner)
    width = owner.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool, device=owner.device).tril()
    mask = ((owner[:, :, None] == owner[:, None, :]) & causal)[:, None]  # padding: own block
    if attention == "eager":  # eager adds the mask to the scores
        mask = torch.zeros(mask.shape, device=owner.device).masked_fill_(
            ~mask, torch.finfo(torch.float32).min
        )
    inputs["attention_mask"] = mask
    return inputs, labels


def micro_tokens_for_memory(
    free_bytes: int,
    config: dict[str, Any],
    dtype_bytes: int,
    attention: str,
    pack_len: int,
    checkpointing: bool,
) -> int:
    """Tokens per micro-batch (a multiple of `pack_len`, at least one row) that fit in
    `free_bytes` of GPU memory, from the model config alone.

    The rule, per token, at 2-byte precision (scaled by `dtype_bytes` / 2):
    - each layer keeps 24·hidden + 14·intermediate bytes for the backward pass: the layer
      norm, q/k/v and attention outputs, the LoRA dropouts' inputs and masks (≈ 12·hidden
      values), the MLP's input, tanh-GELU intermediates and output (≈ 7·intermediate);
      gradient checkpointing keeps only the layer input (2·hidden) plus one layer recomputed;
    - eager attention also keeps each head's attention row (6 bytes × heads × pack_len);
    - the logits: 16·vocab bytes (the half-precision logits, their fp32 copy for the loss,
      log-softmax and the gradients), held once, not per layer — for phi-1 a fifth of it all.
    60% of the free memory is used: the rest is the allocator's fragmentation, cuBLAS and
    attention workspaces, and the optimizer. phi-1 in bf16 with SDPA: ≈ 4.7 MB per token, so
    4 rows of 2048 tokens on an 80 GB card, 8 on a 141 GB one."""
    hidden, inner = int(config["hidden_size"]), int(config["intermediate_size"])
    layers, heads = int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    scale = dtype_bytes / 2
    layer = 24 * hidden + 14 * inner
    if attention == "eager":
        layer += 6 * heads * pack_len
    kept = (2 * hidden * layers + layer) if checkpointing else layer * layers
    per_token = kept * scale + 16 * int(config["vocab_size"])
    rows = int(0.6 * free_bytes / per_token) // pack_len
    return max(1, rows) * pack_len
