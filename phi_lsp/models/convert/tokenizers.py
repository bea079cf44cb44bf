"""The two tokenizer writers: GPT-2 style byte-level BPE (phi-1/1.5/2) and Llama/SentencePiece BPE
(phi-3), each read from the model folder with transformers' tokenizer classes (no torch) and
written the way llama.cpp expects (`tokenizer.ggml.model` "gpt2" or "llama").
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf

logger = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"


def check_tokenizer_files(hf_dir: Path) -> None:
    if (hf_dir / "tokenizer.json").is_file():
        return
    if (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        return
    raise ValueError(
        f"{hf_dir} has no tokenizer: expected tokenizer.json or vocab.json + merges.txt "
        f"(the CodeGen/GPT-2 BPE tokenizer files of the phi model)"
    )


def add_gpt2_tokenizer(writer: gguf.GGUFWriter, hf_dir: Path, vocab_size: int) -> None:
    """Write the GPT-2 style BPE vocabulary the way llama.cpp's own converter does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir), trust_remote_code=False)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{hf_dir}: the tokenizer has no fast (tokenizers) backend")
    tok_json = json.loads(backend.to_str())
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"{hf_dir}: expected a BPE tokenizer, got {model.get('type')!r}")

    vocab: dict[str, int] = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ValueError(
            f"{hf_dir}: tokenizer has token id {max(vocab.values())} but the model's "
            f"vocab_size is {vocab_size}"
        )
    added = tok.get_added_vocab()
    added_decoder = tok.added_tokens_decoder
    reverse = {i: t for t, i in vocab.items()}

    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            # Added tokens (e.g. CodeGen's whitespace runs) are stored as raw text; llama.cpp
            # matches USER_DEFINED/CONTROL tokens verbatim before BPE, like HF does.
            tokens.append(text)
            special = added_decoder[i].special if i in added_decoder else False
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)

    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    eot = vocab.get(ENDOFTEXT)
    if eot is None:
        eot = tok.eos_token_id
    if eot is None:
        raise ValueError(f"{hf_dir}: tokenizer has no {ENDOFTEXT} (or eos) token")

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_unk_token_id(eot)
    writer.add_add_bos_token(False)


_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
_SPIECE = "\u2581"  # ▁, SentencePiece's visible space


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """The components of a tokenizers normalizer/pre-tokenizer, Sequences flattened."""
    if isinstance(node, dict):
        yield node
        for key in ("normalizers", "pretokenizers"):
            for child in node.get(key) or []:
                yield from _walk(child)


def _space_handling(tok_json: dict[str, Any]) -> tuple[bool, bool]:
    """(spaces become ▁, a ▁ is prepended) for a Llama-style tokenizers pipeline."""
    escapes = prepends = False
    for n in _walk(tok_json.get("normalizer")):
        if n.get("type") == "Replace" and n.get("content") == _SPIECE:
            escapes = True
        elif n.get("type") == "Prepend" and n.get("prepend") == _SPIECE:
            prepends = True
    for n in _walk(tok_json.get("pre_tokenizer")):
        if n.get("type") == "Metaspace" and n.get("replacement", _SPIECE) == _SPIECE:
            escapes = True
            scheme = n.get("prepend_scheme")
            if scheme is None:  # tokenizers < 0.19 spelt it add_prefix_space
                scheme = "always" if n.get("add_prefix_space", True) else "never"
            prepends = prepends or scheme != "never"
    return escapes, prepends


