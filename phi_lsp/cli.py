"""`phi-lsp` command line: serve, convert."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import BinaryIO

from phi_lsp import __version__
from phi_lsp.model_source import models_dir, phi_lsp_home

log = logging.getLogger("phi_lsp")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phi-lsp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"phi-lsp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the language server (stdio by default)")
    serve.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    serve.add_argument("--model", help="overrides the phiLsp.model setting")
    serve.add_argument(
        "--backend",
        choices=["auto", "llamacpp", "transformers"],
        help="overrides the phiLsp.backend setting",
    )
    serve.add_argument("--log-file", type=Path, help="default: PHI_LSP_HOME/logs/phi-lsp.log")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(run=run_serve)

    convert = commands.add_parser("convert", help="convert an HF phi folder to GGUF")
    convert.add_argument("hf_dir", type=Path, help="a Hugging Face folder (config + safetensors)")
    convert.add_argument("--out", type=Path, help="output .gguf (default: the model cache)")
    convert.add_argument("--name", help="model name in the cache (default: the folder's name)")
    convert.add_argument("--outtype", choices=["f16", "f32"], default="f16")
    convert.set_defaults(run=run_convert)

    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


def run_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_file or phi_lsp_home() / "logs" / "phi-lsp.log", args.log_level)
    from phi_lsp.features import completion, lifecycle
    from phi_lsp.server import PhiLanguageServer

    overrides = {k: v for k, v in {"model": args.model, "backend": args.backend}.items() if v}
    ls = PhiLanguageServer(overrides)
    lifecycle.register(ls)
    completion.register(ls)
    log.info("phi-lsp %s starting (pid %d)", __version__, os.getpid())
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        ls.start_tcp(host or "127.0.0.1", int(port))
    else:
        ls.start_io(sys.stdin.buffer, protect_stdout())
    return 0


def protect_stdout() -> BinaryIO:
    """Keep stdout for JSON-RPC alone: return a private copy and point fd 1 at stderr.

    Native libraries (llama.cpp, CUDA) may print to fd 1; one stray line there would corrupt
    the protocol stream.
    """
    rpc = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return rpc


def setup_logging(log_file: Path, level: str) -> None:
    """Logs go to stderr and to a rotating file, never to stdout."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=2)
        )
    except OSError as exc:
        print(f"phi-lsp: cannot write log file {log_file}: {exc}", file=sys.stderr)
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    # pygls logs every message at INFO; our own request lines carry what matters.
    logging.getLogger("pygls").setLevel(max(root.level, logging.WARNING))


def run_convert(args: argparse.Namespace) -> int:
    from phi_lsp.convert import convert_hf_to_gguf

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
