"""`phi-lsp generate FILE:LINE`: a function body from its docstring, best of N."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from phi_lsp.cli.common import fail, load_for_cli


def add_parser(commands: Any) -> None:
    generate = commands.add_parser("generate", help="write a function body from its docstring")
    generate.add_argument("target", help="FILE:LINE (1-based line inside the function)")
    generate.add_argument("--model", default=None, help="default: the phiLsp.model default")
    generate.add_argument("--backend", choices=["auto", "llamacpp", "transformers"], default="auto")
    generate.add_argument("--candidates", type=int, default=3)
    generate.add_argument("--write", action="store_true", help="apply it to the file")
    generate.add_argument(
        "--run-doctests",
        choices=["when-confined", "always", "never"],
        default="when-confined",
        help="rank by the doctests, run in the sandbox (like the generateRunDoctests setting)",
    )
    generate.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    import threading

    from phi_lsp.bodygen.ranking import best_body, doctest_runner
    from phi_lsp.bodygen.stubs import find_stub, replace_body
    from phi_lsp.errors import ModelLoadError

    path_text, _, line_text = args.target.rpartition(":")
    path = Path(path_text)
    if not path.is_file() or not line_text.isdigit():
        return fail(ValueError(f"expected FILE:LINE, got {args.target!r}"))
    source = path.read_text()
    stub = find_stub(source, int(line_text) - 1)
    if stub is None:
        return fail(ValueError(f"{args.target}: no function whose body is only a docstring"))
    try:
        engine = load_for_cli(args.model, args.backend)
    except ModelLoadError as exc:
        return fail(exc)
    runner, not_run = doctest_runner(args.run_doctests)
    result = best_body(
        engine,
        stub,
        n=args.candidates,
        stop=threading.Event(),
        run_doctests=runner,
        not_run=not_run,
    )
    engine.close()
    if result.note:
        print(f"# {result.note}", file=sys.stderr)
    if result.chosen is None:
        return fail(ValueError("no candidate parsed and fit the signature"))
    print(f"# {stub.name}: {result.chosen.evidence}", file=sys.stderr)
    new_source = replace_body(source, stub, result.chosen.body)
    if args.write:
        from phi_lsp.fs import atomic_write_bytes

        atomic_write_bytes(path, new_source.encode())
        print(f"wrote {path}")
    else:
        print(stub.head + "\n" + result.chosen.body)
    return 0
