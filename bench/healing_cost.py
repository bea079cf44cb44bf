"""What token healing costs per step, at phi-1's shape on llama.cpp, side by side in one run.

For cursors inside identifiers in a real file (the prefix cache warm, as while typing), the
same request runs with `tokenHealing` off and "word", alternating, and the script prints the
time per generated token of each and their ratio. It also times the healing arithmetic alone
(finding the tokens allowed next and masking the 51,200 logits) against one decode step.

    .venv/bin/python bench/healing_cost.py            # phi-1 shape Q4_0 (bench/phi1_shape.py)
    .venv/bin/python bench/healing_cost.py --model X.gguf --spots 4
"""

from __future__ import annotations

import argparse
import inspect
import re
import statistics
import sys
import textwrap
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # run from anywhere: phi_lsp is the repo's
PHI1_Q4 = BENCH_DIR / ".models" / "phi1-shape" / "phi1-shape-q4_0.gguf"


def spots(source: str, count: int, after: int) -> list[str]:
    """Prompts ending inside an identifier, the first `after` characters in."""
    found = []
    for match in re.finditer(r"\b[a-z_]{6,}\b", source[after:]):
        end = after + match.start() + 3  # three characters into the word
        found.append(source[:end])
        if len(found) == count:
            break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PHI1_Q4)
    parser.add_argument("--spots", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.model.exists():
        raise SystemExit(f"{args.model} missing: run bench/phi1_shape.py first")

    import numpy as np

    from phi_lsp.runtime.engines.base import GenerationRequest
    from phi_lsp.runtime.engines.healing import Constraint
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(args.model, n_threads=args.threads)
    source = Path(inspect.getfile(textwrap)).read_text()
    per_token: dict[str, list[float]] = {"off": [], "word": []}
    for prompt in spots(source, args.spots, after=4000):
        engine.warm(prompt, threading.Event())  # the prefix cache is warm while typing
        for rule in ("off", "word", "off", "word"):
            request = GenerationRequest(prompt, max_new_tokens=args.tokens, heal=rule)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            generation = engine.generate(request, threading.Event())
            elapsed = (time.perf_counter() - t0) * 1000
            per_token[rule].append(elapsed / max(1, generation.generated_tokens))
            print(
                f"{rule:4} {prompt[-24:]!r:28} healed={generation.healed!r:10} "
                f"evaluated={generation.evaluated_tokens} generated={generation.generated_tokens}"
                f" {elapsed:7.0f} ms"
            )
    off, word = statistics.median(per_token["off"]), statistics.median(per_token["word"])
    print(f"\nms per generated token (median): off {off:.1f}, word {word:.1f}, "
          f"word/off {word / off:.2f}")  # fmt: skip

    logits = np.random.default_rng(0).standard_normal(len(engine.table)).astype(np.float32)
    rests = [piece for piece in engine.table.pieces if len(piece) >= 2][:2000]
    t0 = time.perf_counter()
    for rest in rests:
        Constraint(engine.table, rest).mask(logits)
    step_us = (time.perf_counter() - t0) / len(rests) * 1e6
    print(f"healing arithmetic per constrained step: {step_us:.0f} µs "
          f"({step_us / 1000 / off:.2%} of one decode step)")  # fmt: skip
    engine.close()


if __name__ == "__main__":
    main()
