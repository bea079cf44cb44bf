"""`phi-lsp finetune PATH… [--exercises FILE…] [--from-usage] [--model BASE] [--out DIR]
[--max-steps N] [--resume [DIR]] [--export gguf]`; `phi-lsp finetune --promote RUN | --rollback`.

`add_parser(subparsers)` registers the command; every field of the data and training configs
is a flag (`--lora-r 8`, `--no-keep-tests`, …). A run directory (`--out`, default
`PHI_LSP_HOME/finetune/<time>`) holds everything: `config.json` (configs, the sources' git
commits, file and dataset hashes, versions), `dataset/`, `checkpoint.pt`, `metrics.json`,
`adapter/` (peft + `lora.gguf`), `report.{md,json}`, `loss.png` and the exports. The source
repositories are only read, and the run directory may not lie inside one of them.

`--from-usage` adds the suggestions you accepted and kept (the usage journal). After training,
the promotion gate compares the adapter with the served one (`finetune.promotion`) and promotes
it when it is better; the report says why or why not.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from phi_lsp.finetune.config import TrainConfig, config_from_dict
from phi_lsp.finetune.dataset import DataConfig
from phi_lsp.finetune.filters import FilterConfig
from phi_lsp.finetune.sources import SourceConfig

DATA_HELP = {
    "max_file_bytes": "skip files larger than this",
    "max_line_chars": "minified: skip files with a longer line",
    "max_mean_line_chars": "minified: skip files with a longer mean line",
    "min_body_lines": "fewest code lines in a body",
    "max_body_lines": "most code lines in a body",
    "max_body_chars": "most characters in a body",
    "min_doc_words": "fewest words in a docstring",
    "keep_tests": "keep test functions",
    "max_non_ascii": "largest share of non-ASCII characters",
    "near_dup_threshold": "MinHash Jaccard similarity that makes a near duplicate",
    "contamination_threshold": "share of a HumanEval task's 13-grams that drops an exercise",
    "val_fraction": "share of the exercises held out (whole files)",
    "split_seed": "seed of the train / validation split",
}
REPORT_DEFAULTS = {"doctest_samples": 20, "doctest_max_new_tokens": 192}
# Knobs a resumed run may change; the others are read back from config.json so that the run
# continues exactly.
RESUME_OVERRIDES = {"max_steps", "progress", "eval_every", "checkpoint_every", "log_every"}


def _scalar_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.type in ("int", "float", "str", "bool")]


def _add_fields(group: Any, cls: type, helps: dict[str, str] | None = None) -> None:
    defaults = cls()
    for f in _scalar_fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        text = (helps or {}).get(f.name) or f.metadata.get("help", "")
        help_text = f"{text} (default: {default})"
        if f.type == "bool":
            group.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            choices = f.metadata.get("choices") or None
            group.add_argument(
                flag, type=kind, choices=choices, default=argparse.SUPPRESS, help=help_text
            )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `finetune` on the `phi-lsp` subparsers."""
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune phi (LoRA) on exercises mined from your repositories",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", type=Path, help="local repositories (read only)")
    parser.add_argument(
        "--exercises",
        nargs="+",
        type=Path,
        default=[],
        help="JSONL {prompt, completion} lines or .py exercise files",
    )
    parser.add_argument(
        "--out", type=Path, help="run directory (default: PHI_LSP_HOME/finetune/<time>)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="continue a stopped run: DIR, --out, or the latest run",
    )
    parser.add_argument(
        "--export",
        action="append",
        choices=["gguf"],
        default=[],
        help="gguf: also merge the adapter and convert to one GGUF",
    )
    parser.add_argument("--export-outtype", choices=["f16", "f32"], default="f16")
    parser.add_argument(
        "--dataset-only", action="store_true", help="build and report the dataset, do not train"
    )
    parser.add_argument(
        "--from-usage",
        action="store_true",
        help="add the suggestions you accepted and kept (PHI_LSP_HOME/usage) as exercises",
    )
    parser.add_argument(
        "--usage-min-share",
        type=float,
        default=0.5,
        help="least share of an accepted suggestion still there to use it (default: 0.5)",
    )
    parser.add_argument(
        "--no-promote",
        dest="promote_after",
        action="store_false",
        help="run the promotion gate and report it, but do not promote",
    )
    switch = parser.add_mutually_exclusive_group()
    switch.add_argument(
        "--promote", metavar="RUN", help="promote RUN's adapter by hand (no training)"
    )
    switch.add_argument(
        "--rollback",
        action="store_true",
        help="go back to the previously promoted adapter, or none (no training)",
    )
    data = parser.add_argument_group("dataset")
    _add_fields(data, SourceConfig, DATA_HELP)
    _add_fields(data, FilterConfig, DATA_HELP)
    _add_fields(data, DataConfig, DATA_HELP)
    training = parser.add_argument_group("training")
    _add_fields(training, TrainConfig)
    report = parser.add_argument_group("report")
    report.add_argument(
        "--doctest-samples",
        type=int,
        default=REPORT_DEFAULTS["doctest_samples"],
        help="held-out exercises whose doctests are run (0: none)",
    )
    report.add_argument(
        "--doctest-max-new-tokens", type=int, default=REPORT_DEFAULTS["doctest_max_new_tokens"]
    )
    parser.set_defaults(run=run_finetune)
    return parser


