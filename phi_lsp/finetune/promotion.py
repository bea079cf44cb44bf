"""The promotion gate, and the promoted adapter's history (`PHI_LSP_HOME/finetune/promoted.json`).

After a run trains, its adapter is compared with the one being served (the promoted adapter,
else the base model) on the run's held-out validation exercises, which neither was trained on:
its validation loss must be lower, and its doctest pass rate on the runnable held-out exercises
not lower. Then it is promoted; otherwise it stays in its run directory and the report says why.
`--promote RUN` and `--rollback` switch by hand. The file's reader is
`phi_lsp.models.promoted` (the server reads it; the server never imports the trainer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phi_lsp.finetune.exercise import Exercise
from phi_lsp.finetune.report import DoctestRunner, DoctestScore, score_active
from phi_lsp.fs import atomic_write_bytes
from phi_lsp.models.promoted import promoted_path, read_promoted

SERVED = "served"  # the peft adapter name the served adapter is loaded under for the gate


def write_promoted(state: dict[str, Any], home: Path | None = None) -> None:
    atomic_write_bytes(promoted_path(home), json.dumps(state, indent=2).encode())


def promote(run_dir: Path, how: str, home: Path | None = None, **facts: Any) -> dict[str, Any]:
    """Make `run_dir`'s adapter the promoted one; the previous one goes on the history."""
    adapter = Path(run_dir).resolve() / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise ValueError(f"{run_dir} has no trained adapter ({adapter}/adapter_config.json)")
    state = read_promoted(home)
    if state["current"] is not None:
        state["history"].append(state["current"])
    state["current"] = {
        "run": str(Path(run_dir).resolve()),
        "adapter": str(adapter),
        "promoted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "how": how,
        **facts,
    }
    write_promoted(state, home)
    return state


def rollback(home: Path | None = None) -> dict[str, Any]:
    """Back to the previously promoted adapter (or to none: the base model)."""
    state = read_promoted(home)
    state["current"] = state["history"].pop() if state["history"] else None
    write_promoted(state, home)
    return state


def served_adapter(home: Path | None = None) -> Path | None:
    current = read_promoted(home)["current"]
    adapter = current.get("adapter") if current else None
    return Path(adapter) if adapter and (Path(adapter) / "adapter_config.json").is_file() else None


def gate(
    model: Any,
    tokenizer: Any,
    val_rows: Sequence[Any],
    runnable: Sequence[Exercise],
    new_doctests: DoctestScore | None,
    *,
    cfg: Any,
    eos: int,
    device: str,
    run_doctests: DoctestRunner,
    max_new_tokens: int,
    home: Path | None = None,
) -> dict[str, Any]:
    """Compare the trained adapter (`model`'s active one) with the served one; the verdict and
    its numbers. `new_doctests`: the trained adapter's score on `runnable`, when known."""
    import contextlib

    from phi_lsp.finetune.losses import evaluate

    kw: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "eos": eos,
        "device": device,
        "run_doctests": run_doctests,
    }
    autocast = contextlib.nullcontext()
    if device == "cuda":
        import torch

        from phi_lsp.runtime.devices import pick_dtype

        dtype = pick_dtype(device, cfg.dtype)
        if dtype != torch.float32:
            autocast = torch.autocast("cuda", dtype=dtype)  # type: ignore[assignment]
    new_loss = evaluate(model, val_rows, cfg.batch_size, eos, device, autocast)
    if new_doctests is None and runnable:
        new_doctests = score_active(model, tokenizer, runnable, **kw)
    notes: list[str] = []
    served = served_adapter(home)
    name = f"promoted adapter {served}" if served else "base model"
    loaded = False
    if served is not None:
        try:
            model.load_adapter(str(served), adapter_name=SERVED, is_trainable=False)
            loaded = True
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            notes.append(
                f"the promoted adapter {served} does not load here ({exc}): compared "
                "with the base model"
            )
            name = "base model"
    active = model.active_adapter
    try:
        if loaded:
            model.set_adapter(SERVED)
            scope: Any = contextlib.nullcontext()
        else:
            scope = model.disable_adapter()
        with scope:
            served_loss = evaluate(model, val_rows, cfg.batch_size, eos, device, autocast)
            served_doctests = score_active(model, tokenizer, runnable, **kw) if runnable else None
    finally:
        if loaded:
            model.set_adapter(active)
            model.delete_adapter(SERVED)
    return verdict(name, served_loss, new_loss, served_doctests, new_doctests, notes)


