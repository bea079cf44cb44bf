"""Suggestion quality at every cursor position: both engines, with and without token healing.

Builds the tests' trained tiny model (it has memorised a few functions, so the right answer is
known), starts a real `phi-lsp serve` per engine and healing rule, cuts every memorised line at
every character and asks for ghost text there (see testkit/cursor_quality.py). Prints the share of
cut points where the line prefix + suggestion gives back the memorised line, overall, per mode
(line / block) and per situation (mid-identifier, after a space, ...), with LF and CRLF files.

    .venv/bin/python bench/cursor_quality.py              # ~2 minutes on 2 cores
    .venv/bin/python bench/cursor_quality.py --misses     # also list the wrong cut points
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # run from anywhere: phi_lsp is the repo's

RULES = ("off", "token", "word")
ENGINES = ("llamacpp", "transformers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--misses", action="store_true", help="list the wrong cut points")
    parser.add_argument("--work-dir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cursor-quality-"))
    asyncio.run(run(work, args.engines, args.rules, args.misses))


async def run(work: Path, engines: list[str], rules: list[str], misses: bool) -> None:
    from testkit.cursor_quality import Score, cut_points, run_server
    from testkit.tinymodel import build_tiny_model
    from testkit.trained_model import LESSONS, train_tiny_model

    model = train_tiny_model(build_tiny_model(work / "tiny"), work / "trained")
    paths = {"llamacpp": str(model.gguf_f32), "transformers": str(model.hf_dir)}
    sets = {"LF": cut_points(LESSONS), "CRLF": cut_points(LESSONS, "\r\n")}
    print(f"{len(sets['LF'])} cut points in {len(LESSONS)} memorised functions, LF and CRLF\n")
    scores: dict[tuple[str, str, str], Score] = {}
    for engine in engines:
        for rule in rules:
            for name, points in sets.items():
                session = work / f"{engine}-{rule}-{name}"
                session.mkdir(parents=True, exist_ok=True)
                settings = {"model": paths[engine], "backend": engine, "tokenHealing": rule}
                scores[engine, rule, name] = await run_server(session, settings, points)
                print(f"{engine:12} tokenHealing={rule:5} {name:4}: "
                      f"{scores[engine, rule, name].share():6.1%}")  # fmt: skip
    print_table(scores, engines, rules)
    if misses:
        for (engine, rule, name), score in scores.items():
            for point, got in score.misses:
                line = point.expected[0]
                print(f"{engine} {rule} {name}: {line[: point.column]!r} + {got!r} != {line!r}")


def print_table(scores: dict, engines: list[str], rules: list[str]) -> None:  # type: ignore[type-arg]
    keys = sorted({k for s in scores.values() for k in s.total}, key=lambda k: (k != "all", k))
    columns = [(e, r) for e in engines for r in rules]
    print("\nShare of cut points giving back the memorised line (LF + CRLF together):\n")
    print("| situation | cut points | " + " | ".join(f"{e} {r}" for e, r in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for key in keys:
        cells = []
        for engine, rule in columns:
            pair = [scores[engine, rule, n] for n in ("LF", "CRLF")]
            right = sum(s.right[key] for s in pair)
            total = sum(s.total[key] for s in pair)
            cells.append(f"{right / total:.0%}" if total else "-")
        total = sum(scores[columns[0][0], columns[0][1], n].total[key] for n in ("LF", "CRLF"))
        print(f"| {key} | {total} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
