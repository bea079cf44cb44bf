"""Build a random-weight model of phi-1's exact shape, as GGUF F16 and Q4_0, for benchmarks.

phi-1 itself cannot be downloaded here, and its speed does not depend on its weights: what
matters is the shape (24 layers, hidden 2048, MLP 8192, 32 heads, rotary dim 32, vocab 51200,
untied lm_head) and a tokenizer of about phi-1's size. So this builds:

1. an HF folder: PhiForCausalLM with phi-1's config, weights ~ N(0, 0.02) in fp16 (norm weights
   1, biases 0), and a byte-level BPE trained on this interpreter's stdlib — 50,257 tokens
   (GPT-2's count, `<|endoftext|>` included) plus CodeGen's 38 whitespace-run tokens = 50,295,
   like phi-1's CodeGen tokenizer, in a 51,200-row embedding;
2. `<name>-f16.gguf` with `phi_lsp.models.convert.convert_hf_to_gguf`;
3. `<name>-q4_0.gguf` with llama.cpp's `llama_model_quantize`.

Each stage is skipped when its output exists; the times and sizes of the stages that ran are
kept in `stages.json` next to the files, so a cached run still prints them. Completions from
random weights are noise; only timings and memory mean anything.

    .venv/bin/python bench/phi1_shape.py            # bench/.models/phi1-shape/
    .venv/bin/python bench/phi1_shape.py --tiny     # bench/.models/tiny-shape/ (seconds)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

BENCH_DIR = Path(__file__).resolve().parent
MODELS_DIR = BENCH_DIR / ".models"
ENDOFTEXT = "<|endoftext|>"
# Kept out of the tokenizer's training text: spine_latency.py builds its document from it.
HELD_OUT = ("textwrap.py",)
# CodeGen (phi-1's tokenizer) adds runs of 31..2 spaces and 9..2 tabs as plain added tokens.
CODEGEN_WHITESPACE = tuple(" " * n for n in range(31, 1, -1)) + tuple(
    "\t" * n for n in range(9, 1, -1)
)


@dataclass(frozen=True)
class Shape:
    name: str
    vocab_size: int  # embedding rows
    bpe_vocab: int  # trained BPE tokens, <|endoftext|> included
    whitespace_tokens: tuple[str, ...]
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int = 2048
    partial_rotary_factor: float = 0.5
    hidden_act: str = "gelu_new"
    layer_norm_eps: float = 1e-5


PHI1 = Shape(
    name="phi1-shape",
    vocab_size=51200,
    bpe_vocab=50257,
    whitespace_tokens=CODEGEN_WHITESPACE,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=24,
    num_attention_heads=32,
)
TINY = Shape(
    name="tiny-shape",
    vocab_size=2048,
    bpe_vocab=2000,
    whitespace_tokens=tuple(" " * n for n in range(8, 1, -1)) + ("\t\t", "\t\t\t"),
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
)


@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    path: str
    bytes: int
    peak_rss_gb: float  # this process's high-water mark when the stage ended


@dataclass(frozen=True)
class Built:
    root: Path
    hf_dir: Path
    gguf_f16: Path
    gguf_q4_0: Path
    stages: list[Stage]


def default_root(shape: Shape) -> Path:
    return MODELS_DIR / shape.name


def build(
    shape: Shape = PHI1, root: Path | None = None, force: bool = False, gguf: bool = True
) -> Built:
    """Build what is missing under `root` and return the paths (see the module docstring).
    `gguf=False` builds only the HF folder (a GPU machine may have no gguf / llama_cpp)."""
    root = Path(root or default_root(shape))
    if force and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    hf_dir = root / "hf"
    f16 = root / f"{shape.name}-f16.gguf"
    q4 = root / f"{shape.name}-q4_0.gguf"
    record = root / "stages.json"
    stages = _read_stages(record)

    def run(name: str, out: Path, make: Callable[[], None]) -> None:
        if out.exists():
            return
        t0 = time.perf_counter()
        make()
        seconds = time.perf_counter() - t0
        stages[name] = Stage(name, seconds, str(out), _size(out), _peak_rss_gb())
        record.write_text(json.dumps({k: asdict(v) for k, v in stages.items()}, indent=2) + "\n")

    run("init+save (HF fp16 safetensors)", hf_dir, lambda: _build_hf(shape, hf_dir))
    if gguf:
        run("GGUF F16 conversion", f16, lambda: _convert(hf_dir, f16))
        run("Q4_0 quantization", q4, lambda: quantize(f16, q4, "q4_0"))
    return Built(root, hf_dir, f16, q4, list(stages.values()))


# --- stage 1: tokenizer + random weights --------------------------------------------------


def training_files(limit: int | None = None) -> list[Path]:
    """This interpreter's stdlib sources (no tests, no idlelib), sorted; HELD_OUT excluded."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "__pycache__"}
    files = [
        p
        for p in sorted(stdlib.rglob("*.py"))
        if not skip & set(p.relative_to(stdlib).parts)
        and not (p.parent == stdlib and p.name in HELD_OUT)
    ]
    if len(files) < 50:
        raise RuntimeError(f"too few stdlib .py files under {stdlib} to train a tokenizer")
    return files[:limit] if limit else files