def add_llama_tokenizer(writer: gguf.GGUFWriter, hf_dir: Path, vocab_size: int) -> None:
    """Write a Llama/SentencePiece BPE vocabulary (phi-3's) as llama.cpp's "llama" (SPM) model.

    llama.cpp's SPM tokenizer merges the adjacent pair whose concatenation is the token with
    the highest *score*; transformers' BPE applies *merges* by rank. Tokenizer.json files
    converted from SentencePiece list, for every token, all its splits into two tokens, ordered
    by the token's SentencePiece score, so score = -(rank of the first merge producing the
    token) gives llama.cpp the same merge order transformers uses. tokenizer.model (needing the
    sentencepiece package) is not read.

    tokenizer.json is loaded as it is, which is what AutoTokenizer does for phi3 (transformers
    5 lists it among models whose hub tokenizer_class, LlamaTokenizer, it ignores; 4.x loads
    the fast tokenizer from tokenizer.json) without parsing config.json a second time.
    """
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(hf_dir))
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{hf_dir}: the tokenizer has no fast (tokenizers) backend")
    tok_json = json.loads(backend.to_str())
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        raise ValueError(
            f"{hf_dir}: phi-3 conversion supports the Llama/SentencePiece BPE tokenizer "
            f"(BPE with byte_fallback), got {model.get('type')!r} with "
            f"byte_fallback={model.get('byte_fallback')!r} (byte-level GPT-2 style tokenizers, "
            f"e.g. Phi-4-mini's, are not supported)"
        )
    escapes, prepends = _space_handling(tok_json)
    if not escapes:
        raise ValueError(
            f"{hf_dir}: the tokenizer does not map spaces to '\u2581' (no Replace normalizer or "
            f"Metaspace pre-tokenizer); llama.cpp's SentencePiece tokenizer would differ"
        )

    vocab: dict[str, int] = tok.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ValueError(
            f"{hf_dir}: tokenizer has token id {max(vocab.values())} but the model's "
            f"vocab_size is {vocab_size}"
        )
    missing_bytes = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in vocab]
    if missing_bytes:
        raise ValueError(
            f"{hf_dir}: byte-fallback tokenizer lacks {len(missing_bytes)} byte tokens "
            f"(e.g. {missing_bytes[0]}); llama.cpp needs all 256"
        )

    merges: list[tuple[str, str]] = []
    for m in model.get("merges", []):
        pair = m.split(" ") if isinstance(m, str) else m
        if len(pair) != 2:
            raise ValueError(f"{hf_dir}: cannot read merge {m!r} in tokenizer.json")
        merges.append((pair[0], pair[1]))
    first_rank: dict[str, int] = {}
    for rank, (a, b) in enumerate(merges):
        first_rank.setdefault(a + b, rank)
    _warn_on_unlisted_splits(hf_dir, vocab, set(merges), first_rank)

    base_vocab: dict[str, int] = model.get("vocab") or {}
    added_decoder = tok.added_tokens_decoder
    unk_id = tok.unk_token_id
    reverse = {i: t for t, i in vocab.items()}
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(vocab_size):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            scores.append(-10000.0)
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(text)
        added = added_decoder.get(i)
        if i == unk_id:
            scores.append(0.0)
            types.append(gguf.TokenType.UNKNOWN)
        elif added is not None and added.special:
            scores.append(0.0 if text in base_vocab else -1000.0)
            types.append(gguf.TokenType.CONTROL)
        elif added is not None and text not in base_vocab:
            scores.append(-1000.0)
            types.append(gguf.TokenType.USER_DEFINED)
        elif _BYTE_TOKEN.fullmatch(text):
            scores.append(0.0)
            types.append(gguf.TokenType.BYTE)
        else:
            merge_rank = first_rank.get(text)
            # Tokens no merge produces (single characters) are never a bigram's result.
            scores.append(-float(merge_rank if merge_rank is not None else len(merges) + i))
            types.append(gguf.TokenType.NORMAL)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(prepends)
    for setter, tid in (
        (writer.add_bos_token_id, tok.bos_token_id),
        (writer.add_eos_token_id, tok.eos_token_id),
        (writer.add_unk_token_id, unk_id),
        (writer.add_pad_token_id, tok.pad_token_id),
    ):
        if isinstance(tid, int):
            setter(tid)
    # What transformers actually does when asked to add special tokens.
    probe = list(tok("a", add_special_tokens=True)["input_ids"])
    writer.add_add_bos_token(bool(probe) and probe[0] == tok.bos_token_id)
    writer.add_add_eos_token(len(probe) > 1 and probe[-1] == tok.eos_token_id)
    template = getattr(tok, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)


def _warn_on_unlisted_splits(
    hf_dir: Path,
    vocab: dict[str, int],
    merge_set: set[tuple[str, str]],
    first_rank: dict[str, int],
) -> None:
    """Warn when llama.cpp could form a token from a pair that transformers never merges.

    SentencePiece-converted tokenizer.json files list every split, so this stays silent for
    them; a BPE trained directly with `tokenizers` usually does not, and llama.cpp's tokens
    may then differ from transformers' on some inputs.
    """
    unlisted = 0
    example = ""
    for text in first_rank:
        for k in range(1, len(text)):
            left, right = text[:k], text[k:]
            if left in vocab and right in vocab and (left, right) not in merge_set:
                unlisted += 1
                example = example or f"{left!r} + {right!r}"
    if unlisted:
        logger.warning(
            "%s: %d token splits (e.g. %s) are not listed as merges; llama.cpp's SentencePiece "
            "tokenizer may split some text differently from transformers",
            hf_dir,
            unlisted,
            example,
        )
