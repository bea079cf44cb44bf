"""`phi-lsp finetune --from-usage`, the promotion gate, --promote / --rollback, and a real
`phi-lsp serve` following promotions (`adapter: "promoted"`), on the tiny model.

The journal is written by replaying shown → accepted → retained events through the server's
own `Journal`. Each accepted suggestion completes a function whose comment names one of four
operations; the completion depends on that comment, so an adapter can only lower the held-out loss
below another's by learning the mapping. The gate accepts the adapter trained on the real
journal (against the base model) and refuses one trained on the same prompts with their
completions shuffled (against the promoted real one), on the same held-out files. Base: the
tiny model that memorised a few functions (LoRA on the random one barely moves its loss); 120
steps at lr 5e-3: the shuffled adapter's held-out loss is 0.35 / 0.43 / 0.40 nats above the real
one's for seeds 0 / 1 / 2 (2.82 vs 3.17 at seed 0; base model 7.70).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from phi_lsp.cli import finetune as cli
from phi_lsp.evaluation.contamination import NGramIndex
from phi_lsp.finetune.dataset import DataConfig, build_dataset, split_by_file
from phi_lsp.finetune.usage_exercises import read_usage
from phi_lsp.models.promoted import promoted_adapter, read_promoted
from phi_lsp.usage.journal import Journal
from testkit.lsp_session import lsp_session, wait_for_loads
from testkit.tinymodel import TinyModel

OPS = {
    "square": " x * x\n",
    "double": " x + x\n",
    "negate": " 0 - x\n",
    "halve": " x // 2\n",
}
N_FILES, PER_FILE = 12, 6
HUMANEVAL_13 = (
    "def greatest_common_divisor(a: int, b: int) -> int:\n"
    '    """ Return a greatest common divisor of two integers a and b\n'
    "    >>> greatest_common_divisor(3, 5)\n    1\n"
    "    >>> greatest_common_divisor(25, 15)\n    5\n"
    '    """\n'
)
HUMANEVAL_13_BODY = "    while b:\n        a, b = b, a % b\n    return a\n"


def examples() -> list[tuple[str, str, str]]:
    """(file, prompt, completion): each file a module of small functions, each function's body
    chosen by the operation its comment names."""
    rng = random.Random(0)
    out = []
    for f in range(N_FILES):
        prompt = f'"""Module {f}."""\n\n'
        for j in range(PER_FILE):
            op = rng.choice(sorted(OPS))
            prompt += f"\n\ndef f{f}_{j}(x):\n    # {op}\n    return"
            out.append((f"pkg/mod{f}.py", prompt, OPS[op]))
            prompt += OPS[op]
    return out


def replay(home: Path, rows: list[tuple[str, str, str, float]]) -> None:
    """Write the events the server writes for each (file, prompt, kept, share)."""
    journal = Journal(home / "usage")
    for n, (file, prompt, kept, share) in enumerate(rows):
        base = {"id": f"s{n:04d}", "file": file, "model": "tiny"}
        journal.append(
            {
                "t": n,
                "event": "shown",
                **base,
                "mode": "inline",
                "latency_ms": 5.0,
                "prompt_chars": len(prompt),
                "text": kept,
            }
        )
        journal.append(
            {
                "t": n,
                "event": "accepted",
                **base,
                "chars": len(kept),
                "partial": False,
                "prompt": prompt,
            }
        )
        journal.append(
            {
                "t": n,
                "event": "retained",
                **base,
                "reason": "saved",
                "chars": len(kept),
                "kept_chars": round(share * len(kept)),
                "share": share,
                "prompt": prompt,
                "kept": kept,
            }
        )


def planted() -> list[tuple[str, str, str, float]]:
    """One case per rule the usage exercises go through (counted in the dataset report)."""
    return [
        ("pkg/low.py", "def low(x):\n    # square\n", OPS["square"], 0.2),  # below share
        ("pkg/empty.py", "def empty(x):\n", "  \n", 1.0),  # trivial_body
        ("tests/test_mod.py", "def test_it():\n", "    assert f(1)\n", 1.0),  # test file
        ("pkg/gcd.py", HUMANEVAL_13, HUMANEVAL_13_BODY, 1.0),  # HumanEval/13
    ]


DATA = DataConfig(val_fraction=0.25)


def test_usage_exercises_go_through_the_same_rules(tmp_path: Path) -> None:
    rows = [(f, p, c, 1.0) for f, p, c in examples()]
    replay(tmp_path, rows + [rows[0]] + planted())  # rows[0] twice: an exact duplicate
    usage = read_usage(tmp_path / "usage", 0.5)
    assert usage.retained_events == len(rows) + 5 and usage.below_share == 1
    dataset = build_dataset([], [], DATA, NGramIndex.from_humaneval(), usage=usage)
    u = dataset.report["usage"]
    assert u["exercises"] == len(rows) + 4
    assert u["rejected"]["trivial_body"] == 1 and u["rejected"]["test_function"] == 1
    assert u["exact_duplicates"] == 1 and u["humaneval_overlap"] == 1
    assert u["train"] + u["val"] == len(rows) == dataset.report["counts"]["kept"]
    by_unit = {ex.unit: ex in dataset.val for ex in dataset.train + dataset.val}
    assert all(by_unit[ex.unit] for ex in dataset.val)  # a file's examples stay together
    assert all(ex.kind == "usage" and ex.source == "usage" for ex in dataset.train)


