"""HF phi-3 → GGUF conversion: llama.cpp must see the same tokens, logits and greedy text as HF.

The tiny Phi3ForCausalLM (testkit/tinymodel.py) has Phi-3-mini's structure and a Llama/Phi-3
style SentencePiece BPE tokenizer with byte fallback; variants cover LongRoPE with a partial
rotary factor, the published config.json layout and tied embeddings.
"""

from __future__ import annotations

import json
import math
import shutil
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from needs import need_module

from phi_lsp.models.convert import convert_hf_to_gguf
from testkit.tinymodel import (
    ENDOFTEXT,
    PHI3_VOCAB_SIZE,
    PHI3_WHITESPACE_PIECES,
    TinyPhi3Model,
    build_tiny_phi3_model,
)

llama_cpp = need_module("llama_cpp")

PROMPT = '''import os


def list_python_files(root: str) -> list[str]:
    """Return all .py files below root."""
    result = []
    for dirpath, _dirs, files in os.walk(root):
'''

SNIPPETS = [
    PROMPT,
    "class Foo(Bar):\n    def __init__(self, x: int = 3) -> None:\n        self.x = x\n",
    "if x:\n\tif y:\n\t\t\treturn {'a': [1, 2.5e-3, None]}\n\t\t  # mixed\t \ttabs\n",
    "s = 'héllo wörld — naïve café ☕ 日本語 🐍'\nprint(f\"{s!r:>40}\")\n",
    "x  =  1                    # 20 spaces then a comment\n\n\n   \n" + " " * 37 + "y = 2\r\n",
    "        return self._value  # starts indented, as a mid-file prefix would\n",
    " leading space",
    "    ",
    "",
]

N_GREEDY = 32
N_STDLIB_FILES = 20


