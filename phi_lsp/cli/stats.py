"""`phi-lsp stats`: what happened to the suggestions on this machine (the local usage journal)."""

from __future__ import annotations

import argparse
from typing import Any

from phi_lsp.models.source import phi_lsp_home
from phi_lsp.usage.journal import Journal
from phi_lsp.usage.stats import render


def add_parser(commands: Any) -> None:
    stats = commands.add_parser(
        "stats", help="acceptance, kept share and latency of your suggestions (local only)"
    )
    stats.add_argument("--clear", action="store_true", help="delete the usage journal")
    stats.set_defaults(run=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    journal = Journal(phi_lsp_home() / "usage")
    if args.clear:
        journal.clear()
        print(f"deleted the usage journal in {journal.folder}")
        return 0
    events = list(journal.read())
    if not events:
        print(f"no usage recorded yet ({journal.path}); the `usage` setting turns it on or off")
        return 0
    print(render(events))
    print(f"journal: {journal.folder} (never sent anywhere; `phi-lsp stats --clear` deletes it)")
    return 0
