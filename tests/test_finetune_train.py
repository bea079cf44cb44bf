"""`phi-lsp finetune` end to end on the tiny model: training lowers the held-out loss, the
report is written, the repository is untouched, and the adapter reaches both engines."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from needs import need_module
from test_finetune_data import make_fixture_repo, tree_hashes

from phi_lsp.cli import finetune as cli
from phi_lsp.finetune.batches import (
    IGNORE,
    Layout,
    Row,
    encode,
    micro_batches,
    micro_tokens_for_memory,
    pack,
    stream_index,
    target_count,
)
from phi_lsp.finetune.config import TrainConfig
from phi_lsp.finetune.dataset import DataConfig, build_dataset, save_dataset
from phi_lsp.finetune.exercise import Exercise
from phi_lsp.finetune.losses import backward_step, example_losses, loss_filter
from phi_lsp.finetune.sources import SourceConfig
from phi_lsp.finetune.train import train
from phi_lsp.runtime.engines.base import GenerationRequest
from testkit.tinymodel import TinyModel

PROMPT = 'def count_even(numbers):\n    """How many of the numbers are even."""\n'


@dataclass
class Run:
    repo: Path
    run_dir: Path
    report: dict
    config: dict
    hashes_before: dict[str, str]


def train_args(model: Path) -> list[str]:
    return [
        "--model",
        str(model),
        "--max-steps",
        "40",
        "--lr",
        "5e-3",
        "--warmup-steps",
        "2",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "10",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--no-progress",
        "--val-fraction",
        "0.25",
        "--max-file-bytes",
        "20000",
    ]


@pytest.fixture(scope="module")
def run(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One `phi-lsp finetune REPO --export gguf` run (in this process) on a git fixture."""
    root = tmp_path_factory.mktemp("finetune")
    repo = make_fixture_repo(root, git=True)
    before = tree_hashes(repo)
    threads = torch.get_num_threads()
    mp = pytest.MonkeyPatch()
    mp.setenv("PHI_LSP_HOME", str(root / "home"))
    try:
        code = cli.main(
            [
                "finetune",
                str(repo),
                "--out",
                str(root / "run"),
                "--export",
                "gguf",
                "--export-outtype",
                "f32",
                "--doctest-samples",
                "3",
                "--doctest-max-new-tokens",
                "32",
                *train_args(tiny_model.hf_dir),
            ]
        )
    finally:
        torch.set_num_threads(threads)
        mp.undo()
    assert code == 0
    run_dir = root / "run"
    return Run(
        repo,
        run_dir,
        json.loads((run_dir / "report.json").read_text()),
        json.loads((run_dir / "config.json").read_text()),
        before,
    )


def test_training_lowers_validation_loss(run: Run) -> None:
    loss = run.report["val_loss"]
    assert loss["after"] < loss["before"] - 0.1
    evals = [v for _, v in run.report["history"]["eval"]]
    assert [s for s, _ in run.report["history"]["eval"]] == [0, 10, 20, 30, 40]
    assert evals[-1] < evals[0]
    assert len(run.report["history"]["train"]) == 40 and run.report["train_tokens_per_s"] > 0


