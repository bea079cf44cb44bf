"""`phi-lsp models list|pull|import|verify|rm` and `phi-lsp convert`: the model cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from phi_lsp.cli.common import fail
from phi_lsp.models.manifests import QUANTS
from phi_lsp.models.source import models_dir


def add_parser(commands: Any) -> None:
    convert = commands.add_parser("convert", help="convert an HF phi folder to GGUF")
    convert.add_argument("hf_dir", type=Path, help="a Hugging Face folder (config + safetensors)")
    convert.add_argument("--out", type=Path, help="output .gguf (default: the model cache)")
    convert.add_argument("--name", help="model name in the cache (default: the folder's name)")
    convert.add_argument("--outtype", choices=["f16", "f32"], default="f16")
    convert.set_defaults(run=run_convert)

    models = commands.add_parser("models", help="list, pull, import, verify, rm models")
    verbs = models.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="known and cached models").set_defaults(run=run_models_list)
    pull = verbs.add_parser("pull", help="download, convert and quantize a known model")
    pull.add_argument("name")
    pull.add_argument("--quant", choices=list(QUANTS), help="default: the manifest's")
    pull.set_defaults(run=run_models_pull)
    adopt = verbs.add_parser("import", help="adopt a local GGUF file or HF folder")
    adopt.add_argument("path", type=Path)
    adopt.add_argument("--name", help="default: the file or folder name")
    adopt.add_argument(
        "--quant", choices=list(QUANTS), default="q4_0", help="GGUF made from an HF folder"
    )
    adopt.set_defaults(run=run_models_import)
    check = verbs.add_parser("verify", help="hashes, loading and a smoke generation")
    check.add_argument("name")
    check.set_defaults(run=run_models_verify)
    remove = verbs.add_parser("rm", help="delete a model from the cache")
    remove.add_argument("name")
    remove.set_defaults(run=run_models_rm)


def run_convert(args: argparse.Namespace) -> int:
    from phi_lsp.models.convert import convert_hf_to_gguf

    name = args.name or args.hf_dir.resolve().name
    out = args.out or models_dir() / name / f"{name}-{args.outtype}.gguf"
    try:
        path = convert_hf_to_gguf(args.hf_dir, out, args.outtype)
    except (ValueError, OSError) as exc:
        print(f"phi-lsp convert: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if args.out is None:
        print(f"set phiLsp.model to {name!r} to use it")
    return 0


def run_models_list(args: argparse.Namespace) -> int:
    from phi_lsp.models.store import list_models

    print(f"{'model':<26} {'cached':<7} {'size':>9}  {'quantizations':<22} {'license':<8} source")
    for m in list_models():
        size = f"{m.size / 1e9:.2f} GB" if m.size else "-"
        print(
            f"{m.name:<26} {'yes' if m.cached else 'no':<7} {size:>9}  "
            f"{', '.join(m.quants) or '-':<22} {m.license:<8} {m.source}"
        )
    print(f"cache: {models_dir()}")
    return 0


def run_models_pull(args: argparse.Namespace) -> int:
    from phi_lsp.models.store import StoreError, pull

    try:
        report = pull(args.name, args.quant)
    except (StoreError, ValueError, RuntimeError) as exc:
        return fail(exc)
    print(f"{report.name} @ {report.revision[:12]}: {report.gguf}")
    for stage, seconds in report.seconds.items():
        print(f"  {stage:<16} {seconds:7.1f} s")
    for file, size in report.sizes.items():
        print(f"  {file:<32} {size / 1e6:9.1f} MB")
    return 0


def run_models_import(args: argparse.Namespace) -> int:
    from phi_lsp.models.store import StoreError, import_model

    try:
        folder = import_model(args.path, args.name, args.quant)
    except StoreError as exc:
        return fail(exc)
    print(f"imported into {folder}; set phiLsp.model to {folder.name!r} to use it")
    return 0


def run_models_verify(args: argparse.Namespace) -> int:
    from phi_lsp.models.store import StoreError
    from phi_lsp.runtime.verify import verify

    try:
        report = verify(args.name)
    except StoreError as exc:
        return fail(exc)
    for rel in report.checked:
        print(f"ok   sha256 {rel}")
    for problem in report.problems:
        print(f"BAD  {problem}")
    for engine, result in report.smoke.items():
        print(f"{'ok ' if result.startswith('ok') else '-- '}  {engine}: {result}")
    failed = report.problems or any(r.startswith("FAILED") for r in report.smoke.values())
    return 1 if failed else 0


def run_models_rm(args: argparse.Namespace) -> int:
    from phi_lsp.models.store import StoreError, remove

    try:
        remove(args.name)
    except StoreError as exc:
        return fail(exc)
    print(f"removed {args.name}")
    return 0
