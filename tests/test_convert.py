"""HF phi → GGUF conversion: llama.cpp must see the same tokens, logits and greedy text as HF."""

from __future__ import annotations

import copy
import json
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

from phi_lsp.models.convert import common as convert
from phi_lsp.models.convert import convert_hf_to_gguf
from testkit.tinymodel import (
    ENDOFTEXT,
    WHITESPACE_TOKENS,
    TinyModel,
    build_tiny_model,
    llama_greedy,
)

# ~50 tokens of ordinary Python for the logits and greedy comparisons.
PROMPT = '''import os


def list_python_files(root: str) -> list[str]:
    """Return all .py files below root."""
    result = []
    for dirpath, _dirs, files in os.walk(root):
'''

# Real-looking snippets that stress the pre-tokenizer and the added whitespace tokens.
SNIPPETS = [
    PROMPT,
    "class Foo(Bar):\n    def __init__(self, x: int = 3) -> None:\n        self.x = x\n",
    "if x:\n\tif y:\n\t\t\treturn {'a': [1, 2.5e-3, None]}\n\t\t  # mixed\t \ttabs\n",
    "s = 'héllo wörld — naïve café ☕ 日本語 🐍'\nprint(f\"{s!r:>40}\")\n",
    "x  =  1                    # 20 spaces then a comment\n\n\n   \n" + " " * 37 + "y = 2\r\n",
    "def f():\n    pass\n\n\n\nasync def g(*args, **kw):\n    await h()  # don't\n",
    "    ",
    "",
]

N_GREEDY = 32


@pytest.fixture(scope="module")
def hf_model(tiny_model: TinyModel) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model.hf_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model: TinyModel) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model.hf_dir)


@pytest.fixture(scope="module")
def llm_f32(tiny_model: TinyModel) -> Iterator[Any]:
    llama_cpp = need_module("llama_cpp")
    llm = llama_cpp.Llama(
        model_path=str(tiny_model.gguf_f32),
        n_ctx=512,
        logits_all=True,
        verbose=False,
        # An f32 KV cache keeps the comparison with HF fp32 exact to ~1e-5 (default is f16).
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
    )
    yield llm
    llm.close()


def _hf_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _read_tensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    reader = gguf.GGUFReader(path)
    return {t.name: np.array(t.data) for t in reader.tensors}


# --- tokenizer and metadata ---------------------------------------------------------------


@pytest.mark.parametrize("text", SNIPPETS, ids=range(len(SNIPPETS)))
def test_llama_tokens_match_hf(llm_f32: Any, hf_tokenizer: Any, text: str) -> None:
    ours = llm_f32.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    assert ours == _hf_ids(hf_tokenizer, text)
    assert llm_f32.detokenize(ours).decode("utf-8") == text


