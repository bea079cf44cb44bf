"""`phi-lsp serve`: the language server on stdio (or TCP), logging to stderr and a file."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

from phi_lsp import __version__
from phi_lsp.models.source import phi_lsp_home

log = logging.getLogger("phi_lsp")


def add_parser(commands: Any) -> None:
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


def run_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_file or phi_lsp_home() / "logs" / "phi-lsp.log", args.log_level)
    from phi_lsp.lsp.features import completion, generate, lifecycle, usage
    from phi_lsp.lsp.server import PhiLanguageServer

    overrides = {k: v for k, v in {"model": args.model, "backend": args.backend}.items() if v}
    ls = PhiLanguageServer(overrides)
    lifecycle.register(ls)
    completion.register(ls)
    generate.register(ls)
    usage.register(ls)
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
