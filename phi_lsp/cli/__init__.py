"""`phi-lsp` command line: one module per command (serve, models, engine, generate, eval,
finetune, stats, doctor); each adds its parser here. Building it imports no model library."""

from __future__ import annotations

import argparse

from phi_lsp import __version__
from phi_lsp.cli import doctor, engine, evaluate, finetune, generate, models, serve, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="phi-lsp", description="phi-1 on your machine: completions and functions for Python"
    )
    parser.add_argument("--version", action="version", version=f"phi-lsp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (serve, models, doctor, engine, generate, evaluate, finetune, stats):
        command.add_parser(commands)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)