def test_llama_tokens_match_hf_on_stdlib_files(llm_f32: Any, hf_tokenizer: Any) -> None:
    """Whole files the tokenizer was not trained on (the tiny model trains on top-level ones)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("json/*.py"))[:4] + sorted(stdlib.glob("email/*.py"))[:4]
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        ours = llm_f32.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert ours == _hf_ids(hf_tokenizer, text), path.name


def test_special_token_in_text(llm_f32: Any, hf_tokenizer: Any) -> None:
    """HF always parses <|endoftext|> in text; llama.cpp only with special=True."""
    text = "x = 1\n<|endoftext|>def f():\n    pass\n"
    ours = llm_f32.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    assert ours == _hf_ids(hf_tokenizer, text)
    assert hf_tokenizer.convert_tokens_to_ids(ENDOFTEXT) in ours
    plain = llm_f32.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    assert hf_tokenizer.convert_tokens_to_ids(ENDOFTEXT) not in plain


def test_whitespace_added_tokens_are_used(hf_tokenizer: Any) -> None:
    """The snippets must exercise the added-token path, or the test above proves little."""
    added = {hf_tokenizer.convert_tokens_to_ids(t) for t in WHITESPACE_TOKENS}
    used = {i for s in SNIPPETS for i in _hf_ids(hf_tokenizer, s)}
    assert len(added & used) >= 4


def test_gguf_metadata(tiny_model: TinyModel, hf_tokenizer: Any) -> None:
    reader = gguf.GGUFReader(tiny_model.gguf_f16)
    f = {k: v.contents() for k, v in reader.fields.items()}
    assert f["general.architecture"] == "phi2"
    assert f["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert f["phi2.rope.dimension_count"] == 16  # 0.5 * (64 / 2)
    assert f["phi2.block_count"] == 2
    assert f["tokenizer.ggml.model"] == "gpt2"
    assert f["tokenizer.ggml.pre"] == "gpt-2"
    assert f["tokenizer.ggml.add_bos_token"] is False
    eot = hf_tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    for key in ("bos_token_id", "eos_token_id", "unknown_token_id"):
        assert f[f"tokenizer.ggml.{key}"] == eot

    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 2048
    n = len(hf_tokenizer)
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, 2048)]
    assert set(types[n:]) == {gguf.TokenType.UNUSED}
    assert types[eot] == gguf.TokenType.CONTROL
    for t in WHITESPACE_TOKENS:
        i = hf_tokenizer.convert_tokens_to_ids(t)
        assert (tokens[i], types[i]) == (t, gguf.TokenType.USER_DEFINED)
    merges = f["tokenizer.ggml.merges"]
    assert merges and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)

    types_by_name = {t.name: t.tensor_type for t in reader.tensors}
    assert types_by_name["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert types_by_name["blk.1.ffn_up.weight"] == gguf.GGMLQuantizationType.F16
    assert types_by_name["blk.1.ffn_up.bias"] == gguf.GGMLQuantizationType.F32
    assert types_by_name["output_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert len(types_by_name) == 1 + 2 + 2 + 2 * 14  # embd, output, output_norm, 14 per layer


# --- numerics -----------------------------------------------------------------------------


def test_logits_match_hf(llm_f32: Any, hf_model: Any, hf_tokenizer: Any) -> None:
    ids = _hf_ids(hf_tokenizer, PROMPT)
    assert 40 <= len(ids) <= 70
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0].numpy()
    llm_f32.reset()
    llm_f32.eval(ids)
    ours = np.asarray(llm_f32.scores[: len(ids)])
    assert ours.shape == ref.shape == (len(ids), 2048)
    assert float(ref.std()) > 0.05  # logits are not degenerate
    assert float(np.abs(ours - ref).max()) < 1e-3


def test_greedy_continuation_matches_hf(llm_f32: Any, hf_model: Any, hf_tokenizer: Any) -> None:
    ids = _hf_ids(hf_tokenizer, PROMPT)
    with torch.no_grad():
        gen = hf_model.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=N_GREEDY, pad_token_id=0
        )
    ref = gen[0, len(ids) :].tolist()
    ours = llama_greedy(llm_f32, ids, N_GREEDY)
    eos = hf_tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    if eos in ours:  # HF stops after eos; llama.cpp's generate() does not
        ours = ours[: ours.index(eos) + 1]
    assert len(ref) >= 8
    assert ours == ref


def test_f16_gguf_loads_and_is_close(
    tiny_model: TinyModel, hf_model: Any, hf_tokenizer: Any
) -> None:
    llama_cpp = need_module("llama_cpp")
    ids = _hf_ids(hf_tokenizer, PROMPT)
    llm = llama_cpp.Llama(
        model_path=str(tiny_model.gguf_f16), n_ctx=256, logits_all=True, verbose=False
    )
    try:
        llm.eval(ids)
        ours = np.asarray(llm.scores[: len(ids)])
    finally:
        llm.close()
    with torch.no_grad():
        ref = hf_model(torch.tensor([ids])).logits[0].numpy()
    assert np.isfinite(ours).all()
    assert float(np.abs(ours - ref).max()) < 0.05


# --- source formats -----------------------------------------------------------------------


def _copy_tokenizer(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


def test_bf16_sharded_source(tiny_model: TinyModel, hf_model: Any, tmp_path: Path) -> None:
    """bf16 weights split over shards with an index: what phi-2's repo ships."""
    src = tmp_path / "bf16"
    copy.deepcopy(hf_model).to(torch.bfloat16).save_pretrained(src, max_shard_size="200KB")
    _copy_tokenizer(tiny_model.hf_dir, src)
    assert (src / "model.safetensors.index.json").is_file()

    out = convert_hf_to_gguf(src, tmp_path / "bf16.gguf", "f32")
    tensors = _read_tensors(out)
    expected = hf_model.model.layers[1].mlp.fc1.weight.detach().to(torch.bfloat16).float()
    np.testing.assert_array_equal(tensors["blk.1.ffn_up.weight"], expected.numpy())
    assert tensors["output.bias"].dtype == np.float32