def verdict(
    served: str,
    served_loss: float | None,
    new_loss: float | None,
    served_doctests: DoctestScore | None,
    new_doctests: DoctestScore | None,
    notes: list[str],
) -> dict[str, Any]:
    """Lower validation loss AND a doctest pass rate not lower; every reason spelled out."""
    reasons = list(notes)
    passed = True
    if served_loss is None or new_loss is None:
        passed = False
        reasons.append("no held-out validation exercises: nothing to compare on")
    elif new_loss < served_loss:
        reasons.append(f"validation loss {new_loss:.4f} < {served_loss:.4f} (served): better")
    else:
        passed = False
        reasons.append(f"validation loss {new_loss:.4f} ≥ {served_loss:.4f} (served): not lower")
    runnable = served_doctests.runnable if served_doctests else 0
    s = served_doctests.passed if served_doctests else 0
    n = new_doctests.passed if new_doctests else 0
    if not runnable:
        reasons.append("no runnable held-out doctests: pass rate not compared")
    elif n >= s:
        reasons.append(f"doctest pass rate {n}/{runnable} ≥ {s}/{runnable} (served): not lower")
    else:
        passed = False
        reasons.append(f"doctest pass rate {n}/{runnable} < {s}/{runnable} (served): lower")
    return {
        "served": served,
        "val_loss": {"served": served_loss, "new": new_loss},
        "doctests": {"runnable": runnable, "served": s, "new": n},
        "passed": passed,
        "promoted": False,
        "reasons": reasons,
    }


def find_run(spec: str, home: Path | None = None) -> Path:
    """A run directory given as a path or as its name under PHI_LSP_HOME/finetune."""
    from phi_lsp.models.source import phi_lsp_home

    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    named = (home or phi_lsp_home()) / "finetune" / spec
    if named.is_dir():
        return named.resolve()
    raise ValueError(f"no run directory {spec}")


def describe(state: dict[str, Any]) -> str:
    current = state["current"]
    now = f"promoted: {current['adapter']}" if current else "promoted: none (the base model)"
    return f"{now}; {len(state['history'])} earlier in the history ({promoted_path()})"


def gate_run(
    result: Any,
    cfg: Any,
    val: Sequence[Exercise],
    runnable: Sequence[Exercise],
    new_doctests: DoctestScore | None,
    *,
    eos: int,
    run_doctests: DoctestRunner,
    max_new_tokens: int,
    promote_after: bool = True,
) -> dict[str, Any]:
    """The gate on a finished run (`train.TrainResult`); promote when it passes."""
    from phi_lsp.finetune.batches import encode

    rows = [
        encode(result.tokenizer, ex, cfg.max_seq_len, eos if cfg.append_eos else None) for ex in val
    ]
    outcome = gate(
        result.model,
        result.tokenizer,
        rows,
        runnable,
        new_doctests,
        cfg=cfg,
        eos=eos,
        device=result.device,
        run_doctests=run_doctests,
        max_new_tokens=max_new_tokens,
    )
    if outcome["passed"] and promote_after:
        promote(result.run_dir, "gate", val_loss=outcome["val_loss"]["new"])
        outcome["promoted"] = True
    elif outcome["passed"]:
        outcome["reasons"].append("--no-promote: not promoted")
    return outcome
