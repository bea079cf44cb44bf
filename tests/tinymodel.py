"""A tiny random-weight phi model with a real byte-level BPE tokenizer, for fast tests.

It has phi-1's structure (PhiForCausalLM, partial rotary, untied lm_head with bias, a vocab
padded beyond the tokenizer, CodeGen-like whitespace-run added tokens) at a size that builds
in seconds, so conversion and engines can be checked end to end without downloading phi-1.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phi_lsp.convert import convert_hf_to_gguf

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
VOCAB_SIZE = 2048  # model rows; the tokenizer has fewer tokens, like phi-1 (51200 vs 50295)
TOKENIZER_VOCAB = 2000
N_TRAIN_FILES = 120
# CodeGen adds whitespace runs as plain (non-special) added tokens; mimic that.
WHITESPACE_TOKENS = tuple(" " * n for n in range(2, 9)) + tuple("\t" * n for n in range(2, 5))


@dataclass(frozen=True)
class TinyModel:
    hf_dir: Path
    gguf_f32: Path
    gguf_f16: Path


def training_files(n: int = N_TRAIN_FILES) -> list[Path]:
    """A deterministic selection of this interpreter's stdlib modules (sorted, size-bounded)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(stdlib.glob("*.py")) if 2_000 <= p.stat().st_size <= 60_000]
    if len(files) < n // 2:
        raise RuntimeError(f"too few stdlib .py files under {stdlib} to train a tokenizer")
    return files[:n]


def build_tokenizer(files: list[Path]) -> PreTrainedTokenizerFast:
    """Train a GPT-2 style byte-level BPE and wrap it as a transformers fast tokenizer."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(p) for p in files], trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in WHITESPACE_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT
    )


def build_tiny_model(root: Path) -> TinyModel:
    """Build the HF folder root/tiny-phi and its conversions root/tiny-{f32,f16}.gguf."""
    import torch
    from transformers import PhiConfig, PhiForCausalLM

    root = Path(root)
    hf_dir = root / "tiny-phi"
    hf_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(training_files())
    eot = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    assert isinstance(eot, int) and len(tokenizer) <= VOCAB_SIZE

    # transformers 5 folds partial_rotary_factor into rope_parameters (its stubs omit the kwarg).
    config = PhiConfig(  # type: ignore[call-arg]
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=2048,
        partial_rotary_factor=0.5,
        bos_token_id=eot,
        eos_token_id=eot,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = PhiForCausalLM(config).eval()
    model.save_pretrained(hf_dir, safe_serialization=True)
    tokenizer.save_pretrained(hf_dir)

    gguf_f32 = convert_hf_to_gguf(hf_dir, root / "tiny-f32.gguf", "f32")
    gguf_f16 = convert_hf_to_gguf(hf_dir, root / "tiny-f16.gguf", "f16")
    return TinyModel(hf_dir=hf_dir, gguf_f32=gguf_f32, gguf_f16=gguf_f16)