def test_report_files(run: Run) -> None:
    md = (run.run_dir / "report.md").read_text()
    assert "| validation loss (body tokens) |" in md and "loss.png" in md
    assert (run.run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doctests = run.report["doctests"]
    # numbers.py is held out: its six exercises all have doctests their own body passes.
    assert doctests["runnable"] == 3
    assert len(doctests["base"]["results"]) == 3 and len(doctests["tuned"]["results"]) == 3
    assert "doctest pass rate (3 held-out exercises)" in md
    assert run.report["dataset"]["counts"]["val"] == 6
    # The base model is random: every exercise's loss is about ln(vocab), so which ones the
    # outlier rule drops is noise (it differs between torch and transformers releases). The
    # filter's choices are tested on a model with known losses below.
    lf = run.report["loss_filter"]
    assert lf["enabled"] and lf["dropped"] == len(lf["dropped_ids"])
    assert all(loss > lf["threshold"] for _, loss in lf["dropped_ids"])


def test_run_directory_records_sources_and_hashes(run: Run) -> None:
    (source,) = run.config["sources"]
    head = (run.repo / ".git" / "HEAD").read_text()
    assert source["listing"] == "git" and source["dirty"] is False
    assert len(source["commit"]) == 40 and "ref: refs/heads/" in head
    assert set(run.config["dataset_hashes"]) == {"train.jsonl", "val.jsonl"}
    assert run.config["train"]["lora_r"] == 16 and run.config["train"]["max_steps"] == 40
    assert run.config["versions"]["peft"]


def test_sources_are_byte_identical_after_the_run(run: Run) -> None:
    assert tree_hashes(run.repo) == run.hashes_before


def test_loss_filter_drops_what_the_base_model_finds_noise(trained_model: TinyModel) -> None:
    """Functions the base model knows are kept; a body of shuffled characters is dropped,
    unless `max_loss` is above its loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from testkit.trained_model import LESSONS

    tokenizer = AutoTokenizer.from_pretrained(trained_model.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(trained_model.hf_dir, dtype=torch.float32)

    cuts = [text.rindex('"""\n') + 4 for text in LESSONS]
    pieces = [(text[:cut], text[cut:]) for text, cut in zip(LESSONS, cuts, strict=True)]
    pieces.append(("", "".join(random.Random(3).sample(LESSONS[0], len(LESSONS[0])))))
    exercises = [
        Exercise(f"x{k}", "r", "p.py", "r/p.py", "mined", "f", 1, prompt, body)
        for k, (prompt, body) in enumerate(pieces)
    ]
    rows = [encode(tokenizer, ex, 256, tokenizer.eos_token_id) for ex in exercises]

    def run_filter(cfg: TrainConfig) -> tuple[list[str], dict[str, Any]]:
        return loss_filter(
            model, exercises, rows, cfg, 0, "cpu", contextlib.nullcontext(), Layout(0, 2)
        )

    kept, report = run_filter(TrainConfig())
    assert kept == ["x0", "x1", "x2", "x3"] and [i for i, _ in report["dropped_ids"]] == ["x4"]
    assert report["threshold"] == 3.0 and report["dropped_ids"][0][1] > 3.0
    kept, report = run_filter(TrainConfig(max_loss=report["dropped_ids"][0][1] + 1))
    assert len(kept) == 5 and report["dropped"] == 0


def test_out_inside_a_repository_is_refused(tmp_path: Path) -> None:
    repo = make_fixture_repo(tmp_path)
    before = tree_hashes(repo)
    assert cli.main(["finetune", str(repo), "--out", str(repo / "run")]) == 2
    assert tree_hashes(repo) == before


def test_adapter_on_the_transformers_engine(run: Run, tiny_model: TinyModel) -> None:
    from phi_lsp.runtime.adapters import apply_adapter
    from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

    def engine_with(adapter: Path | None, merge: bool = True) -> TransformersEngine:
        engine = TransformersEngine(tiny_model.hf_dir, device="cpu")
        if adapter is not None:  # before the first generation (the engine keeps a KV cache)
            engine.model = apply_adapter(engine.model, adapter, merge=merge)
        return engine

    request = GenerationRequest(PROMPT, max_new_tokens=16)
    base, tuned = engine_with(None), engine_with(run.run_dir / "adapter")
    assert (
        tuned.generate(request, threading.Event()).text
        != base.generate(request, threading.Event()).text
    )
    # Unmerged (a 4-bit base keeps the adapter separate) computes the same logits.
    unmerged = engine_with(run.run_dir / "adapter", merge=False)
    ids = torch.tensor([tuned.tokenize(PROMPT)])
    with torch.no_grad():
        a, b, c = (e.model(ids).logits for e in (tuned, unmerged, base))
    assert torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, c, atol=1e-2)
    for engine in (base, tuned, unmerged):
        engine.close()


def test_merged_gguf_and_lora_gguf_on_llamacpp(run: Run, tiny_model: TinyModel) -> None:
    need_module("llama_cpp")
    import llama_cpp

    from phi_lsp.runtime.adapters import lora_gguf_path
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    request = GenerationRequest(PROMPT, max_new_tokens=16)
    merged_path = Path(run.report["exports"]["gguf"])
    base = LlamaCppEngine(tiny_model.gguf_f32, n_ctx=256, n_threads=1)
    merged = LlamaCppEngine(merged_path, n_ctx=256, n_threads=1)
    base_text = base.generate(request, threading.Event()).text
    merged_text = merged.generate(request, threading.Event()).text
    assert merged_text != base_text
    lora = lora_gguf_path(run.run_dir / "adapter")
    assert lora is not None
    llm = llama_cpp.Llama(
        model_path=str(tiny_model.gguf_f32),
        lora_path=str(lora),
        n_ctx=256,
        n_threads=1,
        verbose=False,
    )
    tokens = llm.tokenize(PROMPT.encode(), add_bos=False)
    with_lora = []
    for token in llm.generate(tokens, top_k=1, temp=0.0):
        if token == llm.token_eos() or len(with_lora) == 16:
            break
        with_lora.append(token)
    assert llm.detokenize(with_lora).decode() == merged_text
    for engine in (base, merged):
        engine.close()
    llm.close()