def _stdlib_files() -> list[Path]:
    """Real Python files outside the tokenizer's training set (top-level stdlib modules)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = (
        sorted((stdlib / "asyncio").glob("*.py"))[:10]
        + sorted((stdlib / "email").glob("*.py"))[:10]
    )
    return [p for p in files if p.stat().st_size > 0]


@pytest.fixture(scope="module")
def phi3(tmp_path_factory: pytest.TempPathFactory) -> TinyPhi3Model:
    return build_tiny_phi3_model(tmp_path_factory.mktemp("phi3"))


@pytest.fixture(scope="module")
def hf_model(phi3: TinyPhi3Model) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(phi3.hf_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(phi3: TinyPhi3Model) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(phi3.hf_dir)


def _open_f32(path: Path, n_ctx: int = 512) -> Any:
    # An f32 KV cache keeps the comparison with HF fp32 exact to ~1e-6 (default is f16).
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        logits_all=True,
        verbose=False,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
    )


@pytest.fixture(scope="module")
def llm_f32(phi3: TinyPhi3Model) -> Iterator[Any]:
    llm = _open_f32(phi3.gguf_f32)
    yield llm
    llm.close()


def _hf_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _fields(path: Path) -> dict[str, Any]:
    reader = gguf.GGUFReader(path)
    return {k: v.contents() for k, v in reader.fields.items()}


def _max_logit_diff(llm: Any, hf_model: Any, ids: list[int]) -> float:
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0].numpy()
    llm.reset()
    llm.eval(ids)
    ours = np.asarray(llm.scores[: len(ids)])
    assert ours.shape == ref.shape == (len(ids), PHI3_VOCAB_SIZE)
    assert float(ref.std()) > 0.05  # logits are not degenerate
    return float(np.abs(ours - ref).max())


# --- tokenizer ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", SNIPPETS, ids=range(len(SNIPPETS)))
def test_llama_tokens_match_hf(llm_f32: Any, hf_tokenizer: Any, text: str) -> None:
    ids = _hf_ids(hf_tokenizer, text)
    assert llm_f32.tokenize(text.encode("utf-8"), add_bos=False, special=False) == ids
    assert hf_tokenizer.decode(ids) == text
    # llama-cpp-python's detokenize keeps the "▁" SentencePiece prepends as a space.
    assert llm_f32.detokenize(ids).decode("utf-8") == (" " + text if text else "")


def test_llama_tokens_match_hf_on_stdlib_files(llm_f32: Any, hf_tokenizer: Any) -> None:
    files = _stdlib_files()
    assert len(files) == N_STDLIB_FILES
    used: set[int] = set()
    n_tokens = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        ids = _hf_ids(hf_tokenizer, text)
        assert llm_f32.tokenize(text.encode("utf-8"), add_bos=False, special=False) == ids, (
            path.name
        )
        used.update(ids)
        n_tokens += len(ids)
    assert n_tokens > 50_000
    # The corpus exercises byte fallback (every newline) and the whitespace-run pieces.
    assert hf_tokenizer.convert_tokens_to_ids("<0x0A>") in used
    ws_ids = {hf_tokenizer.convert_tokens_to_ids(p) for p in PHI3_WHITESPACE_PIECES}
    assert len(ws_ids & used) >= 3


def test_special_tokens_in_text(llm_f32: Any, hf_tokenizer: Any) -> None:
    """HF always parses added tokens in text; llama.cpp only with special=True."""
    specials = {t: hf_tokenizer.convert_tokens_to_ids(t) for t in ("<|end|>", "<|endoftext|>")}
    cases = {
        "x = 1<|end|>def f():\n    pass\n<|endoftext|>y": set(specials.values()),
        "<s> a </s><unk>\n": {1, 2, 0},
    }
    for text, in_text in cases.items():
        ids = _hf_ids(hf_tokenizer, text)
        assert in_text <= set(ids), text  # each special token is one id, as HF parses it
        assert llm_f32.tokenize(text.encode("utf-8"), add_bos=False, special=True) == ids
        plain = llm_f32.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert not {0, 1, 2, *specials.values()} & set(plain), text


def test_add_special_tokens_like_hf(llm_f32: Any, hf_tokenizer: Any) -> None:
    """Phi-3 does not add BOS (add_bos_token false); neither may llama.cpp."""
    for text in ("a", "def f():\n"):
        ref = list(hf_tokenizer(text)["input_ids"])
        assert llm_f32.tokenize(text.encode("utf-8"), add_bos=True, special=False) == ref


def test_gguf_metadata(phi3: TinyPhi3Model, hf_tokenizer: Any) -> None:
    f = _fields(phi3.gguf_f16)
    assert f["general.architecture"] == "phi3"
    assert f["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    expected = {
        "phi3.context_length": 4096,
        "phi3.rope.scaling.original_context_length": 4096,
        "phi3.embedding_length": 64,
        "phi3.feed_forward_length": 128,
        "phi3.block_count": 2,
        "phi3.attention.head_count": 4,
        "phi3.attention.head_count_kv": 2,
        "phi3.rope.dimension_count": 16,
        "phi3.attention.sliding_window": 2047,
    }
    assert {k: f[k] for k in expected} == expected
    assert f["phi3.rope.freq_base"] == pytest.approx(10000.0)
    assert f["phi3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert "phi3.rope.scaling.attn_factor" not in f

    assert f["tokenizer.ggml.model"] == "llama"
    assert f["tokenizer.ggml.pre"] == "default"
    assert f["tokenizer.ggml.add_bos_token"] is False
    assert f["tokenizer.ggml.add_eos_token"] is False
    assert f["tokenizer.ggml.add_space_prefix"] is True
    eot = hf_tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.unknown_token_id"]) == (1, 0)
    assert f["tokenizer.ggml.eos_token_id"] == f["tokenizer.ggml.padding_token_id"] == eot

    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    scores = f["tokenizer.ggml.scores"]
    assert len(tokens) == len(types) == len(scores) == PHI3_VOCAB_SIZE
    n = len(hf_tokenizer)
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, PHI3_VOCAB_SIZE)]
    assert set(types[n:]) == {gguf.TokenType.UNUSED}
    assert types[:3] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    assert tokens[3:259] == [f"<0x{b:02X}>" for b in range(256)]
    assert set(types[3:259]) == {gguf.TokenType.BYTE}
    for t in (ENDOFTEXT, "<|end|>", "<|user|>", "<|assistant|>"):
        i = hf_tokenizer.convert_tokens_to_ids(t)
        assert (tokens[i], types[i]) == (t, gguf.TokenType.CONTROL)
    assert set(types[259 : n - 11]) == {gguf.TokenType.NORMAL}

    names = {t.name: t for t in gguf.GGUFReader(phi3.gguf_f16).tensors}
    per_layer = ["attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"]
    assert set(names) == {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{b}.{t}.weight" for b in range(2) for t in per_layer
    }
    # GGUF lists dims innermost first: qkv is (n_embd, (4 + 2*2) * 16), gate+up (n_embd, 2*n_ff).
    assert [int(d) for d in names["blk.0.attn_qkv.weight"].shape] == [64, 128]
    assert [int(d) for d in names["blk.0.ffn_up.weight"].shape] == [64, 256]
    assert names["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert names["blk.0.ffn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_scores_follow_merge_order(phi3: TinyPhi3Model) -> None:
    """llama.cpp merges by token score; the scores must rank tokens as HF ranks merges."""
    tok_json = json.loads((phi3.hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok_json["model"]["vocab"]
    first: dict[str, int] = {}
    for rank, (a, b) in enumerate(tok_json["model"]["merges"]):
        first.setdefault(a + b, rank)
    ranked = sorted(first, key=first.__getitem__)
    scores = _fields(phi3.gguf_f32)["tokenizer.ggml.scores"]
    got = [scores[vocab[p]] for p in ranked]
    assert got == sorted(got, reverse=True)
    assert len(set(got)) == len(got)


# --- numerics -----------------------------------------------------------------------------


def test_logits_match_hf(llm_f32: Any, hf_model: Any, hf_tokenizer: Any) -> None:
    ids = _hf_ids(hf_tokenizer, PROMPT)
    assert 40 <= len(ids) <= 120
    assert _max_logit_diff(llm_f32, hf_model, ids) < 1e-3


def test_greedy_continuation_matches_hf(llm_f32: Any, hf_model: Any, hf_tokenizer: Any) -> None:
    eos = hf_tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    for prompt, n_new in ((PROMPT, N_GREEDY), (SNIPPETS[1], N_GREEDY // 2)):
        ids = _hf_ids(hf_tokenizer, prompt)
        with torch.no_grad():
            gen = hf_model.generate(
                torch.tensor([ids]), do_sample=False, max_new_tokens=n_new, pad_token_id=eos
            )
        ref = gen[0, len(ids) :].tolist()
        ours: list[int] = []
        for tok in llm_f32.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
            ours.append(int(tok))
            if len(ours) == n_new or tok == eos:  # HF stops after eos; llama.cpp does not
                break
        assert len(ref) >= 8
        assert ours == ref


def test_f16_gguf_loads_and_is_close(phi3: TinyPhi3Model, hf_model: Any, hf_tokenizer: Any) -> None:
    llm = llama_cpp.Llama(model_path=str(phi3.gguf_f16), n_ctx=256, logits_all=True, verbose=False)
    try:
        assert _max_logit_diff(llm, hf_model, _hf_ids(hf_tokenizer, PROMPT)) < 0.05
    finally:
        llm.close()


# --- LongRoPE, published config layout, tied embeddings -----------------------------------

LONGROPE_ORIG_CTX = 256
LONGROPE_CTX = 1024
# Divisors for each of the 6 rotary frequency pairs (partial_rotary_factor 0.75 of 16 dims).
LONG_FACTORS = [1.0, 1.5, 2.5, 4.0, 6.5, 9.0]
SHORT_FACTORS = [1.0, 1.05, 1.1, 1.2, 1.3, 1.5]


@pytest.fixture(scope="module")
def phi3_longrope(phi3: TinyPhi3Model) -> TinyPhi3Model:
    return build_tiny_phi3_model(
        phi3.hf_dir.parent,
        "tiny-phi3-longrope",
        tokenizer_from=phi3.hf_dir,
        max_position_embeddings=LONGROPE_CTX,
        original_max_position_embeddings=LONGROPE_ORIG_CTX,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.75,
            "long_factor": LONG_FACTORS,
            "short_factor": SHORT_FACTORS,
        },
    )


def test_longrope_metadata(phi3_longrope: TinyPhi3Model) -> None:
    f = _fields(phi3_longrope.gguf_f32)
    assert f["phi3.context_length"] == LONGROPE_CTX
    assert f["phi3.rope.scaling.original_context_length"] == LONGROPE_ORIG_CTX
    assert f["phi3.rope.dimension_count"] == 12
    expected_attn = math.sqrt(1 + math.log(LONGROPE_CTX / LONGROPE_ORIG_CTX) / math.log(256))
    assert f["phi3.rope.scaling.attn_factor"] == pytest.approx(expected_attn)
    tensors = {t.name: np.array(t.data) for t in gguf.GGUFReader(phi3_longrope.gguf_f32).tensors}
    np.testing.assert_allclose(tensors["rope_factors_long.weight"], LONG_FACTORS)
    np.testing.assert_allclose(tensors["rope_factors_short.weight"], SHORT_FACTORS)
    assert tensors["rope_factors_long.weight"].dtype == np.float32


@pytest.mark.parametrize(
    ("n_ctx", "n_tokens"),
    [(LONGROPE_ORIG_CTX, 64), (2 * LONGROPE_ORIG_CTX, LONGROPE_ORIG_CTX + 44)],
    ids=["short-factors", "long-factors"],
)
def test_longrope_logits_match_hf(
    phi3_longrope: TinyPhi3Model, hf_tokenizer: Any, n_ctx: int, n_tokens: int
) -> None:
    """llama.cpp picks the long factors when n_ctx > the original context, transformers when
    the sequence is longer than it; both sides agree when those coincide."""
    from transformers import AutoModelForCausalLM

    text = "\n".join(p.read_text(encoding="utf-8") for p in _stdlib_files()[:2])
    ids = _hf_ids(hf_tokenizer, text)[:n_tokens]
    assert len(ids) == n_tokens
    hf_model = AutoModelForCausalLM.from_pretrained(phi3_longrope.hf_dir, dtype=torch.float32)
    llm = _open_f32(phi3_longrope.gguf_f32, n_ctx=n_ctx)
    try:
        assert _max_logit_diff(llm, hf_model.eval(), ids) < 1e-3
    finally:
        llm.close()


@pytest.mark.parametrize("rope_type", ["longrope", "su"])
def test_published_config_layout(
    phi3_longrope: TinyPhi3Model, tmp_path: Path, rope_type: str
) -> None:
    """Phi-3's own config.json (rope_theta/partial_rotary_factor at top level, rope_scaling,
    possibly with the old type name "su") converts to the same file as transformers 5's
    rope_parameters layout."""
    src = tmp_path / phi3_longrope.hf_dir.name
    shutil.copytree(phi3_longrope.hf_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg.update(
        rope_theta=rope["rope_theta"],
        partial_rotary_factor=rope["partial_rotary_factor"],
        rope_scaling={
            "type": rope_type,
            "long_factor": rope["long_factor"],
            "short_factor": rope["short_factor"],
        },
    )
    (src / "config.json").write_text(json.dumps(cfg))
    out = convert_hf_to_gguf(src, tmp_path / "published.gguf", "f32")
    assert out.read_bytes() == phi3_longrope.gguf_f32.read_bytes()


def test_tied_embeddings(phi3: TinyPhi3Model, hf_tokenizer: Any, tmp_path: Path) -> None:
    """Without lm_head.weight llama.cpp's phi3 reuses token_embd as the output matrix."""
    from transformers import AutoModelForCausalLM

    tied = build_tiny_phi3_model(
        tmp_path, "tiny-phi3-tied", tokenizer_from=phi3.hf_dir, tie_word_embeddings=True
    )
    names = {t.name for t in gguf.GGUFReader(tied.gguf_f32).tensors}
    assert "token_embd.weight" in names
    assert "output.weight" not in names
    hf_model = AutoModelForCausalLM.from_pretrained(tied.hf_dir, dtype=torch.float32).eval()
    llm = _open_f32(tied.gguf_f32, n_ctx=256)
    try:
        assert _max_logit_diff(llm, hf_model, _hf_ids(hf_tokenizer, PROMPT)) < 1e-3
    finally:
        llm.close()