def build_tokenizer(shape: Shape) -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE of `shape.bpe_vocab` tokens plus whitespace-run tokens."""
    sys.path.insert(0, str(BENCH_DIR.parent))  # testkit: the tests' tiny model trains it too
    from testkit.tinymodel import build_tokenizer as train_bpe

    files = training_files(limit=120 if shape.vocab_size < 10_000 else None)
    return train_bpe(files, shape.bpe_vocab, shape.whitespace_tokens)


def _build_hf(shape: Shape, hf_dir: Path) -> None:
    """Write the HF folder under a temporary name, then rename it into place."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    tmp = hf_dir.with_name(f".{hf_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        tokenizer = build_tokenizer(shape)
        eot = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
        if not isinstance(eot, int) or len(tokenizer) > shape.vocab_size:
            raise RuntimeError(f"bad tokenizer: {len(tokenizer)} tokens, eot {eot!r}")
        print(f"  tokenizer: {len(tokenizer)} tokens in {time.perf_counter() - t0:.1f} s")

        # transformers 5 folds partial_rotary_factor into rope_parameters (stubs omit it).
        config = PhiConfig(  # type: ignore[call-arg]
            vocab_size=shape.vocab_size,
            hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size,
            num_hidden_layers=shape.num_hidden_layers,
            num_attention_heads=shape.num_attention_heads,
            max_position_embeddings=shape.max_position_embeddings,
            partial_rotary_factor=shape.partial_rotary_factor,
            hidden_act=shape.hidden_act,
            layer_norm_eps=shape.layer_norm_eps,
            bos_token_id=eot,
            eos_token_id=eot,
            tie_word_embeddings=False,
        )
        t0 = time.perf_counter()
        # Built on the meta device (no memory, no default init), then given real fp16 storage
        # and filled once: about 2.9 GB resident at phi-1's shape instead of fp32 twice over.
        with torch.device("meta"):
            model = PhiForCausalLM(config)
        model = model.to(torch.float16).to_empty(device="cpu").eval()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.ndim >= 2:
                    param.normal_(0.0, 0.02, generator=generator)
                elif name.endswith("layernorm.weight"):
                    param.fill_(1.0)
                else:
                    param.zero_()  # biases, layer norm biases
        model.config.dtype = torch.float16  # type: ignore[attr-defined]
        n_params = sum(p.numel() for p in model.parameters())
        print(f"  init: {n_params:,} params in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        print(f"  save: {time.perf_counter() - t0:.1f} s")
        del model
        os.replace(tmp, hf_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- stage 2 and 3: GGUF --------------------------------------------------------------------


def _convert(hf_dir: Path, out: Path) -> None:
    from phi_lsp.models.convert import convert_hf_to_gguf

    convert_hf_to_gguf(hf_dir, out, "f16")


QUANT_TYPES = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}


def quantize(src: Path, dst: Path, kind: str = "q4_0", threads: int | None = None) -> None:
    """llama.cpp's quantizer, writing under a temporary name first."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[kind])
    params.nthread = threads or os.cpu_count() or 1
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        rc = llama_cpp.llama_model_quantize(
            str(src).encode(), str(tmp).encode(), ctypes.byref(params)
        )
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize({src} -> {kind}) returned {rc}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


# --- helpers ---------------------------------------------------------------------------------


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB


def _read_stages(record: Path) -> dict[str, Stage]:
    if not record.is_file():
        return {}
    try:
        raw: dict[str, Any] = json.loads(record.read_text())
        return {k: Stage(**v) for k, v in raw.items()}
    except (ValueError, TypeError):
        return {}


def print_stages(built: Built) -> None:
    print(f"{'stage':<34} {'time':>8} {'size':>10} {'peak RSS':>9}  file")
    for s in built.stages:
        print(
            f"{s.name:<34} {s.seconds:7.1f}s {s.bytes / 1e9:8.3f}GB {s.peak_rss_gb:7.2f}GiB"
            f"  {s.path}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model of the same kind")
    parser.add_argument("--root", type=Path, help="cache dir (default bench/.models/<name>/)")
    parser.add_argument("--force", action="store_true", help="rebuild everything")
    args = parser.parse_args(argv)
    shape = TINY if args.tiny else PHI1
    built = build(shape, args.root, args.force)
    print_stages(built)
    print(f"Q4_0: {built.gguf_q4_0}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH_DIR.parent))  # run from anywhere: phi_lsp is the repo's
    sys.exit(main())
