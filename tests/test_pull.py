"""`models pull` end to end against a loopback hub: download → convert → quantize → serve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub
from huggingface_hub import constants
from needs import need_module

from phi_lsp.models.manifests import get_manifest
from phi_lsp.models.store import StoreError, pull
from phi_lsp.runtime.verify import verify
from testkit.lsp_session import inline_completion, lsp_session, open_document, wait_for_loads
from testkit.tinymodel import TinyModel

REPO = "microsoft/phi-1"


@pytest.fixture
def hub(
    tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[FakeHub]:
    """The tiny model served as if it were microsoft/phi-1, plus a pickle that must be skipped."""
    files = {p.name: p.read_bytes() for p in tiny_model.hf_dir.iterdir() if p.is_file()}
    files["pytorch_model.bin"] = b"a pickle that must never be downloaded"
    monkeypatch.setenv("PHI_LSP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as fake:
        fake.add_repo(REPO, files)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def tiny_phi1_manifest():  # type: ignore[no-untyped-def]
    """The shipped phi-1 manifest, minus the real weights' size (the tiny model is smaller)."""
    manifest = get_manifest("phi-1")
    assert manifest is not None
    return manifest.model_copy(update={"known_files": {}})


async def test_pull_then_serve_by_name(hub: FakeHub, tmp_path: Path) -> None:
    need_module("llama_cpp")
    report = pull("phi-1", "q8_0", progress=False, manifest=tiny_phi1_manifest())
    folder = tmp_path / "home" / "models" / "phi-1"
    assert report.gguf == folder / "phi-1-q8_0.gguf" and report.gguf.is_file()
    assert report.revision == hub.head(REPO)
    assert not (folder / "hf" / "pytorch_model.bin").exists()
    assert hub.file_stats("pytorch_model.bin").gets == 0
    assert {"download", "convert_f16", "quantize_q8_0"} <= set(report.seconds)
    assert verify("phi-1", smoke_tokens=4).problems == []
    async with lsp_session(tmp_path, {"model": "phi-1", "maxNewTokens": 8}) as client:
        ends = await wait_for_loads(client)
        assert "ready" in ends[0] and "llamacpp" in ends[0]
        uri = (tmp_path / "a.py").as_uri()
        open_document(client, uri, "def add(a, b):\n    return a")
        await inline_completion(client, uri, 1, 12)  # answered (text is noise: random weights)


def test_second_pull_keeps_to_the_lock(hub: FakeHub, tmp_path: Path) -> None:
    need_module("llama_cpp")
    manifest = tiny_phi1_manifest()
    first = pull("phi-1", "f16", progress=False, manifest=manifest)
    weights = tmp_path / "home" / "models" / "phi-1" / "hf" / "model.safetensors"
    before = weights.read_bytes()
    # Upstream replaces the weights at the same commit: trust on first use rejects them.
    hub.replace(REPO, "model.safetensors", before[:-8] + b"\x00" * 8, commit=first.revision)
    (weights).unlink()
    with pytest.raises(StoreError, match="model.safetensors"):
        pull("phi-1", "f16", progress=False, manifest=manifest)
    assert not weights.exists()


def test_pull_without_network_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHI_LSP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(StoreError, match="phi-lsp models import"):
        pull("phi-1", progress=False)