def _short_config(model: Path, **kw: object) -> TrainConfig:
    values: dict = dict(
        model=str(model),
        max_steps=3,
        eval_every=3,
        checkpoint_every=3,
        threads=1,
        progress=False,
        lr=5e-3,
        warmup_steps=1,
    )
    values.update(kw)
    return TrainConfig(**values)


def _dataset_dir(tmp_path: Path) -> Path:
    repo = make_fixture_repo(tmp_path)
    config = DataConfig(sources=SourceConfig(max_file_bytes=20_000), val_fraction=0.25)
    save_dataset(build_dataset([repo], [], config), tmp_path / "run" / "dataset")
    return tmp_path / "run"


def test_qlora_nf4_trains_on_cpu(tiny_model: TinyModel, tmp_path: Path) -> None:
    need_module("bitsandbytes")
    run_dir = _dataset_dir(tmp_path)
    threads = torch.get_num_threads()
    try:
        result = train(run_dir, _short_config(tiny_model.hf_dir, quantization="nf4"))
    finally:
        torch.set_num_threads(threads)
    assert getattr(result.model.base_model.model, "is_loaded_in_4bit", False)
    losses = [row[1] for row in result.history["train"]]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


@pytest.mark.cuda
def test_bf16_and_qlora_on_cuda(tiny_model: TinyModel, tmp_path: Path) -> None:
    run_dir = _dataset_dir(tmp_path)
    for quantization in ("none", "nf4"):
        result = train(
            run_dir, _short_config(tiny_model.hf_dir, device="cuda", quantization=quantization)
        )
        assert result.device == "cuda" and result.val_loss_after is not None
        assert next(result.model.parameters()).device.type == "cuda"
        # Packed by default on CUDA, with rows per micro-batch from the free memory, which the
        # run then did not exceed.
        assert result.history["layout"]["pack_len"] == 2048
        assert result.history["layout"]["rows"] >= 1
        assert 0 < result.history["cuda_peak_bytes"] < torch.cuda.mem_get_info()[1]
        assert len(result.history["train"]) == 3


def test_data_order_is_a_pure_function_of_seed_and_position() -> None:
    first = [stream_index(7, 3, p) for p in range(21)]
    assert first == [stream_index(7, 3, p) for p in range(21)]
    for epoch in range(3):
        assert sorted(first[epoch * 7 : epoch * 7 + 7]) == list(range(7))
    assert first[:7] != first[7:14]
    assert first != [stream_index(7, 4, p) for p in range(21)]


@pytest.mark.parametrize("backend", ["transformers", "llamacpp"])
async def test_server_loads_the_adapter_without_a_restart(
    run: Run, tiny_model: TinyModel, tmp_path: Path, backend: str
) -> None:
    from lsprotocol import types

    from testkit.lsp_session import inline_completion, lsp_session, open_document, wait_for_loads

    if backend == "llamacpp":
        need_module("llama_cpp")
    model = tiny_model.hf_dir if backend == "transformers" else tiny_model.gguf_f32
    settings = {
        "model": str(model),
        "backend": backend,
        "maxNewTokens": 16,
        "typedAheadCache": False,
    }
    line = len(PROMPT.splitlines())
    async with lsp_session(tmp_path, settings) as client:
        await wait_for_loads(client)
        uri = (tmp_path / "count.py").as_uri()
        open_document(client, uri, PROMPT)
        before = await inline_completion(client, uri, line, 0)
        client.set_configuration(
            {**settings, "adapter": str(run.run_dir / "adapter")}, section="phiLsp"
        )
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        ends = await wait_for_loads(client, 2)
        assert "ready" in ends[1], ends
        after = await inline_completion(client, uri, line, 0)
    text = [items[0].insert_text if items else "" for items in (before, after)]
    assert text[0] != text[1]


# --- packing -------------------------------------------------------------------------------------


