"""The model cache: import, verify, list and remove, on the tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFReader, LlamaFileType
from needs import need_module

from phi_lsp.models.source import resolve_model
from phi_lsp.models.store import StoreError, import_model, list_models, remove
from phi_lsp.runtime.verify import verify
from testkit.tinymodel import TinyModel


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PHI_LSP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_import_gguf_makes_the_name_resolve(home: Path, tiny_model: TinyModel) -> None:
    folder = import_model(tiny_model.gguf_f32, "tiny")
    source = resolve_model("tiny")
    assert source.gguf == folder / tiny_model.gguf_f32.name
    assert source.gguf.read_bytes() == tiny_model.gguf_f32.read_bytes()
    (row,) = [m for m in list_models() if m.name == "tiny"]
    assert row.cached and row.source == "import" and row.size > 0


def test_import_hf_folder_serves_both_engines(home: Path, tiny_model: TinyModel) -> None:
    """Import converts and quantizes as `pull` does after its download (q4_0 by default)."""
    need_module("llama_cpp")
    folder = import_model(tiny_model.hf_dir, "tiny-hf")
    source = resolve_model("tiny-hf")
    assert source.hf_dir is not None and source.gguf == folder / "tiny-hf-q4_0.gguf"
    assert sorted(p.name for p in folder.glob("*.gguf")) == [
        "tiny-hf-f16.gguf",
        "tiny-hf-q4_0.gguf",
    ]
    file_type = GGUFReader(source.gguf).fields["general.file_type"].contents()
    assert file_type == LlamaFileType.MOSTLY_Q4_0
    report = verify("tiny-hf", smoke_tokens=4)
    assert report.problems == [] and {"tiny-hf-q4_0.gguf", "tiny-hf-f16.gguf"} <= set(
        report.checked
    )
    assert report.smoke["transformers"].startswith("ok")
    assert report.smoke["llamacpp"].startswith("ok")


def test_import_hf_folder_with_another_quant(home: Path, tiny_model: TinyModel) -> None:
    need_module("llama_cpp")
    done = subprocess.run(
        [sys.executable, "-m", "phi_lsp", "models", "import", str(tiny_model.hf_dir)]
        + ["--name", "tiny-q8", "--quant", "q8_0"],
        env={**os.environ, "PHI_LSP_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert resolve_model("tiny-q8").gguf == home / "models" / "tiny-q8" / "tiny-q8-q8_0.gguf"


def test_verify_catches_a_changed_file(home: Path, tiny_model: TinyModel) -> None:
    folder = import_model(tiny_model.gguf_f32, "tiny")
    gguf = next(folder.glob("*.gguf"))
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    gguf.write_bytes(bytes(data))
    report = verify("tiny", smoke_tokens=4)
    assert any("sha256 does not match" in p for p in report.problems)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated", "truncated"),
        ("other-arch", "'gpt2' model"),
        ("no-tokenizer", "no tokenizer"),
        ("bin-only", "never loads pickled"),
    ],
)
def test_import_rejects_broken_models_and_leaves_nothing(
    home: Path, tmp_path: Path, tiny_model: TinyModel, damage: str, message: str
) -> None:
    if damage in ("truncated", "other-arch"):
        data = tiny_model.gguf_f32.read_bytes()
        path = tmp_path / "bad.gguf"
        path.write_bytes(
            data[: len(data) // 3] if damage == "truncated" else data.replace(b"phi2", b"gpt2", 1)
        )
    else:
        path = tmp_path / "bad-hf"
        shutil.copytree(tiny_model.hf_dir, path)
        for item in path.iterdir():
            if damage == "no-tokenizer" and item.name.startswith(("tokenizer", "vocab")):
                item.unlink()
            if damage == "bin-only" and item.suffix == ".safetensors":
                item.rename(item.with_name("pytorch_model.bin"))
    with pytest.raises(StoreError, match=message):
        import_model(path, "bad")
    assert not (home / "models" / "bad").exists()


def test_import_refuses_to_overwrite_and_rm_removes(home: Path, tiny_model: TinyModel) -> None:
    import_model(tiny_model.gguf_f32, "tiny")
    with pytest.raises(StoreError, match="exists already"):
        import_model(tiny_model.gguf_f16, "tiny")
    remove("tiny")
    assert not (home / "models" / "tiny").exists()
    with pytest.raises(StoreError):
        remove("tiny")
