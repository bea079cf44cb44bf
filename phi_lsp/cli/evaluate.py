"""`phi-lsp eval humaneval|contamination`: HumanEval pass@k, robustness, near-duplicates."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from phi_lsp.cli.common import fail, load_for_cli
from phi_lsp.models.source import phi_lsp_home


def add_parser(commands: Any) -> None:
    evaluate = commands.add_parser("eval", help="HumanEval and contamination checks")
    benches = evaluate.add_subparsers(dest="bench", required=True)
    humaneval = benches.add_parser("humaneval", help="pass@1 / pass@k on the 164 tasks")
    humaneval.add_argument("--model", default=None)
    humaneval.add_argument(
        "--backend", choices=["auto", "llamacpp", "transformers"], default="auto"
    )
    humaneval.add_argument("--limit", type=int)
    humaneval.add_argument("--samples", type=int, default=1, help="n per task, for pass@k")
    humaneval.add_argument("--temperature", type=float, default=0.8)
    humaneval.add_argument("--max-new-tokens", type=int, default=384)
    humaneval.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    humaneval.add_argument("--perturb", action="store_true", help="also each perturbation")
    humaneval.add_argument("--out", type=Path, help="default: PHI_LSP_HOME/eval/<time>")
    humaneval.set_defaults(run=run_eval_humaneval)
    contamination = benches.add_parser("contamination", help="HumanEval near-duplicates in PATHs")
    contamination.add_argument("paths", nargs="+", type=Path)
    contamination.add_argument("--threshold", type=float, default=0.5)
    contamination.set_defaults(run=run_eval_contamination)


def run_eval_humaneval(args: argparse.Namespace) -> int:
    import time

    from phi_lsp.errors import ModelLoadError
    from phi_lsp.evaluation.humaneval import run_humaneval, run_robustness

    out = args.out or phi_lsp_home() / "eval" / time.strftime("humaneval-%Y%m%d-%H%M%S")
    try:
        engine = load_for_cli(args.model, args.backend)
    except ModelLoadError as exc:
        return fail(exc)
    try:
        run_humaneval(
            engine,
            limit=args.limit,
            samples=args.samples,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            workers=args.workers,
            out_dir=out,
        )
        print((out / "summary.md").read_text())
        if args.perturb:
            for score in run_robustness(
                engine,
                out_dir=out / "perturbations",
                limit=args.limit,
                max_new_tokens=args.max_new_tokens,
                workers=args.workers,
            ):
                print(f"{score.name:<20} pass@1 {score.pass_at_1:.3f}  drop {score.drop:+.3f}")
    finally:
        engine.close()
    print(f"results in {out}")
    return 0


def run_eval_contamination(args: argparse.Namespace) -> int:
    from phi_lsp.evaluation.contamination import find_near_duplicates

    matches = find_near_duplicates(args.paths, threshold=args.threshold)
    for m in matches:
        print(f"{m.task_id:<16} {m.overlap:5.2f}  {m.path}")
    print(f"{len(matches)} near-duplicate(s) of HumanEval tasks (threshold {args.threshold})")
    return 0
