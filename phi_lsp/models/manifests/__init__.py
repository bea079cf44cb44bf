"""Model manifests: what phi-lsp knows about each model it can pull.

The `*.toml` files beside this module ship as package data and are read with importlib.resources
(a checkout without symlinks, or a zipped install, finds them too).

One small TOML file per model, validated here. A manifest pins the Hugging Face repo and
revision, lists the files to fetch (never pickled `.bin` weights), and records what the engines
need that the model's own files do not say (phi-1's config has no eos id, for instance).
"""

from __future__ import annotations

import sys
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

QUANTS = ("q4_0", "q4_k_m", "q8_0", "f16")
Quant = Literal["q4_0", "q4_k_m", "q8_0", "f16"]


class KnownFile(BaseModel):
    """What is known ahead of the download about one file; unknown hashes are recorded on pull."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    hf_repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = Field(min_length=1)
    license: str
    parameters: int = Field(gt=0)
    context_length: int = Field(gt=0)
    eos_token_id: int = Field(ge=0)
    model_type: Literal["phi", "phi3"]
    gguf_architecture: Literal["phi2", "phi3"]
    default_quant: Quant
    prompt_format: str
    files: tuple[str, ...] = Field(min_length=1)
    known_files: dict[str, KnownFile] = Field(default_factory=dict)

    @property
    def pinned(self) -> bool:
        """True when `revision` is a commit SHA rather than a branch."""
        return len(self.revision) == 40 and all(c in "0123456789abcdef" for c in self.revision)


def load_manifest(path: Traversable) -> Manifest:
    with path.open("rb") as f:
        return Manifest.model_validate(tomllib.load(f))


@cache
def manifests() -> dict[str, Manifest]:
    """Every shipped manifest by name, in name order."""
    tomls = [p for p in files(__package__).iterdir() if p.name.endswith(".toml")]
    found = sorted((load_manifest(p) for p in tomls), key=lambda m: m.name)
    return {m.name: m for m in found}


def get_manifest(name: str) -> Manifest | None:
    return manifests().get(name)
