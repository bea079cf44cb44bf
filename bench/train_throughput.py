"""Training throughput of `phi-lsp finetune`'s trainer on the tests' tiny model (CPU or GPU).

The dataset is mined from this interpreter's stdlib (docstring'd functions: prompts and bodies
of realistic, varied lengths), built once under bench/.models/train-throughput/. Each run trains
`--steps` optimizer steps and prints the real (non-padding) tokens per second of the loop,
timed from the end of the first step to the end of the last (setup, the loss filter and the
first step's warm-up are left out), and the step losses' mean.

    .venv/bin/python bench/train_throughput.py                     # pack off, then on
    .venv/bin/python bench/train_throughput.py --pack off --steps 20
    .venv/bin/python bench/train_throughput.py --batch-size 16 --device cuda

Flags the trainer under test does not know (an older checkout, for a before/after comparison)
are left out, so PYTHONPATH=<old checkout> runs it against that code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR / ".models" / "train-throughput"


def prepare() -> tuple[Path, Path]:
    """(the tiny model's HF folder, a dataset folder), built once."""
    from phi_lsp.finetune.dataset import DataConfig, build_dataset, save_dataset
    from phi_lsp.finetune.sources import SourceConfig
    from testkit.tinymodel import build_tiny_model, training_files

    hf_dir, dataset = ROOT / "tiny-phi", ROOT / "dataset"
    if not (hf_dir / "config.json").is_file():
        build_tiny_model(ROOT)
    if not (dataset / "train.jsonl").is_file():
        repo = ROOT / "repo"
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        for path in training_files(40):
            shutil.copy(path, repo / path.name)
        config = DataConfig(sources=SourceConfig(max_file_bytes=60_000), val_fraction=0.1)
        save_dataset(build_dataset([repo], [], config), dataset)
    return hf_dir, dataset


def run(hf_dir: Path, dataset: Path, args: argparse.Namespace, pack: str | None) -> dict[str, Any]:
    import torch

    from phi_lsp.finetune.batches import encode, step_batches
    from phi_lsp.finetune.config import TrainConfig
    from phi_lsp.finetune.train import train

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = dict(
        model=str(hf_dir),
        max_steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        eval_every=args.steps,
        checkpoint_every=args.steps,
        threads=args.threads,
        device=args.device,
        progress=False,
        warmup_steps=2,
        max_seq_len=args.max_seq_len,
    )
    if pack is not None:
        values["pack"] = pack
    values = {k: v for k, v in values.items() if k in known}
    cfg = TrainConfig(**values)
    run_dir = ROOT / f"run-{pack or 'default'}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(dataset, run_dir / "dataset")
    stamps: dict[int, float] = {}
    threads = torch.get_num_threads()
    try:
        result = train(run_dir, cfg, on_step=lambda s: stamps.setdefault(s, time.perf_counter()))
    finally:
        torch.set_num_threads(threads)
    if result.device == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()  # the last step's work is done (a GPU runs ahead of on_step)
    from phi_lsp.finetune.dataset import load_dataset

    kept = set(json.loads((run_dir / "dataset" / "loss_filter.json").read_text())["kept"])
    eos = result.tokenizer.eos_token_id
    rows = [
        encode(result.tokenizer, ex, cfg.max_seq_len, eos)
        for ex in load_dataset(run_dir / "dataset").train
        if ex.id in kept
    ]
    tokens = sum(
        len(rows[i].ids)
        for step in range(1, args.steps)
        for chunk in step_batches(len(rows), cfg.seed, step, cfg.batch_size, cfg.grad_accum)
        for i in chunk
    )
    losses = [row[1] for row in result.history["train"]]
    return {
        "pack": pack or "-",
        "examples": len(rows),
        "tokens/s": tokens / (end - stamps[1]),
        "mean loss": statistics.fmean(losses),
        "val after": result.val_loss_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pack", action="append", help="off / on / auto (repeatable)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    hf_dir, dataset = prepare()
    for _ in range(args.rounds):
        for pack in args.pack or [None]:
            out = run(hf_dir, dataset, args, pack)
            print(
                "  ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()
                )
            )


if __name__ == "__main__":
    main()
