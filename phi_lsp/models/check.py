"""Look inside model files before an engine does, so a bad one gets a message a user can act on.

llama.cpp answers a truncated or foreign file with "failed to load model", transformers with a
deserialization error; here we say which: not a model, cut short (an interrupted download), or
an architecture phi-lsp does not run. Only headers are read, so the checks are cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi_lsp.errors import ModelLoadError

SUPPORTED_ARCHITECTURES = ("phi2", "phi3")  # llama.cpp names
SUPPORTED_MODEL_TYPES = ("phi", "phi3")  # transformers names
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    context_length: int | None
    name: str | None
    size: int
    head_dim: int | None = None  # embedding length / attention heads


def check_gguf(path: Path) -> GGUFInfo:
    """Validate the header, the architecture and that every tensor's bytes are in the file."""
    import gguf  # a light import, but only needed when a GGUF is actually opened

    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist.")
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it does not start with 'GGUF').")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, IndexError, struct errors on bad headers
        raise ModelLoadError(
            f"{path} is damaged or truncated ({exc.__class__.__name__}: {exc}). "
            "Download or convert it again."
        ) from exc
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > size:
        raise ModelLoadError(
            f"{path} is truncated: {size} bytes, but its tensors need {end}. "
            "Download or convert it again."
        )
    arch = _field_str(reader, "general.architecture") or "unknown"
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(
            f"{path} is a {arch!r} model; phi-lsp runs phi models "
            f"(llama.cpp architectures {', '.join(SUPPORTED_ARCHITECTURES)})."
        )
    ctx = _field_int(reader, f"{arch}.context_length")
    width = _field_int(reader, f"{arch}.embedding_length")
    heads = _field_int(reader, f"{arch}.attention.head_count")
    head_dim = width // heads if width and heads else None
    return GGUFInfo(arch, ctx, _field_str(reader, "general.name"), size, head_dim)


def _field_str(reader: object, key: str) -> str | None:
    field = reader.fields.get(key)  # type: ignore[attr-defined]
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _field_int(reader: object, key: str) -> int | None:
    field = reader.fields.get(key)  # type: ignore[attr-defined]
    if field is None:
        return None
    return int(field.parts[field.data[0]][0])


def check_hf_folder(path: Path) -> dict[str, Any]:
    """Validate an HF folder: a phi config, a tokenizer, complete safetensors; return the config."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{path} has no config.json: it is not a Hugging Face model folder.")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config_path} cannot be read: {exc}") from exc
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{path} holds a {model_type!r} model; phi-lsp runs phi models "
            f"({', '.join(SUPPORTED_MODEL_TYPES)})."
        )
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelLoadError(
            f"{path} has no .safetensors weights (phi-lsp never loads pickled .bin files)."
        )
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        raise ModelLoadError(f"{path} has no tokenizer (tokenizer.json or vocab.json).")
    for weight in weights:
        check_safetensors(weight)
    return config


def check_safetensors(path: Path) -> None:
    """The header parses and every tensor's bytes are in the file."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        header_len = int.from_bytes(head, "little") if len(head) == 8 else size
        if header_len > size - 8:
            raise ModelLoadError(f"{path} is truncated or not a safetensors file.")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as exc:
            raise ModelLoadError(f"{path} has a damaged header: {exc}") from exc
    end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
    )
    if 8 + header_len + end > size:
        raise ModelLoadError(
            f"{path} is truncated: {size} bytes, but its tensors need {8 + header_len + end}. "
            "Download it again."
        )