def _rows(n: int, seed: int) -> list[Row]:
    """Exercises of varied lengths (labels on the body only); every third has no prompt, so its
    first token is a body token, which a packed row must not make a target."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        prompt, body = (0 if k % 3 == 0 else rng.randint(2, 14)), rng.randint(3, 18)
        ids = [rng.randrange(2000) for _ in range(prompt + body)]
        rows.append(Row(ids, [IGNORE] * prompt + ids[prompt:]))
    return rows


def _sharp(model: Any) -> Any:
    """q and k scaled up: a random model's attention is nearly uniform, so that reading another
    exercise changes the loss clearly (by 0.05–1.4 nats here), far above fp noise."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")) or name.endswith(
                ("q_proj.base_layer.weight", "k_proj.base_layer.weight")
            ):
                p.mul_(30)
    return model


def _tiny(tiny_model: TinyModel, attention: str) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        tiny_model.hf_dir, attn_implementation=attention, dtype=torch.float32
    )
    model.config.use_cache = False
    return _sharp(model)


def test_pack_is_first_fit_decreasing() -> None:
    rows = [Row([0] * n, [0] * n) for n in (5, 9, 3, 7, 12, 2, 20)]
    # Longest first into the first bin with room; 20 > 12 gets a bin of its own.
    assert pack(rows, 12) == [[6], [4], [1, 2], [3, 0], [5]]
    assert pack(rows, 100) == [[6, 4, 1, 3, 0, 2, 5]]


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_packed_rows_restart_positions_and_ignore_boundaries(attention: str) -> None:
    rows = _rows(12, seed=1)
    batches = micro_batches(rows, Layout(pack_len=48, rows=2, attention=attention), pad=7)
    seen: list[int] = []
    for mb in batches:
        assert mb.packed and mb.tokens == int((mb.owner >= 0).sum())
        assert mb.targets == int((mb.labels != IGNORE).sum())
        for r in range(mb.ids.shape[0]):
            owners = [i for i in dict.fromkeys(mb.owner[r].tolist()) if i >= 0]
            if attention == "flash_attention_2":  # one flat row, its bounds for the kernel
                assert mb.ids.shape[0] == 1 and mb.cu_seqlens is not None
                assert mb.cu_seqlens == [
                    0,
                    *torch.tensor([len(rows[i].ids) for i in owners]).cumsum(0).tolist(),
                ]
            for i in owners:
                at = (mb.owner[r] == i).nonzero().flatten()
                assert at.tolist() == list(range(int(at[0]), int(at[0]) + len(rows[i].ids)))
                assert mb.positions[r, at].tolist() == list(range(len(rows[i].ids)))
                assert mb.ids[r, at].tolist() == rows[i].ids
                assert mb.labels[r, at].tolist() == [IGNORE, *rows[i].labels[1:]]
            seen += owners
            padding = mb.owner[r] < 0
            assert (mb.labels[r, padding] == IGNORE).all() and (mb.ids[r, padding] == 7).all()
    assert sorted(seen) == list(range(len(rows)))
    assert sum(mb.targets for mb in batches) == target_count(rows)
    assert any(len(set(mb.owner[0].tolist()) - {-1}) >= 3 for mb in batches)  # really packed


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_losses_equal_each_exercise_alone(tiny_model: TinyModel, attention: str) -> None:
    """The proof: each exercise's summed body loss from packed rows is its loss alone; changing
    one exercise changes no other exercise's loss (no attention across exercises)."""
    model = _tiny(tiny_model, attention)
    rows = _rows(12, seed=2)
    layout = Layout(pack_len=48, rows=2, attention=attention)
    assert max(len(b) for b in pack(rows, 48)) >= 3
    no_autocast = contextlib.nullcontext()
    alone = example_losses(model, rows, 1, 0, "cpu", no_autocast)
    packed = example_losses(model, rows, layout, 0, "cpu", no_autocast)
    assert [n for _, n in packed] == [n for _, n in alone] == [target_count([r]) for r in rows]
    assert torch.allclose(
        torch.tensor([t for t, _ in packed]), torch.tensor([t for t, _ in alone]), rtol=1e-5
    )
    # Change the tokens of an exercise that shares its row (same length: same packing).
    (row_mates,) = [b for b in pack(rows, 48) if len(b) >= 3][:1]
    k = row_mates[0]
    changed = list(rows)
    changed[k] = Row([(t + 1) % 2000 for t in rows[k].ids], rows[k].labels)
    after = example_losses(model, changed, layout, 0, "cpu", no_autocast)
    others = [i for i in range(len(rows)) if i != k]
    assert torch.allclose(
        torch.tensor([after[i][0] for i in others]),
        torch.tensor([packed[i][0] for i in others]),
        rtol=1e-6,
    )
    assert abs(after[k][0] - packed[k][0]) > 1e-3


