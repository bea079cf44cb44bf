"""bench/gpu.py is issue 17's one device call: it must not have rotted when a GPU is finally lent.

CI has no GPU, so the smoke run uses the tiny model on CPU with the decode step traced by dynamo
(no code generation): every row of the table for both phi-lsp columns, and the trainer's rate.
No timing is asserted, only that each figure was measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from phi_lsp.runtime.engines.static_decoding import MAX_TAIL_STEPS

REPO = Path(__file__).resolve().parents[1]
ROWS = [
    "load incl. compile, s",
    "first request (cold → 64), ms",
    "prefill (→ 1 token), ms",
    "decode, ms/token",
    "cold → 64 new, ms",
    "+1 character → 16 new, ms",
]
PROBES = [
    "1-token eager pass (load probe), ms",
    "1-token compiled step (load probe), ms",
    "prompt tail through the step, tokens",
]


def bench(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "gpu.json"
    smoke = ["--tiny", "--device", "cpu", "--repeats", "1", "--tokens", "300"]
    command = [sys.executable, str(REPO / "bench" / "gpu.py"), *smoke, "--json", str(out)]
    command += ["--models", str(tmp_path / "models"), *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(out.read_text())


def test_the_bench_measures_every_row_for_both_columns(tmp_path: Path) -> None:
    done, results = bench(tmp_path, "--compiled", "trace", "--train-steps", "4")
    engines = results["engines"]
    compiled, eager = engines["phi-lsp compiled"], engines["phi-lsp generate()"]
    for row in ROWS:
        assert compiled[row] > 0 and eager[row] > 0, row
    eager_pass, step, tail = (compiled[row] for row in PROBES)
    assert eager_pass > 0 and step > 0 and 0 <= tail <= MAX_TAIL_STEPS
    assert all(eager[row] is None for row in PROBES)
    assert results["finetune"]["LoRA"] > 0
    assert "| phi-lsp compiled | phi-lsp generate() |" in done.stdout
    assert "decode, ms/token: generate() / compiled = " in done.stdout


def test_a_failing_stage_loses_none_of_the_others(tmp_path: Path) -> None:
    done, results = bench(tmp_path, "--compiled", "sideways", "--skip", "finetune")
    assert "phi-lsp compiled: failed" in done.stderr
    assert list(results["engines"]) == ["phi-lsp generate()"]
    assert all(results["engines"]["phi-lsp generate()"][row] > 0 for row in ROWS)
