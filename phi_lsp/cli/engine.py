"""`phi-lsp engine start|stop|status`: one shared engine for many editor windows."""

from __future__ import annotations

import argparse
from typing import Any

from phi_lsp.cli.common import fail


def add_parser(commands: Any) -> None:
    engine = commands.add_parser("engine", help="one shared engine for many editor windows")
    engine_verbs = engine.add_subparsers(dest="verb", required=True)
    engine_start = engine_verbs.add_parser("start", help="serve a model on loopback")
    engine_start.add_argument("--model", default="phi-1")
    engine_start.add_argument("--host", default="127.0.0.1")
    engine_start.add_argument("--port", type=int)
    engine_start.add_argument("--ctx", type=int, default=2048)
    engine_start.add_argument("--threads", type=int)
    engine_start.add_argument(
        "--allow-remote", action="store_true", help="bind a non-loopback address (needs an API key)"
    )
    engine_start.add_argument("--api-key-env", default="PHI_LSP_API_KEY")
    engine_start.set_defaults(run=run_engine_start)
    engine_verbs.add_parser("stop").set_defaults(run=run_engine_stop)
    engine_verbs.add_parser("status").set_defaults(run=run_engine_status)


def run_engine_start(args: argparse.Namespace) -> int:
    from phi_lsp.errors import ModelLoadError
    from phi_lsp.models.launcher import EngineError, start

    try:
        engine = start(
            args.model,
            host=args.host,
            port=args.port,
            n_ctx=args.ctx,
            threads=args.threads,
            allow_remote=args.allow_remote,
            api_key_env=args.api_key_env,
        )
    except (EngineError, ModelLoadError) as exc:
        return fail(exc)
    print(f"engine for {engine.model} at {engine.url} (pid {engine.pid}, log {engine.log})")
    print("language servers with phiLsp.backend = auto and this model now use it")
    return 0


def run_engine_stop(args: argparse.Namespace) -> int:
    from phi_lsp.models.launcher import stop

    engine = stop()
    print(f"stopped pid {engine.pid}" if engine else "no engine was running")
    return 0


def run_engine_status(args: argparse.Namespace) -> int:
    from phi_lsp.models.launcher import read_state

    engine = read_state()
    if engine is None:
        print("no engine running")
        return 1
    print(f"{engine.model} at {engine.url} (pid {engine.pid}, {engine.gguf})")
    return 0
