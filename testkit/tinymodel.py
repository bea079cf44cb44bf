"""A tiny random-weight phi model with a real byte-level BPE tokenizer, for fast tests.

It has phi-1's structure (PhiForCausalLM, partial rotary, untied lm_head with bias, a vocab
padded beyond the tokenizer, CodeGen-like whitespace-run added tokens) at a size that builds
in seconds, so conversion and engines can be checked end to end without downloading phi-1.

`build_tiny_phi3_model` does the same for phi-3 (Phi3ForCausalLM with a Llama/SentencePiece
style BPE tokenizer with byte fallback).
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi_lsp.models.convert import convert_hf_to_gguf

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


def build_tokenizer(
    files: list[Path],
    vocab_size: int = TOKENIZER_VOCAB,
    whitespace_tokens: tuple[str, ...] = WHITESPACE_TOKENS,
) -> PreTrainedTokenizerFast:
    """Train a GPT-2 style byte-level BPE and wrap it as a transformers fast tokenizer.

    `whitespace_tokens` are added as plain tokens, as CodeGen (phi-1's tokenizer) adds its
    whitespace runs. bench/phi1_shape.py builds phi-1's full-size vocabulary with it too.
    """
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
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(p) for p in files], trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in whitespace_tokens])
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
        num_attention_heads=2,  # head size 32: fits q8_0 blocks (the V cache)
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


def llama_greedy(llm: Any, ids: list[int], n: int) -> list[int]:
    """The first `n` greedy tokens llama-cpp-python generates after `ids` (from an empty cache)."""
    out: list[int] = []
    for tok in llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(tok))
        if len(out) == n:
            break
    return out


# --- tiny phi-3 -------------------------------------------------------------------------------

SPIECE = "\u2581"  # ▁: SentencePiece's visible space
PHI3_SPECIALS = ("<unk>", "<s>", "</s>")
# Phi-3's added tokens, in its order (ids 32000..32010 there, right after the base vocab here).
PHI3_ADDED_TOKENS = (
    ENDOFTEXT,
    "<|assistant|>",
    "<|placeholder1|>",
    "<|placeholder2|>",
    "<|placeholder3|>",
    "<|placeholder4|>",
    "<|system|>",
    "<|end|>",
    "<|placeholder5|>",
    "<|placeholder6|>",
    "<|user|>",
)
# Like Llama's "▁▁", "▁▁▁▁", …: whitespace runs as pieces that merge last.
PHI3_WHITESPACE_PIECES = tuple(SPIECE * n for n in (2, 3, 4, 5, 6, 7, 8, 12, 16))
# Printable ASCII and ▁; everything else (newlines, tabs, non-ASCII) goes through byte fallback.
PHI3_ALPHABET = frozenset(chr(c) for c in range(33, 127)) | {SPIECE}
PHI3_BPE_TRAIN_VOCAB = 1800
PHI3_VOCAB_SIZE = 2176  # model rows; the tokenizer has fewer, like Phi-3 (32064 vs 32011)


@dataclass(frozen=True)
class TinyPhi3Model:
    hf_dir: Path
    gguf_f32: Path
    gguf_f16: Path


def _sentencepiece_style_pieces(files: list[Path]) -> list[tuple[str, float]]:
    """(piece, score) pairs shaped like a SentencePiece BPE model such as Llama's or Phi-3's.

    The `sentencepiece` package is not available, so a `tokenizers` BPE is trained on
    ▁-escaped text and its merge results become the pieces, scored by merge order.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizers.Replace(" ", SPIECE)
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPIECE, prepend_scheme="always", split=True
    )
    trainer = trainers.BpeTrainer(
        vocab_size=PHI3_BPE_TRAIN_VOCAB,
        initial_alphabet=sorted(PHI3_ALPHABET),
        limit_alphabet=len(PHI3_ALPHABET),
        show_progress=False,
    )
    trainer_tok.train([str(p) for p in files], trainer)
    merges = json.loads(trainer_tok.to_str())["model"]["merges"]

    pieces: list[tuple[str, float]] = [(p, -1e9) for p in PHI3_WHITESPACE_PIECES]
    seen = set(PHI3_WHITESPACE_PIECES)
    for merge in merges:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        piece = left + right
        # Substrings of a kept piece are kept too, so every piece stays reachable by merges.
        if piece in seen or not set(piece) <= PHI3_ALPHABET:
            continue
        seen.add(piece)
        pieces.append((piece, -float(len(pieces))))
    n = len(pieces)
    pieces += [(c, -float(n + i)) for i, c in enumerate(sorted(PHI3_ALPHABET - seen))]
    return pieces