def _pick(args: argparse.Namespace, cls: type, **extra: Any) -> Any:
    values = {f.name: getattr(args, f.name) for f in _scalar_fields(cls) if hasattr(args, f.name)}
    return cls(**values, **extra)


def data_config(args: argparse.Namespace) -> DataConfig:
    return _pick(
        args, DataConfig, sources=_pick(args, SourceConfig), filters=_pick(args, FilterConfig)
    )


def latest_run(home: Path) -> Path | None:
    runs = sorted(p for p in (home / "finetune").glob("*") if (p / "config.json").is_file())
    return runs[-1] if runs else None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("phi-lsp", "torch", "transformers", "peft", "bitsandbytes", "datasketch"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def run_finetune(args: argparse.Namespace) -> int:
    from phi_lsp.fs import atomic_write_bytes
    from phi_lsp.models.source import phi_lsp_home

    def fail(message: str) -> int:
        print(f"phi-lsp finetune: {message}", file=sys.stderr)
        return 2

    if args.promote or args.rollback:
        return switch_promotion(args)
    given = {
        f.name: getattr(args, f.name) for f in _scalar_fields(TrainConfig) if hasattr(args, f.name)
    }
    resume = args.resume is not None
    if resume:
        run_dir = Path(args.resume) if args.resume else args.out or latest_run(phi_lsp_home())
        if run_dir is None or not (run_dir / "config.json").is_file():
            return fail("nothing to resume: no run directory with a config.json")
        saved = json.loads((run_dir / "config.json").read_text())
        ignored = sorted(set(given) - RESUME_OVERRIDES)
        if ignored:
            print(f"--resume: keeping the run's {', '.join(ignored)}", file=sys.stderr)
        cfg = config_from_dict(
            {**saved["train"], **{k: v for k, v in given.items() if k in RESUME_OVERRIDES}}
        )
        saved["train"] = dataclasses.asdict(cfg)
        atomic_write_bytes(run_dir / "config.json", json.dumps(saved, indent=2).encode())
        report_cfg = saved.get("report", REPORT_DEFAULTS)
    else:
        if not args.paths and not args.exercises and not args.from_usage:
            return fail("give at least one repository PATH, --exercises FILE or --from-usage")
        run_dir = args.out or phi_lsp_home() / "finetune" / time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(run_dir).resolve()
        for repo in args.paths:
            if not Path(repo).is_dir():
                return fail(f"{repo} is not a directory")
            if run_dir.is_relative_to(Path(repo).resolve()):
                return fail(f"the run directory {run_dir} is inside {repo}, which is only read")
        if run_dir.exists() and any(run_dir.iterdir()):
            return fail(f"{run_dir} is not empty (continue it with --resume {run_dir})")
        cfg = TrainConfig(**given)
        report_cfg = {
            "doctest_samples": args.doctest_samples,
            "doctest_max_new_tokens": args.doctest_max_new_tokens,
        }
        from phi_lsp.finetune.dataset import build_dataset, render_report, save_dataset

        dcfg = data_config(args)
        usage = None
        if args.from_usage:
            from phi_lsp.finetune.usage_exercises import read_usage

            usage = read_usage(phi_lsp_home() / "usage", args.usage_min_share)
        try:
            dataset = build_dataset(args.paths, args.exercises, dcfg, usage=usage)
        except FileNotFoundError as exc:  # HumanEval data for decontamination
            return fail(f"{exc}; pip install 'phi-lsp[eval]'")
        hashes = save_dataset(dataset, run_dir / "dataset")
        config = {
            "command": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "train": dataclasses.asdict(cfg),
            "data": dataclasses.asdict(dcfg),
            "report": report_cfg,
            "sources": [
                {k: r[k] for k in ("label", "root", "listing", "commit", "dirty")}
                for r in dataset.report["repos"]
            ],
            "exercise_files": {str(p): _sha256(Path(p)) for p in args.exercises},
            "usage": usage.summary() if usage is not None else None,
            "dataset_hashes": hashes,
            "versions": _versions(),
        }
        atomic_write_bytes(run_dir / "config.json", json.dumps(config, indent=2).encode())
        print(render_report(dataset.report))
        if args.dataset_only:
            print(f"dataset in {run_dir / 'dataset'}")
            return 0

    return _train_and_report(run_dir, cfg, resume, report_cfg, args)


def _train_and_report(
    run_dir: Path, cfg: Any, resume: bool, report_cfg: dict[str, Any], args: argparse.Namespace
) -> int:
    from phi_lsp.bodygen.ranking import run_doctests_sandboxed
    from phi_lsp.finetune.checkpoint import Interrupted
    from phi_lsp.finetune.dataset import load_dataset
    from phi_lsp.finetune.export import export_merged_gguf, write_lora_gguf
    from phi_lsp.finetune.promotion import gate_run
    from phi_lsp.finetune.report import doctest_scores, runnable_exercises, write_report
    from phi_lsp.finetune.train import train
    from phi_lsp.runtime.devices import eos_token_id

    try:
        result = train(run_dir, cfg, resume=resume)
    except Interrupted as stopped:
        print(
            f"\nphi-lsp finetune: {stopped}; continue with: phi-lsp finetune --resume {run_dir}",
            file=sys.stderr,
        )
        return 130
    assert result.base_hf_dir is not None
    write_lora_gguf(result.adapter_dir, result.base_hf_dir)

    dataset = load_dataset(run_dir / "dataset")
    loss_filter = json.loads((run_dir / "dataset" / "loss_filter.json").read_text())
    kept = set(loss_filter["kept"])
    doctests: dict[str, Any] = {"runnable": 0}
    runnable: list[Any] = []
    tuned = None
    eos = eos_token_id(result.model.config.to_dict(), result.tokenizer)
    if report_cfg.get("doctest_samples", 0) > 0:
        try:
            held_out = [ex for ex in dataset.val if ex.id in kept]
            runnable = runnable_exercises(
                held_out, report_cfg["doctest_samples"], run_doctests_sandboxed
            )
            base, tuned = doctest_scores(
                result.model,
                result.tokenizer,
                runnable,
                max_new_tokens=report_cfg["doctest_max_new_tokens"],
                eos=eos,
                device=result.device,
                run_doctests=run_doctests_sandboxed,
            )
            doctests = {"runnable": len(runnable), "base": vars(base), "tuned": vars(tuned)}
        except (OSError, RuntimeError) as exc:  # no sandbox on this platform
            doctests = {"runnable": 0, "note": f"sandbox unavailable: {exc}"}
            runnable, tuned = [], None
    promotion = gate_run(
        result,
        cfg,
        [ex for ex in dataset.val[: cfg.eval_max_examples] if ex.id in kept],
        runnable,
        tuned,
        eos=eos,
        run_doctests=run_doctests_sandboxed,
        max_new_tokens=report_cfg.get("doctest_max_new_tokens", 192),
        promote_after=getattr(args, "promote_after", True),
    )
    exports: dict[str, str] = {"lora-gguf": str(result.adapter_dir / "lora.gguf")}
    if "gguf" in getattr(args, "export", []):
        outtype = getattr(args, "export_outtype", "f16")
        path = export_merged_gguf(
            result.base_hf_dir,
            result.adapter_dir,
            run_dir / f"merged-{outtype}.gguf",
            outtype,
        )
        exports["gguf"] = str(path)
    data = {
        "run_dir": str(run_dir),
        "base_model": str(result.base_hf_dir),
        "steps": result.steps,
        "train_tokens_per_s": result.train_tokens_per_s,
        "val_loss": {"before": result.val_loss_before, "after": result.val_loss_after},
        "doctests": doctests,
        "dataset": dataset.report,
        "loss_filter": {k: v for k, v in loss_filter.items() if k != "kept"},
        "adapter": str(result.adapter_dir),
        "exports": exports,
        "promotion": promotion,
        "history": result.history,
    }
    paths = write_report(run_dir, data)
    print(paths["md"].read_text())
    return 0


def switch_promotion(args: argparse.Namespace) -> int:
    """`--promote RUN` / `--rollback`: switch the promoted adapter by hand."""
    from phi_lsp.finetune.promotion import describe, find_run, promote, rollback

    try:
        state = promote(find_run(args.promote), "manual") if args.promote else rollback()
    except ValueError as exc:
        print(f"phi-lsp finetune: {exc}", file=sys.stderr)
        return 2
    print(describe(state))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m phi_lsp.cli.finetune …`: the command without the rest of phi-lsp's CLI."""
    parser = argparse.ArgumentParser(prog="phi-lsp")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