def test_packed_step_matches_the_unpacked_step(tiny_model: TinyModel) -> None:
    """One optimizer step's loss and LoRA gradients: the same whether its exercises run one per
    micro-batch, all in one, or packed into rows over one or several micro-batches."""
    from phi_lsp.finetune.model import add_lora, load_base_model

    cfg = TrainConfig(model=str(tiny_model.hf_dir), lora_dropout=0.0, attention="sdpa")
    _, base = load_base_model(tiny_model.hf_dir, "cpu", torch.float32, cfg)
    model = add_lora(_sharp(base), cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero: give A's gradients something to show
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    trainable = [p for p in model.parameters() if p.requires_grad]
    rows = _rows(10, seed=3)

    def step(layout: Layout) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batches = micro_batches(rows, layout, 0)
        loss = backward_step(
            model, batches, target_count(rows), "cpu", layout.attention, contextlib.nullcontext()
        )
        grads = [p.grad.clone() for p in trainable if p.grad is not None]
        model.zero_grad(set_to_none=True)
        return loss, grads

    reference, reference_grads = step(Layout(pack_len=0, rows=1))
    assert len(reference_grads) == len(trainable)
    assert any(g.abs().sum() > 0 for g in reference_grads)
    for layout in (Layout(0, 10), Layout(48, 1), Layout(48, 2), Layout(1000, 1)):
        loss, grads = step(layout)
        assert torch.allclose(loss, reference, rtol=1e-5), layout
        for g, r in zip(grads, reference_grads, strict=True):
            assert torch.allclose(g, r, rtol=1e-4, atol=1e-6), layout


def test_micro_batch_size_from_memory() -> None:
    phi1 = {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "vocab_size": 51200,
    }

    def tokens(free_gb: float, attention: str = "sdpa", checkpointing: bool = False) -> int:
        return micro_tokens_for_memory(int(free_gb * 1e9), phi1, 2, attention, 2048, checkpointing)

    assert tokens(77) == 4 * 2048 and tokens(138) == 8 * 2048  # H100 / H200, phi-1 loaded
    assert tokens(1) == 2048  # always one row
    assert tokens(77, "eager") < tokens(77) < tokens(77, checkpointing=True)
    assert micro_tokens_for_memory(77 * 10**9, phi1, 4, "sdpa", 2048, False) < tokens(77)


@pytest.mark.cuda
def test_packing_on_cuda_without_host_syncs(tiny_model: TinyModel) -> None:
    """flash-attention 2's flat packed row gives each exercise its loss alone (bf16), and a
    packed SDPA training step queues its work without one host sync."""
    from transformers import AutoModelForCausalLM

    rows = _rows(12, seed=4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16)
    if importlib.util.find_spec("flash_attn") is not None:
        model = AutoModelForCausalLM.from_pretrained(
            tiny_model.hf_dir, attn_implementation="flash_attention_2", dtype=torch.bfloat16
        )
        model = _sharp(model.to("cuda"))
        model.config.use_cache = False
        layout = Layout(pack_len=48, rows=2, attention="flash_attention_2")
        alone = example_losses(model, rows, Layout(0, 1, "flash_attention_2"), 0, "cuda", autocast)
        packed = example_losses(model, rows, layout, 0, "cuda", autocast)
        for (a, n), (b, m) in zip(alone, packed, strict=True):
            assert n == m and abs(a - b) <= 0.01 * abs(a) + 0.1  # bf16 noise
        # The exact check: another exercise in the same flat row changes nothing here.
        k = next(b for b in pack(rows, 48) if len(b) >= 3)[0]
        changed = list(rows)
        changed[k] = Row([(t + 1) % 2000 for t in rows[k].ids], rows[k].labels)
        after = example_losses(model, changed, layout, 0, "cuda", autocast)
        for i in range(len(rows)):
            if i != k:
                assert abs(after[i][0] - packed[i][0]) < 1e-2, i
    model = _tiny(tiny_model, "sdpa").to("cuda").train()
    for p in model.parameters():
        p.requires_grad_(p.ndim == 1)  # a few trainable tensors
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], fused=True)
    batches = micro_batches(rows, Layout(pack_len=48, rows=2, attention="sdpa"), 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = backward_step(model, batches, target_count(rows), "cuda", "sdpa", autocast)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert 0 < loss.item() < 20
