"""A training run killed by real signals resumes exactly: same final LoRA weights (bitwise)
and the same loss history as an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_finetune_data import make_fixture_repo

from phi_lsp.cli import finetune as cli
from phi_lsp.finetune.checkpoint import Interrupted
from phi_lsp.finetune.config import TrainConfig, config_from_dict
from phi_lsp.finetune.dataset import DataConfig, build_dataset, save_dataset
from phi_lsp.finetune.sources import SourceConfig
from phi_lsp.finetune.train import train
from testkit.tinymodel import TinyModel

MAX_STEPS = 40


def steps_checkpointed(run_dir: Path) -> int:
    """Steps in the last checkpoint (metrics.json is rewritten with each one)."""
    try:
        return len(json.loads((run_dir / "metrics.json").read_text())["train"])
    except (OSError, ValueError):
        return 0


def start(run_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "phi_lsp.cli.finetune", "finetune", "--resume", str(run_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)


def wait_for(run_dir: Path, proc: subprocess.Popen[bytes], steps: int, log: Path) -> int:
    deadline = time.monotonic() + 120
    while (done := steps_checkpointed(run_dir)) < steps:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "training made no progress"
        time.sleep(0.01)
    return done


def test_killed_run_resumes_to_the_same_weights(tiny_model: TinyModel, tmp_path: Path) -> None:
    repo = make_fixture_repo(tmp_path)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    args = [
        "finetune",
        str(repo),
        "--out",
        str(reference),
        "--dataset-only",
        "--model",
        str(tiny_model.hf_dir),
        "--max-steps",
        str(MAX_STEPS),
        "--checkpoint-every",
        "5",
        "--eval-every",
        "10",
        "--lr",
        "5e-3",
        "--warmup-steps",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--val-fraction",
        "0.25",
        "--max-file-bytes",
        "20000",
        "--doctest-samples",
        "0",
    ]
    assert cli.main(args) == 0
    shutil.copytree(reference, interrupted)

    # 1. A real run in a subprocess, SIGKILLed: no chance to save; the last periodic
    # checkpoint (every 5 steps) survives.
    log = tmp_path / "train.log"
    proc = start(interrupted, log)
    wait_for(interrupted, proc, 10, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = steps_checkpointed(interrupted)
    assert 10 <= killed_at < MAX_STEPS and killed_at % 5 == 0

    saved = json.loads((reference / "config.json").read_text())
    config = config_from_dict(saved["train"])
    threads = torch.get_num_threads()
    try:
        # 2. Resume here; a real SIGTERM (to this process) three steps later: the step in
        # progress finishes, is checkpointed, and the handler is restored.
        def terminate(step: int) -> None:
            if step == killed_at + 3:
                os.kill(os.getpid(), signal.SIGTERM)

        handler = signal.getsignal(signal.SIGTERM)
        with pytest.raises(Interrupted) as stopped:
            train(interrupted, config, resume=True, on_step=terminate)
        assert signal.getsignal(signal.SIGTERM) is handler
        assert stopped.value.step == killed_at + 3 == steps_checkpointed(interrupted)
        assert torch.load(interrupted / "checkpoint.pt", weights_only=True)["step"] == killed_at + 3
        assert not (interrupted / "adapter").exists()

        # 3. Resume to the end, and train the reference without interruption.
        resumed = train(interrupted, config, resume=True)
        uninterrupted = train(reference, config)
    finally:
        torch.set_num_threads(threads)

    a = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(interrupted / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) == 2 * 6 * 2  # A and B, 6 modules, 2 layers
    for name in a:
        assert torch.equal(a[name], b[name]), name
    losses = [row[1] for row in uninterrupted.history["train"]]
    assert [row[1] for row in resumed.history["train"]] == losses
    assert resumed.history["eval"] == uninterrupted.history["eval"]
    assert resumed.steps == uninterrupted.steps == MAX_STEPS


def test_packed_run_resumes_exactly(tiny_model: TinyModel, tmp_path: Path) -> None:
    """With packing on, a run stopped mid-way resumes bit for bit too: a step's exercises and
    their rows depend on (seed, step) only, and the checkpoint pins the micro-batch layout."""
    repo = make_fixture_repo(tmp_path)
    config = DataConfig(sources=SourceConfig(max_file_bytes=20_000), val_fraction=0.25)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    save_dataset(build_dataset([repo], [], config), reference / "dataset")
    shutil.copytree(reference, interrupted)
    cfg = TrainConfig(
        model=str(tiny_model.hf_dir),
        max_steps=8,
        batch_size=6,
        grad_accum=2,
        pack="on",
        pack_len=256,
        micro_tokens=512,  # 12 exercises a step: several micro-batches of 2 packed rows
        checkpoint_every=2,
        eval_every=4,
        log_every=3,
        lr=5e-3,
        warmup_steps=1,
        threads=1,
        progress=False,
    )

    def terminate(step: int) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    threads = torch.get_num_threads()
    try:
        uninterrupted = train(reference, cfg)
        with pytest.raises(Interrupted):
            train(interrupted, cfg, on_step=terminate)
        resumed = train(interrupted, cfg, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert resumed.history["layout"] == {"pack_len": 256, "rows": 2}
    assert [row[0] for row in resumed.history["train"]] == list(range(1, 9))
    assert [row[1] for row in resumed.history["train"]] == [
        row[1] for row in uninterrupted.history["train"]
    ]
    assert resumed.history["eval"] == uninterrupted.history["eval"]
    a = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(interrupted / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
