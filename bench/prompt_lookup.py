"""Prompt-lookup speculative decoding, on and off, side by side (the llama.cpp engine).

The server's own `LlamaCppEngine` and pipeline run the same requests twice, each in a fresh
process (so peak RSS is its own): `promptLookupTokens` 0 and N (`--draft`, default 8). Two
documents, both cut mid-line inside a function:

  plain       a stdlib module (`--source`, default difflib.py) at ~`--prefix-tokens` tokens
  repetitive  the same text with the function around the cursor written out once before it,
              so that the code to come already appears in the document (what drafting is for)

Per document: one cold request, then `--typed` one-character requests (warm KV cache), each
generating `--max-new-tokens` greedy tokens. Printed: cold time, decode tokens/s of the warm
requests, peak RSS, and on / off, and how many requests gave the same text. Drafts are only
kept where the model agrees, but verifying them is a batched evaluation whose rounding differs
from one token at a time, so on random weights (full of near-ties) a text can differ.

Random weights: the model never copies the document, so drafts are almost never accepted and
this measures the cost side of drafting; the gain needs a trained model. Nothing is asserted.

    .venv/bin/python bench/prompt_lookup.py            # phi-1 shape Q4_0, ~3 min on 2 cores
    .venv/bin/python bench/prompt_lookup.py --tiny     # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(REPO)]

import spine_latency as spine  # noqa: E402


def documents(model: Path, source: str, prefix_tokens: int, typed: int) -> dict[str, tuple]:
    """name -> (document, the characters typed after it)."""
    count = spine.count_tokens_with(model)
    text = spine.stdlib_source(source).read_text()
    plain, chars = spine.build_document(text, count, prefix_tokens, typed)
    def_start = plain.rfind("\n    def ")
    def_start = def_start if def_start >= 0 else plain.rfind("\ndef ")
    line_end = text.find("\n", len(plain))
    function = text[def_start + 1 : text.find("\n\n", line_end)] + "\n\n"
    repetitive = plain[: def_start + 1] + function + plain[def_start + 1 :]
    return {"plain": (plain, chars), "repetitive": (repetitive, chars)}


def measure(model: Path, draft: int, docs: dict[str, tuple], max_new: int, threads: int) -> dict:
    """One engine with promptLookupTokens=draft, the requests of every document."""
    from phi_lsp.completion.pipeline import suggest
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine
    from phi_lsp.settings import Settings

    engine = LlamaCppEngine(model, n_threads=threads, prompt_lookup_tokens=draft)
    settings = Settings(model=str(model), max_new_tokens=max_new, prompt_lookup_tokens=draft)
    out: dict[str, Any] = {}
    for name, (document, chars) in docs.items():
        rows = []
        for i in range(len(chars) + 1):
            text = document + chars[:i]
            t0 = time.perf_counter()
            result = suggest(engine, text, len(text), settings, threading.Event())
            gen = result.generation
            rows.append(
                {
                    "ms": (time.perf_counter() - t0) * 1000,
                    "evaluated": gen.evaluated_tokens if gen else 0,
                    "generated": gen.generated_tokens if gen else 0,
                    "text": gen.text if gen else "",
                }
            )
        out[name] = rows
    engine.close()
    out["peak_rss_mib"] = spine.proc_status(os.getpid())["VmHWM"] / 1024
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    warm = rows[1:]
    tokens = sum(r["generated"] for r in warm)
    seconds = sum(r["ms"] for r in warm) / 1000
    return {
        "cold_ms": rows[0]["ms"],
        "tok_s": tokens / seconds if seconds else float("nan"),
        "warm_ms_median": statistics.median(r["ms"] for r in warm) if warm else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--draft", type=int, default=8, help="promptLookupTokens when on")
    parser.add_argument("--source", default="difflib.py")
    parser.add_argument("--prefix-tokens", type=int, default=600)
    parser.add_argument("--typed", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one setting
    args = parser.parse_args(argv)
    model = spine.resolve_model(args)
    docs = documents(model, args.source, args.prefix_tokens, args.typed)
    if args.one is not None:
        print(json.dumps(measure(model, args.one, docs, args.max_new_tokens, args.threads)))
        return 0
    results = {}
    for draft in (0, args.draft):
        command = [sys.executable, __file__, "--one", str(draft), "--model", str(model)]
        command += ["--source", args.source, "--prefix-tokens", str(args.prefix_tokens)]
        command += ["--typed", str(args.typed), "--max-new-tokens", str(args.max_new_tokens)]
        command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[draft] = json.loads(done.stdout.strip().splitlines()[-1])
        rss = results[draft]["peak_rss_mib"]
        print(f"promptLookupTokens {draft}: done, peak RSS {rss:.0f} MiB", flush=True)
    off, on = results[0], results[args.draft]
    print(f"\nmodel {model}; {args.max_new_tokens} new tokens per request, {args.typed} warm")
    print(f"{'document':<11} {'':<9} {'off':>10} {f'on ({args.draft})':>10} {'on/off':>8}")
    for name in docs:
        a, b = summary(off[name]), summary(on[name])
        same = sum(x["text"] == y["text"] for x, y in zip(off[name], on[name], strict=True))
        for key, label, fmt in (
            ("cold_ms", "cold ms", "{:.0f}"),
            ("warm_ms_median", "warm ms", "{:.0f}"),
            ("tok_s", "tok/s", "{:.2f}"),
        ):
            print(
                f"{name:<11} {label:<9} {fmt.format(a[key]):>10} {fmt.format(b[key]):>10} "
                f"{b[key] / a[key]:>7.2f}x"
            )
        print(f"{name:<11} requests with the same text on and off: {same}/{len(off[name])}")
    print(f"peak RSS MiB: off {off['peak_rss_mib']:.0f}, on {on['peak_rss_mib']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