def test_fp16_source_to_f16(tiny_model: TinyModel, hf_model: Any, tmp_path: Path) -> None:
    """fp16 weights (phi-1's published format) pass through to F16 unchanged."""
    src = tmp_path / "fp16"
    copy.deepcopy(hf_model).to(torch.float16).save_pretrained(src)
    _copy_tokenizer(tiny_model.hf_dir, src)
    tensors = _read_tensors(convert_hf_to_gguf(src, tmp_path / "fp16.gguf"))
    expected = hf_model.model.embed_tokens.weight.detach().to(torch.float16).numpy()
    np.testing.assert_array_equal(tensors["token_embd.weight"], expected)


def test_phi1_style_top_level_rotary_factor(tiny_model: TinyModel, tmp_path: Path) -> None:
    """phi-1's config.json has partial_rotary_factor at top level, not in rope_parameters."""
    src = tmp_path / "phi1cfg"
    shutil.copytree(tiny_model.hf_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg.update(partial_rotary_factor=0.25, rope_theta=10000.0, bos_token_id=None)
    (src / "config.json").write_text(json.dumps(cfg))
    reader = gguf.GGUFReader(convert_hf_to_gguf(src, tmp_path / "m.gguf", "f32"))
    assert reader.fields["phi2.rope.dimension_count"].contents() == 8  # 0.25 * (64 / 2)


# --- errors and atomicity -----------------------------------------------------------------


def test_not_phi_config_is_rejected(tiny_model: TinyModel, tmp_path: Path) -> None:
    src = tmp_path / "llama"
    shutil.copytree(tiny_model.hf_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"model_type 'llama'.*only phi models"):
        convert_hf_to_gguf(src, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_missing_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no config.json"):
        convert_hf_to_gguf(tmp_path, tmp_path / "out.gguf")


def test_no_safetensors_is_rejected(tiny_model: TinyModel, tmp_path: Path) -> None:
    src = tmp_path / "bin-only"
    src.mkdir()
    shutil.copy(tiny_model.hf_dir / "config.json", src / "config.json")
    _copy_tokenizer(tiny_model.hf_dir, src)
    (src / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match=r"no \.safetensors weights.*pytorch_model\.bin"):
        convert_hf_to_gguf(src, tmp_path / "out.gguf")


def test_missing_tokenizer_is_rejected(tiny_model: TinyModel, tmp_path: Path) -> None:
    src = tmp_path / "no-tok"
    src.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model.hf_dir / name, src / name)
    with pytest.raises(ValueError, match="no tokenizer"):
        convert_hf_to_gguf(src, tmp_path / "out.gguf")


def test_interrupted_conversion_leaves_nothing(
    tiny_model: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.gguf"
    real = convert._load_tensors

    def failing(specs: list[Any]) -> Iterator[np.ndarray[Any, Any]]:
        for i, arr in enumerate(real(specs)):
            if i == 5:
                raise KeyboardInterrupt
            yield arr

    monkeypatch.setattr(convert, "_load_tensors", failing)
    with pytest.raises(KeyboardInterrupt):
        convert_hf_to_gguf(tiny_model.hf_dir, out)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_replaced(tiny_model: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "out.gguf"
    out.write_bytes(b"stale")
    convert_hf_to_gguf(tiny_model.hf_dir, out, "f16")
    assert out.read_bytes() == tiny_model.gguf_f16.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]


@pytest.mark.slow
def test_tiny_model_is_deterministic(tiny_model: TinyModel, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again.hf_dir / name).read_bytes() == (tiny_model.hf_dir / name).read_bytes()
    assert again.gguf_f32.read_bytes() == tiny_model.gguf_f32.read_bytes()
