"""Did it help? Before/after validation loss and doctest pass rate, as markdown, JSON and PNG.

- Validation loss: the trainer's evaluations at step 0 (the base model: LoRA B starts at zero)
  and at the last step, on the held-out files' exercises.
- Doctest pass rate: for a sample of held-out exercises whose docstring has doctests, first the
  *original* body runs in the sandbox; only those that pass (stdlib-only, self-contained) count
  as runnable. The base model (adapter disabled) and the fine-tuned model then each write one
  greedy body per exercise, and that body's doctests run in the sandbox, never here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi_lsp.bodygen.stubs import Stub, body_is_done, check_candidate, cut_body, doctest_examples
from phi_lsp.finetune.exercise import Exercise
from phi_lsp.fs import atomic_write_bytes

DoctestRunner = Callable[[Stub, str], tuple[int, int]]


@dataclass
class DoctestScore:
    runnable: int = 0
    passed: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.passed / self.runnable if self.runnable else None


def runnable_exercises(
    exercises: Sequence[Exercise], limit: int, run_doctests: DoctestRunner
) -> list[Exercise]:
    """Held-out exercises with doctests that their original body passes in the sandbox."""
    out: list[Exercise] = []
    for ex in exercises:
        if len(out) >= limit:
            break
        stub = ex.stub()
        if ex.kind != "mined" or not doctest_examples(stub):
            continue
        passed, failed = run_doctests(stub, ex.completion.rstrip("\n"))
        if passed and not failed:
            out.append(ex)
    return out


def generate_body(
    model: Any, tokenizer: Any, stub: Stub, max_new_tokens: int, eos: int, device: str
) -> str:
    """One greedy body from the CodeExercises prompt, cut where it leaves the function."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    prompt = list(tokenizer.encode(stub.prompt, add_special_tokens=False))

    class Done(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            text = tokenizer.decode(input_ids[0, len(prompt) :], skip_special_tokens=True)
            return body_is_done(text, stub)

    ids = torch.tensor([prompt], device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
            use_cache=True,
            stopping_criteria=StoppingCriteriaList([Done()]),
        )
    text = tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True)
    return cut_body(text, stub)


def score_active(
    model: Any,
    tokenizer: Any,
    exercises: Sequence[Exercise],
    *,
    max_new_tokens: int,
    eos: int,
    device: str,
    run_doctests: DoctestRunner,
) -> DoctestScore:
    """The doctest score of `model` as it is (whichever adapter is active) on runnable
    exercises: one greedy body each, its doctests run in the sandbox."""
    score = DoctestScore()
    was_training = model.training
    model.eval()
    for ex in exercises:
        stub = ex.stub()
        body = generate_body(model, tokenizer, stub, max_new_tokens, eos, device)
        problem = check_candidate(body, stub)
        passed = failed = 0
        if problem is None:
            passed, failed = run_doctests(stub, body)
        ok = problem is None and passed > 0 and failed == 0
        score.runnable += 1
        score.passed += ok
        score.results.append(
            {
                "id": ex.id,
                "passed": ok,
                "body": body,
                "problem": problem,
                "doctests": [passed, failed],
            }
        )
    model.train(was_training)
    return score


def doctest_scores(
    model: Any,
    tokenizer: Any,
    exercises: Sequence[Exercise],
    *,
    max_new_tokens: int,
    eos: int,
    device: str,
    run_doctests: DoctestRunner,
) -> tuple[DoctestScore, DoctestScore]:
    """(base, fine-tuned) scores of a peft model on runnable exercises."""
    kw: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos": eos,
        "device": device,
        "run_doctests": run_doctests,
    }
    with model.disable_adapter():
        base = score_active(model, tokenizer, exercises, **kw)
    return base, score_active(model, tokenizer, exercises, **kw)


def write_report(run_dir: Path, data: dict[str, Any]) -> dict[str, Path]:
    """report.json, report.md and loss.png in `run_dir`."""
    run_dir = Path(run_dir)
    paths = {
        "json": run_dir / "report.json",
        "md": run_dir / "report.md",
        "png": run_dir / "loss.png",
    }
    atomic_write_bytes(paths["json"], json.dumps(data, indent=2, default=str).encode())
    atomic_write_bytes(paths["md"], render_markdown(data).encode())
    plot_losses(data["history"], paths["png"])
    return paths


def plot_losses(history: dict[str, Any], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [row[0] for row in history["train"]]
    losses = [row[1] for row in history["train"]]
    if steps:
        ax.plot(steps, losses, lw=1, alpha=0.6, label="train loss (body tokens)")
    evals = [(s, v) for s, v in history["eval"] if v is not None]
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title("phi-lsp finetune")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_markdown(data: dict[str, Any]) -> str:
    v = data["val_loss"]
    out = [
        "# phi-lsp finetune report",
        "",
        f"Base model `{data['base_model']}`, {data['steps']} steps, "
        f"{data['train_tokens_per_s']:.0f} tokens/s (median), run directory `{data['run_dir']}`.",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| validation loss (body tokens) | {_fmt(v['before'])} | {_fmt(v['after'])} |",
        f"| validation perplexity | {_fmt(_exp(v['before']), 2)} | {_fmt(_exp(v['after']), 2)} |",
    ]
    d = data.get("doctests")
    if d and d.get("runnable"):
        out.append(
            f"| doctest pass rate ({d['runnable']} held-out exercises) | "
            f"{d['base']['passed']}/{d['runnable']} | {d['tuned']['passed']}/{d['runnable']} |"
        )
    elif d is not None:
        out.append(f"| doctest pass rate | {d.get('note', 'no runnable exercises')} | |")
    out += ["", "![loss curve](loss.png)", ""]
    out += [f"Adapter: `{data['adapter']}`"]
    for kind, path in data.get("exports", {}).items():
        out.append(f"Export ({kind}): `{path}`")
    out += promotion_lines(data.get("promotion"))
    out += ["", "## Dataset", ""]
    c = data["dataset"]["counts"]
    out.append(
        f"{c['exercises_found']} exercises found, {c['kept']} kept after the quality rules, "
        f"deduplication and HumanEval decontamination; {c['train']} train / {c['val']} "
        "validation. See `dataset/report.md`."
    )
    lf = data.get("loss_filter") or {}
    if lf.get("enabled"):
        out.append(
            f"Base-model loss filter: {lf['dropped']} dropped above {lf['threshold']:.2f} nats."
        )
    return "\n".join(out) + "\n"


def promotion_lines(gate: dict[str, Any] | None) -> list[str]:
    """The promotion gate's verdict, with its numbers."""
    if not gate:
        return []
    v, d = gate["val_loss"], gate["doctests"]
    verdict = "promoted" if gate["promoted"] else "kept aside (not promoted)"
    out = ["", "## Promotion", "", f"Compared with the served model ({gate['served']}): {verdict}."]
    out += ["", "| | served | this run |", "|---|---|---|"]
    out.append(f"| validation loss | {_fmt(v['served'])} | {_fmt(v['new'])} |")
    if d["runnable"]:
        out.append(
            f"| doctest pass rate ({d['runnable']} held-out) | {d['served']}/{d['runnable']} "
            f"| {d['new']}/{d['runnable']} |"
        )
    out += [""] + [f"- {reason}" for reason in gate["reasons"]]
    return out


def _exp(value: float | None) -> float | None:
    return None if value is None else math.exp(min(value, 50.0))
