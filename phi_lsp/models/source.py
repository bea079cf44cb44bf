"""Where the weights for the `model` setting are: a GGUF file, an HF folder, or both.

`model` is a path (a GGUF file, or a folder holding an HF model and/or GGUF files) or a name
(`phi-1`) looked up in phi-lsp's model cache, `$PHI_LSP_HOME/models/NAME/`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_cache_dir

from phi_lsp.errors import ModelLoadError

# When a folder holds several GGUF files, the first kind found in this order is used.
GGUF_PREFERENCE = ("q4_0", "q4_k_m", "q5_k_m", "q8_0", "f16", "f32")


def phi_lsp_home() -> Path:
    """phi-lsp's cache: models, logs. `PHI_LSP_HOME` moves it."""
    return Path(os.environ.get("PHI_LSP_HOME") or user_cache_dir("phi-lsp", appauthor=False))


def models_dir() -> Path:
    return phi_lsp_home() / "models"


@dataclass(frozen=True)
class ModelSource:
    label: str
    gguf: Path | None = None
    hf_dir: Path | None = None


def resolve_model(spec: str) -> ModelSource:
    """Find the files for `spec`, or raise ModelLoadError saying how to get them."""
    path = Path(spec).expanduser()
    if path.is_file():
        return ModelSource(path.name, gguf=path)
    if path.is_dir():
        return _from_folder(path, path.name)
    if os.sep in spec or "/" in spec or spec.endswith((".gguf", ".safetensors")):
        raise ModelLoadError(f"The model path {spec!r} does not exist.")
    cached = models_dir() / spec
    if cached.is_dir():
        return _from_folder(cached, spec)
    from phi_lsp.models.manifests import get_manifest

    if get_manifest(spec) is not None:
        raise ModelLoadError(
            f"Model {spec!r} is not downloaded yet. Run `phi-lsp models pull {spec}` once "
            f"(or `phi-lsp models import PATH --name {spec}` for files you already have)."
        )
    raise ModelLoadError(
        f"Model {spec!r} is not in phi-lsp's cache ({models_dir()}). Import a GGUF file or a "
        f"Hugging Face folder with `phi-lsp models import PATH --name {spec}` (or "
        f"`phi-lsp convert PATH --name {spec}`), or set phiLsp.model to its path."
    )


def _from_folder(folder: Path, label: str) -> ModelSource:
    hf_dir = folder if (folder / "config.json").is_file() else None
    if hf_dir is None and (folder / "hf" / "config.json").is_file():
        hf_dir = folder / "hf"
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs and hf_dir is None:
        raise ModelLoadError(f"{folder} holds neither a GGUF file nor an HF model (config.json).")
    return ModelSource(label, gguf=_preferred(ggufs), hf_dir=hf_dir)


def _preferred(ggufs: list[Path]) -> Path | None:
    for kind in GGUF_PREFERENCE:
        for path in ggufs:
            if path.stem.lower().endswith(kind):
                return path
    return ggufs[0] if ggufs else None