def build_phi3_tokenizer(files: list[Path]) -> PreTrainedTokenizerFast:
    """A Llama/Phi-3 style tokenizer: SentencePiece BPE with byte fallback, as tokenizer.json.

    Layout as in Phi-3's tokenizer.json: <unk>, <s>, </s>, the 256 <0xXX> byte tokens, the
    pieces; a Prepend("▁") + Replace(" ", "▁") normalizer, no pre-tokenizer; merges listing
    every split of every piece in score order (what transformers' SentencePiece converter
    writes); the Phi-3 added tokens after the base vocabulary.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    scored = _sentencepiece_style_pieces(files)
    vocab_list = [*PHI3_SPECIALS, *(f"<0x{b:02X}>" for b in range(256))]
    vocab_list += [p for p, _ in scored]
    vocab = {p: i for i, p in enumerate(vocab_list)}
    assert len(vocab) == len(vocab_list)

    merges: list[tuple[str, str, float]] = []
    for piece, score in scored:
        splits = [
            (piece[:k], piece[k:], score)
            for k in range(1, len(piece))
            if piece[:k] in vocab and piece[k:] in vocab
        ]
        merges += sorted(splits, key=lambda m: (vocab[m[0]], vocab[m[1]]))
    merges.sort(key=lambda m: m[2], reverse=True)  # stable: ties keep piece order

    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(a, b) for a, b, _ in merges],
            unk_token="<unk>",
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPIECE), normalizers.Replace(" ", SPIECE)]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace(SPIECE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in PHI3_SPECIALS])
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in PHI3_ADDED_TOKENS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token=ENDOFTEXT,
        unk_token="<unk>",
        pad_token=ENDOFTEXT,
    )


def save_phi3_tokenizer(
    tokenizer: PreTrainedTokenizerFast, hf_dir: Path, tokenizer_class: str = "LlamaTokenizer"
) -> None:
    """Save with Phi-3's tokenizer_config settings.

    "LlamaTokenizer" is what Phi-3 ships; transformers 5 then rebuilds the pipeline with a
    Metaspace(prepend_scheme="first") pre-tokenizer. "TokenizersBackend" keeps tokenizer.json's
    Prepend normalizer as is (the legacy behaviour, which SentencePiece and llama.cpp share).
    """
    tokenizer.save_pretrained(hf_dir)
    path = hf_dir / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg.update(
        tokenizer_class=tokenizer_class, legacy=False, add_bos_token=False, add_eos_token=False
    )
    path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def build_tiny_phi3_model(
    root: Path,
    name: str = "tiny-phi3",
    *,
    tokenizer_from: Path | None = None,
    tokenizer_class: str = "LlamaTokenizer",
    **config_overrides: Any,
) -> TinyPhi3Model:
    """Build root/<name> (a random-weight Phi3ForCausalLM) and root/<name>-{f32,f16}.gguf.

    Phi-3-mini's structure (fused qkv_proj and gate_up_proj, RMSNorm, no biases, untied
    lm_head, sliding_window 2047, padded vocab) with grouped-query attention (4 heads, 2 KV
    heads) as in Phi-3-medium. `tokenizer_from` copies the tokenizer files of an earlier build
    instead of training again; `config_overrides` go to Phi3Config (e.g. LongRoPE settings).
    """
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    root = Path(root)
    hf_dir = root / name
    hf_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is None:
        tokenizer = build_phi3_tokenizer(training_files())
        save_phi3_tokenizer(tokenizer, hf_dir, tokenizer_class)
    else:
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (tokenizer_from / f).is_file():
                shutil.copy(tokenizer_from / f, hf_dir / f)
    vocab = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    eot = next(t["id"] for t in vocab if t["content"] == ENDOFTEXT)
    assert eot < PHI3_VOCAB_SIZE - 32

    settings: dict[str, Any] = dict(
        vocab_size=PHI3_VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        sliding_window=2047,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=eot,
        pad_token_id=eot,
        tie_word_embeddings=False,
        initializer_range=0.05,
    )
    settings.update(config_overrides)
    config = Phi3Config(**settings)
    torch.manual_seed(0)
    model = Phi3ForCausalLM(config).eval()
    with torch.no_grad():  # RMSNorm weights start at 1; make a swapped norm show in logits
        for pname, param in model.named_parameters():
            if "norm" in pname:
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
    model.save_pretrained(hf_dir, safe_serialization=True)

    gguf_f32 = convert_hf_to_gguf(hf_dir, root / f"{name}-f32.gguf", "f32")
    gguf_f16 = convert_hf_to_gguf(hf_dir, root / f"{name}-f16.gguf", "f16")
    return TinyPhi3Model(hf_dir=hf_dir, gguf_f32=gguf_f32, gguf_f16=gguf_f16)