# --- errors -------------------------------------------------------------------------------


def _copy(phi3: TinyPhi3Model, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(phi3.hf_dir, src)
    return src


def test_byte_level_tokenizer_is_rejected(phi3: TinyPhi3Model, tmp_path: Path) -> None:
    """Phi-4-mini style (GPT-2 byte-level BPE) tokenizers are not SentencePiece-like."""
    src = _copy(phi3, tmp_path)
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["model"]["byte_fallback"] = False
    (src / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="byte_fallback"):
        convert_hf_to_gguf(src, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_unsupported_rope_type_is_rejected(phi3: TinyPhi3Model, tmp_path: Path) -> None:
    src = _copy(phi3, tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rope type 'linear'"):
        convert_hf_to_gguf(src, tmp_path / "out.gguf")


def test_missing_tokenizer_json_is_rejected(phi3: TinyPhi3Model, tmp_path: Path) -> None:
    src = _copy(phi3, tmp_path)
    (src / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="no tokenizer.json"):
        convert_hf_to_gguf(src, tmp_path / "out.gguf")


def test_bad_longrope_factors_are_rejected(phi3_longrope: TinyPhi3Model, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(phi3_longrope.hf_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_parameters"]["long_factor"] = LONG_FACTORS[:4]
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="must have 6 entries"):
        convert_hf_to_gguf(src, tmp_path / "out.gguf")


# --- other tokenizer.json layouts -----------------------------------------------------------


@pytest.mark.parametrize("scheme", ["first", "never"])
def test_metaspace_tokenizer_json(
    phi3: TinyPhi3Model, hf_tokenizer: Any, tmp_path: Path, scheme: str
) -> None:
    """The layout transformers 5's LlamaTokenizer saves: no normalizer, a Metaspace
    pre-tokenizer. Its prepend scheme decides tokenizer.ggml.add_space_prefix.

    With "first", HF does not add a second ▁ before text that starts with a space while
    llama.cpp (like SentencePiece) does, so only text starting with a non-space is compared.
    """
    from transformers import AutoTokenizer

    src = _copy(phi3, tmp_path)
    tok = json.loads((src / "tokenizer.json").read_text())
    tok["normalizer"] = None
    tok["pre_tokenizer"] = {
        "type": "Metaspace",
        "replacement": "\u2581",
        "prepend_scheme": scheme,
        "split": False,
    }
    (src / "tokenizer.json").write_text(json.dumps(tok))
    out = convert_hf_to_gguf(src, tmp_path / "m.gguf", "f32")
    assert _fields(out)["tokenizer.ggml.add_space_prefix"] is (scheme == "first")

    hf = AutoTokenizer.from_pretrained(src)
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=64, vocab_only=True, verbose=False)
    try:
        texts = [p.read_text(encoding="utf-8") for p in _stdlib_files()[:5]] + SNIPPETS[:5]
        for text in texts:
            assert not text.startswith(" ")
            ids = _hf_ids(hf, text)
            assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == ids
        if scheme == "first":  # same ids as the Prepend-normalizer layout
            assert _hf_ids(hf, SNIPPETS[0]) == _hf_ids(hf_tokenizer, SNIPPETS[0])
    finally:
        llm.close()


def test_unlisted_merge_splits_warn(
    phi3: TinyPhi3Model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SentencePiece-converted merges list every split of every token; when some are missing
    llama.cpp may merge pairs transformers never does, and the converter says so."""
    with caplog.at_level("WARNING", logger="phi_lsp.models.convert"):
        convert_hf_to_gguf(phi3.hf_dir, tmp_path / "ok.gguf", "f32")
    assert not [r for r in caplog.records if "not listed as merges" in r.getMessage()]

    src = _copy(phi3, tmp_path)
    tok = json.loads((src / "tokenizer.json").read_text())
    merges = tok["model"]["merges"]
    products = [a + b for a, b in merges]
    # Drop the second split of the first token that has two, keeping the token reachable.
    victim = next(i for i, p in enumerate(products) if products.count(p) > 1)
    second = products.index(products[victim], victim + 1)
    del merges[second]
    (src / "tokenizer.json").write_text(json.dumps(tok))
    caplog.clear()
    with caplog.at_level("WARNING", logger="phi_lsp.models.convert"):
        convert_hf_to_gguf(src, tmp_path / "warn.gguf", "f32")
    assert any("1 token splits" in r.getMessage() for r in caplog.records)
