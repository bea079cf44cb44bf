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
from phi_lsp.models.manifests import QUANTS
from phi_lsp.models.source import models_dir, phi_lsp_home
from phi_lsp.runtime.engines.base import Engine

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

    doctor = commands.add_parser("doctor", help="what this machine can run, and fixes")
    doctor.add_argument("--model", default="phi-1")
    doctor.set_defaults(run=run_doctor)

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

    from phi_lsp.cli.finetune import add_parser as add_finetune_parser

    add_finetune_parser(commands)

    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


def run_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_file or phi_lsp_home() / "logs" / "phi-lsp.log", args.log_level)
    from phi_lsp.lsp.features import completion, generate, lifecycle
    from phi_lsp.lsp.server import PhiLanguageServer

    overrides = {k: v for k, v in {"model": args.model, "backend": args.backend}.items() if v}
    ls = PhiLanguageServer(overrides)
    lifecycle.register(ls)
    completion.register(ls)
    generate.register(ls)
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


def _fail(exc: Exception) -> int:
    print(f"phi-lsp: {exc}", file=sys.stderr)
    return 1


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
        return _fail(exc)
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
        return _fail(exc)
    print(f"imported into {folder}; set phiLsp.model to {folder.name!r} to use it")
    return 0


def run_models_verify(args: argparse.Namespace) -> int:
    from phi_lsp.models.store import StoreError
    from phi_lsp.runtime.verify import verify

    try:
        report = verify(args.name)
    except StoreError as exc:
        return _fail(exc)
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
        return _fail(exc)
    print(f"removed {args.name}")
    return 0


def run_doctor(args: argparse.Namespace) -> int:
    from phi_lsp.cli.doctor import render, run_checks

    checks = run_checks(args.model)
    print(render(checks))
    return 0 if all(c.ok for c in checks) else 1


def _engine(model: str | None, backend: str) -> Engine:
    from phi_lsp.runtime.engines.loader import load_engine
    from phi_lsp.settings import Settings

    settings = Settings(backend=backend, **({"model": model} if model else {}))
    return load_engine(settings)


def run_generate(args: argparse.Namespace) -> int:
    import threading

    from phi_lsp.bodygen.ranking import best_body, doctest_runner
    from phi_lsp.bodygen.stubs import find_stub, replace_body
    from phi_lsp.errors import ModelLoadError

    path_text, _, line_text = args.target.rpartition(":")
    path = Path(path_text)
    if not path.is_file() or not line_text.isdigit():
        return _fail(ValueError(f"expected FILE:LINE, got {args.target!r}"))
    source = path.read_text()
    stub = find_stub(source, int(line_text) - 1)
    if stub is None:
        return _fail(ValueError(f"{args.target}: no function whose body is only a docstring"))
    try:
        engine = _engine(args.model, args.backend)
    except ModelLoadError as exc:
        return _fail(exc)
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
        return _fail(ValueError("no candidate parsed and fit the signature"))
    print(f"# {stub.name}: {result.chosen.evidence}", file=sys.stderr)
    new_source = replace_body(source, stub, result.chosen.body)
    if args.write:
        from phi_lsp.fs import atomic_write_bytes

        atomic_write_bytes(path, new_source.encode())
        print(f"wrote {path}")
    else:
        print(stub.head + "\n" + result.chosen.body)
    return 0


def run_eval_humaneval(args: argparse.Namespace) -> int:
    import time

    from phi_lsp.errors import ModelLoadError
    from phi_lsp.evaluation.humaneval import run_humaneval, run_robustness

    out = args.out or phi_lsp_home() / "eval" / time.strftime("humaneval-%Y%m%d-%H%M%S")
    try:
        engine = _engine(args.model, args.backend)
    except ModelLoadError as exc:
        return _fail(exc)
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
        return _fail(exc)
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
