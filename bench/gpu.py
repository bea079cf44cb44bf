"""phi-lsp on a GPU at phi-1's exact shape, side by side in one run (issue 17's table).

Builds (or reuses) the random-weight phi-1-shape HF folder (`phi1_shape.py`, HF stage only),
then measures through `TransformersEngine`:

- phi-lsp with `compiledDecoding` on (static KV cache, decode step as a CUDA graph);
- phi-lsp with it off (transformers' generate() on a dynamic cache, what ran before);
- transformers' own recipe: generate() with `cache_implementation="static"`, which compiles
  its decode step (the reference the issue quotes);
- NF4 (bitsandbytes) through phi-lsp, compiled and not, when bitsandbytes is installed;
- `phi-lsp finetune`'s trainer: LoRA bf16 and QLoRA tokens/s on textbook-sized exercises
  (`--train-batch` 32 per step, packed on CUDA, micro-batches sized from free memory).

Rows: load (compiling included), the first request after load, prefill of the whole prompt
(one forward, 1 new token), decode ms/token, cold prompt → 64 new, +1 character → 16 new
(the prefix cache at work). Medians of `--repeats`. Random weights: the text is noise, the
timings are real.

    python bench/gpu.py                       # H100 / H200: under 6 minutes
    python bench/gpu.py --tiny --device cpu --compiled static --repeats 1   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

import phi1_shape  # noqa: E402
import torch  # noqa: E402

from phi_lsp.runtime.engines.base import GenerationRequest  # noqa: E402
from phi_lsp.runtime.engines.transformers_engine import TransformersEngine  # noqa: E402

Row = dict[str, float | None]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000, out


def document(tokenizer: Any, tokens: int) -> str:
    """The first `tokens` tokens of textwrap.py (held out of the tokenizer's training)."""
    import textwrap

    ids = tokenizer.encode(Path(textwrap.__file__).read_text(), add_special_tokens=False)
    return str(tokenizer.decode(ids[:tokens]))


def engine_rows(engine: TransformersEngine, prompt: str, repeats: int, load_ms: float) -> Row:
    def run(text: str, new: int, fresh: bool = True) -> Any:
        request = GenerationRequest(text, max_new_tokens=new, fresh=fresh, heal="off")
        return engine.generate(request, threading.Event())

    first, _ = timed(lambda: run(prompt, 64))
    prefill = statistics.median(timed(lambda: run(prompt, 1))[0] for _ in range(repeats))
    cold, per_token = [], []
    for _ in range(repeats):
        ms, out = timed(lambda: run(prompt, 64))
        cold.append(ms)
        if out.generated_tokens > 1:
            per_token.append((ms - prefill) / (out.generated_tokens - 1))
    typed = []
    for char in "abcdefgh"[: repeats + 1]:
        run(prompt, 16, fresh=False)  # the cache holds the prompt, as after the last keystroke
        ms, _ = timed(partial(run, prompt + char, 16, fresh=False))
        typed.append(ms)
    return {
        "load incl. compile, s": load_ms / 1000,
        "first request (cold → 64), ms": first,
        "prefill (→ 1 token), ms": prefill,
        "decode, ms/token": statistics.median(per_token) if per_token else None,
        "cold → 64 new, ms": statistics.median(cold),
        "+1 character → 16 new, ms": statistics.median(typed[1:]),
    }


def phi_lsp_rows(hf_dir: Path, args: argparse.Namespace, prompt: str, **kw: Any) -> Row:
    load_ms, engine = timed(
        lambda: TransformersEngine(hf_dir, device=args.device, n_ctx=2048, **kw)
    )
    print(f"  {engine.decoding}, attention {engine.attention}", file=sys.stderr)
    try:
        rows = engine_rows(engine, prompt, args.repeats, load_ms)
        decoder = engine.decoder
        eager_ms, step_ms = decoder.pass_ms if decoder and decoder.pass_ms else (None, None)
        rows["1-token eager pass (load probe), ms"] = eager_ms
        rows["1-token compiled step (load probe), ms"] = step_ms
        rows["prompt tail through the step, tokens"] = decoder.tail_steps if decoder else None
        return rows
    finally:
        engine.close()


def reference_rows(hf_dir: Path, args: argparse.Namespace, prompt: str) -> Row:
    """transformers' own static cache + compiled decode step, through its generate()."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    load_ms, model = timed(
        lambda: AutoModelForCausalLM.from_pretrained(
            hf_dir, dtype=torch.bfloat16, attn_implementation="sdpa"
        ).to(args.device)
    )
    model.generation_config.cache_implementation = "static"
    ids = torch.tensor([tokenizer.encode(prompt)], device=args.device)

    def run(new: int) -> Any:
        with torch.inference_mode():
            return model.generate(
                ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0
            )

    first, _ = timed(lambda: run(64))
    run(64)  # a second warm-up: the first calls compile and record
    prefill = statistics.median(timed(lambda: run(1))[0] for _ in range(args.repeats))
    cold = statistics.median(timed(lambda: run(64))[0] for _ in range(args.repeats))
    return {
        "load incl. compile, s": load_ms / 1000,
        "first request (cold → 64), ms": first,
        "prefill (→ 1 token), ms": prefill,
        "decode, ms/token": (cold - prefill) / 63,
        "cold → 64 new, ms": cold,
        "+1 character → 16 new, ms": None,
    }


def finetune_tokens_per_s(hf_dir: Path, args: argparse.Namespace, quantization: str) -> float:
    """The trainer's median tokens/s over `--train-steps` steps on textbook-sized exercises."""
    import textwrap

    from phi_lsp.finetune.config import TrainConfig
    from phi_lsp.finetune.dataset import write_jsonl
    from phi_lsp.finetune.exercise import Exercise
    from phi_lsp.finetune.train import train

    source = Path(textwrap.__file__).read_text()
    exercises = []
    for i in range(64):
        start = (i * 997) % (len(source) - 4000)
        prompt, body = source[start : start + 1200], source[start + 1200 : start + 2400]
        exercises.append(
            Exercise(f"e{i}", "bench", "textwrap.py", f"bench/{i}", "mined", "f", 1, prompt, body)
        )
    run_dir = Path(tempfile.mkdtemp(prefix="phi-lsp-gpu-ft-"))
    data = run_dir / "dataset"
    data.mkdir()
    hashes = {
        "train.jsonl": write_jsonl(data / "train.jsonl", exercises[:56]),
        "val.jsonl": write_jsonl(data / "val.jsonl", exercises[56:]),
    }
    (data / "report.json").write_text(json.dumps({"hashes": hashes}))
    cfg = TrainConfig(
        model=str(hf_dir),
        max_steps=args.train_steps,
        batch_size=args.train_batch,
        warmup_steps=2,
        eval_every=10_000,
        checkpoint_every=10_000,
        eval_max_examples=4,
        device=args.device,
        quantization=quantization,
        loss_filter=False,
        progress=False,
    )
    result = train(run_dir, cfg)
    return result.train_tokens_per_s


def print_table(columns: dict[str, Row]) -> None:
    names = list(columns)
    rows = list(dict.fromkeys(row for column in columns.values() for row in column))
    width = max(len(r) for r in rows)
    print("| " + " | ".join(["".ljust(width), *names]) + " |")
    print("|" + "---|" * (len(names) + 1))
    for row in rows:
        cells = []
        for name in names:
            value = columns[name].get(row)
            cells.append("—" if value is None else f"{value:.2f}")
        print("| " + " | ".join([row.ljust(width), *cells]) + " |")


def report(args: argparse.Namespace, columns: dict[str, Row], train: dict[str, float]) -> None:
    """The table so far, the ratios, and the JSON: printed after every stage, so a run cut off
    by the device's time limit still leaves what it measured."""
    print(
        f"\n{'tiny' if args.tiny else 'phi-1'} shape, prompt {args.tokens} tokens, "
        f"medians of {args.repeats}:"
    )
    print_table(columns)
    compiled, eager = columns.get("phi-lsp compiled", {}), columns.get("phi-lsp generate()", {})
    for row in ("decode, ms/token", "cold → 64 new, ms", "+1 character → 16 new, ms"):
        a, b = compiled.get(row), eager.get(row)
        if a and b:
            print(f"{row}: generate() / compiled = {b / a:.1f}×")
    for label, rate in train.items():
        print(f"finetune {label}: {rate:,.0f} tokens/s ({args.train_batch} exercises per step)")
    sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps({"engines": columns, "finetune": train}, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="the 2-layer model (smoke run)")
    parser.add_argument("--tokens", type=int, default=1500, help="prompt size in tokens")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument(
        "--train-batch",
        type=int,
        default=32,
        help="exercises per step (packed on CUDA; the micro-batch is sized from free memory)",
    )
    parser.add_argument(
        "--compiled", default="on", help="compiledDecoding for the compiled column (or static)"
    )
    parser.add_argument("--skip", nargs="*", default=[], help="reference, nf4, finetune")
    parser.add_argument(
        "--budget", type=float, default=330, help="seconds; no stage starts after them"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--models", type=Path, help="where the random model is built (default bench/.models)"
    )
    args = parser.parse_args(argv)
    t_start = time.perf_counter()

    shape = phi1_shape.TINY if args.tiny else phi1_shape.PHI1
    root = args.models / shape.name if args.models else None
    built = phi1_shape.build(shape, root, gguf=False)
    from transformers import AutoTokenizer

    prompt = document(AutoTokenizer.from_pretrained(built.hf_dir), args.tokens)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", file=sys.stderr)
    cuda = args.device == "cuda"
    nf4 = "nf4" not in args.skip and cuda and importlib.util.find_spec("bitsandbytes") is not None
    hf = built.hf_dir
    columns: dict[str, Row] = {}
    train: dict[str, float] = {}

    def engine(**kw: Any) -> Callable[[], Row]:
        return lambda: phi_lsp_rows(hf, args, prompt, **kw)

    def trainer(quantization: str) -> Callable[[], float]:
        return lambda: finetune_tokens_per_s(hf, args, quantization)

    tune, ref = "finetune" not in args.skip, cuda and "reference" not in args.skip
    compiled = args.compiled
    # Most wanted first: one device call may be cut short.
    stages: list[tuple[str, bool, dict[str, Any], Callable[[], Any]]] = [
        ("phi-lsp compiled", True, columns, engine(compiled_decoding=compiled)),
        ("phi-lsp generate()", True, columns, engine(compiled_decoding="off")),
        ("LoRA", tune, train, trainer("none")),
        ("QLoRA (NF4)", tune and nf4, train, trainer("nf4")),
        ("NF4 compiled", nf4, columns, engine(compiled_decoding=compiled, quantization="nf4")),
        ("transformers static+compile", ref, columns, lambda: reference_rows(hf, args, prompt)),
        ("NF4 generate()", nf4, columns, engine(compiled_decoding="off", quantization="nf4")),
    ]
    for name, wanted, into, measure in stages:
        if not wanted:
            continue
        if time.perf_counter() - t_start > args.budget:
            print(f"{name}: skipped, past the {args.budget:.0f} s budget", file=sys.stderr)
            continue
        print(f"{name} ...", file=sys.stderr)
        try:
            into[name] = measure()
        except Exception as exc:  # one stage failing (e.g. NF4 kernels) must not lose the rest
            print(f"{name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        report(args, columns, train)
    print(f"total: {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