@dataclass
class Runs:
    home: Path
    real: Path
    shuffled: Path


def finetune(home: Path, out: Path, model: Path, *extra: str) -> int:
    threads = torch.get_num_threads()
    mp = pytest.MonkeyPatch()
    mp.setenv("PHI_LSP_HOME", str(home))
    try:
        return cli.main(
            [
                "finetune",
                *extra,
                "--out",
                str(out),
                "--model",
                str(model),
                "--max-steps",
                "120",
                "--lr",
                "5e-3",
                "--warmup-steps",
                "2",
                "--eval-every",
                "1000",
                "--batch-size",
                "8",
                "--threads",
                "1",
                "--no-progress",
                "--val-fraction",
                "0.25",
                "--doctest-samples",
                "0",
                "--seed",
                "0",
            ]
        )
    finally:
        torch.set_num_threads(threads)
        mp.undo()


@pytest.fixture(scope="module")
def runs(trained_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Train on the real journal, then on one whose training files' completions are shuffled
    across prompts (the held-out files stay real: both runs are judged on the same val set)."""
    root = tmp_path_factory.mktemp("usage-finetune")
    real_home, home = root / "real-journal", root / "home"
    rows = [(f, p, c, 1.0) for f, p, c in examples()]
    replay(real_home, rows)
    (home / "usage").mkdir(parents=True)
    for name in ("usage.jsonl",):
        (home / "usage" / name).write_bytes((real_home / "usage" / name).read_bytes())
    assert finetune(home, root / "real", trained_model.hf_dir, "--from-usage") == 0

    usage = read_usage(real_home / "usage")
    _, val = split_by_file(usage.exercises, DATA.val_fraction, DATA.split_seed)
    held_out = {ex.unit for ex in val}
    train_rows = [i for i, (f, _, _, _) in enumerate(rows) if f"usage/{f}" not in held_out]
    completions = [rows[i][2] for i in train_rows]
    random.Random(1).shuffle(completions)
    shuffled = list(rows)
    for i, c in zip(train_rows, completions, strict=True):
        shuffled[i] = (rows[i][0], rows[i][1], c, 1.0)
    Journal(home / "usage").clear()
    replay(home, shuffled)
    assert finetune(home, root / "shuffled", trained_model.hf_dir, "--from-usage") == 0
    return Runs(home, root / "real", root / "shuffled")


def report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


def test_from_usage_trains_and_reports_usage_counts(runs: Runs) -> None:
    data = report(runs.real)
    u = data["dataset"]["usage"]
    assert u["exercises"] == N_FILES * PER_FILE and u["train"] > 0 and u["val"] > 0
    assert data["val_loss"]["after"] < data["val_loss"]["before"]
    assert "Usage exercises: 72 of 72" in (runs.real / "dataset" / "report.md").read_text()


def test_gate_accepts_real_and_refuses_shuffled(runs: Runs) -> None:
    real, shuffled = report(runs.real)["promotion"], report(runs.shuffled)["promotion"]
    assert real["served"] == "base model" and real["passed"] and real["promoted"]
    assert real["val_loss"]["new"] < real["val_loss"]["served"]
    assert shuffled["served"].startswith("promoted adapter") and not shuffled["promoted"]
    assert shuffled["val_loss"]["new"] > shuffled["val_loss"]["served"] + 0.1
    assert "not lower" in " ".join(shuffled["reasons"])
    assert "kept aside (not promoted)" in (runs.shuffled / "report.md").read_text()
    # The served loss in the second gate is the promoted real adapter's, on the same rows.
    assert shuffled["val_loss"]["served"] == pytest.approx(real["val_loss"]["new"], rel=1e-4)
    assert promoted_adapter(runs.home) == runs.real / "adapter"


def test_promote_and_rollback_by_hand(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHI_LSP_HOME", str(runs.home))
    assert cli.main(["finetune", "--promote", str(runs.shuffled)]) == 0
    state = read_promoted()
    assert state["current"]["adapter"] == str(runs.shuffled / "adapter")
    assert state["history"][-1]["adapter"] == str(runs.real / "adapter")
    assert cli.main(["finetune", "--rollback"]) == 0
    assert promoted_adapter() == runs.real / "adapter"
    assert cli.main(["finetune", "--rollback"]) == 0
    assert promoted_adapter() is None
    assert cli.main(["finetune", "--rollback"]) == 0  # nothing left: still none
    assert promoted_adapter() is None
    assert cli.main(["finetune", "--promote", str(runs.home / "nowhere")]) == 2


async def test_server_follows_promotions(runs: Runs, tiny_model: TinyModel, tmp_path: Path) -> None:
    from phi_lsp.finetune.promotion import promote, rollback

    home = tmp_path / "home"
    settings = {"model": str(tiny_model.hf_dir), "backend": "transformers", "adapter": "promoted"}
    async with lsp_session(tmp_path, settings, home=home) as client:
        (first,) = await wait_for_loads(client, 1)
        assert "ready" in first and "adapter" not in first
        promote(runs.real, "manual", home)
        second = (await wait_for_loads(client, 2))[1]
        assert f"+ adapter {runs.real / 'adapter'} ready" in second
        rollback(home)
        third = (await wait_for_loads(client, 3))[2]
        assert "ready" in third and "adapter" not in third
