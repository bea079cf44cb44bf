"""phi-lsp's model cache: pull, import, verify and remove models by name.

Layout, one folder per model under `models_dir()`:

    NAME/hf/              the Hugging Face files (config, safetensors, tokenizer)
    NAME/NAME-q4_0.gguf   GGUF files, one per quantization
    NAME/lock.json        where it came from, the resolved commit and every file's sha256

Every file is written under a temporary name and renamed into place, so an interrupted pull or
import never leaves a file that looks complete. The lock is what `verify` checks against, and
what a later pull of the same model must match (trust on first use).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phi_lsp.errors import ModelLoadError
from phi_lsp.fs import atomic_copy, atomic_write_bytes
from phi_lsp.models.check import check_gguf, check_hf_folder
from phi_lsp.models.manifests import Manifest, get_manifest, manifests
from phi_lsp.models.source import models_dir

LOCK = "lock.json"
HF_SUBDIR = "hf"
# Files an imported HF folder contributes; weights only as safetensors, never pickles.
HF_FILE_PATTERNS = ("*.json", "*.safetensors", "merges.txt", "tokenizer.model", "*.txt")


class StoreError(Exception):
    """A model operation that cannot proceed; the message says what to do."""


@dataclass
class Lock:
    name: str
    source: str  # "pull" or "import"
    repo: str | None = None
    revision: str | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative path → size, sha256

    def save(self, folder: Path) -> None:
        atomic_write_bytes(folder / LOCK, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, folder: Path) -> Lock | None:
        path = folder / LOCK
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


def model_dir(name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise StoreError(f"{name!r} is not a valid model name.")
    return models_dir() / name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def gguf_name(name: str, quant: str) -> str:
    return f"{name}-{quant}.gguf"


# -- pull -------------------------------------------------------------------------------------
@dataclass
class PullReport:
    name: str
    revision: str
    gguf: Path
    seconds: dict[str, float]
    sizes: dict[str, int]


def pull(
    name: str,
    quant: str | None = None,
    *,
    progress: bool = True,
    manifest: Manifest | None = None,
) -> PullReport:
    """Download a manifest's model, convert it to GGUF and quantize it."""
    manifest = manifest or get_manifest(name)
    if manifest is None:
        known = ", ".join(manifests())
        raise StoreError(f"No manifest named {name!r}. Known models: {known}.")
    quant = quant or manifest.default_quant
    folder = model_dir(name)
    lock = Lock.load(folder)
    seconds: dict[str, float] = {}

    from phi_lsp.models.hub import PulledFile, PullError, PullRecord, pull_files

    previous = None
    if lock is not None and lock.source == "pull" and lock.revision:
        previous = PullRecord(
            repo=lock.repo or manifest.hf_repo,
            revision=lock.revision,
            files=tuple(
                PulledFile(path=p[len(HF_SUBDIR) + 1 :], size=v["size"], sha256=v["sha256"])
                for p, v in lock.files.items()
                if p.startswith(HF_SUBDIR + "/")
            ),
        )
    t0 = time.perf_counter()
    try:
        record = pull_files(manifest, folder / HF_SUBDIR, lock=previous, progress=progress)
    except PullError as exc:
        raise StoreError(str(exc)) from exc
    seconds["download"] = time.perf_counter() - t0
    lock = Lock(name=name, source="pull", repo=record.repo, revision=record.revision)
    for f in record.files:
        lock.files[f"{HF_SUBDIR}/{f.path}"] = {"size": f.size, "sha256": f.sha256}
    lock.save(folder)
    gguf, conv_seconds = build_gguf(name, manifest, quant, lock)
    seconds.update(conv_seconds)
    sizes = {p.name: p.stat().st_size for p in folder.glob("*.gguf")}
    return PullReport(name, record.revision, gguf, seconds, sizes)


def build_gguf(
    name: str, manifest: Manifest | None, quant: str, lock: Lock
) -> tuple[Path, dict[str, float]]:
    """Convert the cached HF folder to F16 GGUF, then quantize; record hashes in the lock."""
    from phi_lsp.models.convert import convert_hf_to_gguf

    folder = model_dir(name)
    seconds: dict[str, float] = {}
    target = folder / gguf_name(name, quant)
    f16 = folder / gguf_name(name, "f16")
    if not f16.is_file():
        t0 = time.perf_counter()
        convert_hf_to_gguf(folder / HF_SUBDIR, f16, "f16")
        seconds["convert_f16"] = time.perf_counter() - t0
    if quant != "f16":
        from phi_lsp.models.quantize import quantize_gguf

        t0 = time.perf_counter()
        quantize_gguf(f16, target, quant)
        seconds[f"quantize_{quant}"] = time.perf_counter() - t0
    for path in folder.glob("*.gguf"):
        lock.files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    lock.save(folder)
    return target, seconds


# -- import -----------------------------------------------------------------------------------
def import_model(path: Path, name: str | None = None, quant: str = "q4_0") -> Path:
    """Adopt a GGUF file or an HF folder into the cache under `name` (checked first).

    An HF folder is then converted and quantized to `quant` as `pull` does after its download,
    so the imported model serves on both engines.
    """
    path = path.expanduser().resolve()
    name = name or (path.stem if path.is_file() else path.name)
    folder = model_dir(name)
    if folder.exists() and any(folder.iterdir()):
        raise StoreError(
            f"A model named {name!r} exists already ({folder}); remove it first "
            f"with `phi-lsp models rm {name}` or choose another --name."
        )
    lock = Lock(name=name, source="import")
    try:
        if path.is_file():
            check_gguf(path)
            dst = folder / (path.name if path.suffix == ".gguf" else f"{name}.gguf")
            atomic_copy(path, dst)
            lock.files[dst.name] = {"size": dst.stat().st_size, "sha256": sha256_file(dst)}
        elif path.is_dir():
            check_hf_folder(path)
            check_tokenizer(path)
            for src in sorted(p for pat in HF_FILE_PATTERNS for p in path.glob(pat)):
                rel = f"{HF_SUBDIR}/{src.name}"
                atomic_copy(src, folder / rel)
                lock.files[rel] = {"size": src.stat().st_size, "sha256": sha256_file(src)}
            build_gguf(name, None, quant, lock)  # what `pull` does after its download
        else:
            raise StoreError(f"{path} does not exist.")
    except (ModelLoadError, ValueError, RuntimeError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise StoreError(str(exc)) from exc
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    lock.save(folder)
    return folder


def check_tokenizer(path: Path) -> None:
    """The folder's tokenizer loads and round-trips a line of Python."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"{path}: the tokenizer does not load ({exc}).") from exc
    sample = "def add(a, b):\n    return a + b\n"
    if tok.decode(tok.encode(sample, add_special_tokens=False)) != sample:
        raise ModelLoadError(f"{path}: the tokenizer does not round-trip Python source.")


# -- verify, list, remove ---------------------------------------------------------------------
def check_files(name: str) -> tuple[Path, list[str], list[str]]:
    """(folder, problems, checked files): every file in the lock, by size and sha256.

    Loading and a smoke generation (`phi-lsp models verify`) are `runtime.verify`'s part."""
    folder = model_dir(name)
    if not folder.is_dir():
        raise StoreError(f"{name!r} is not in the cache ({models_dir()}).")
    lock = Lock.load(folder)
    problems, checked = [], []
    for rel, meta in (lock.files if lock else {}).items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != meta["size"] or sha256_file(path) != meta["sha256"]:
            problems.append(f"{rel}: sha256 does not match the lock (file changed or damaged)")
        else:
            checked.append(rel)
    if lock is None:
        problems.append(f"no {LOCK}: hashes cannot be checked")
    return folder, problems, checked


@dataclass
class CachedModel:
    name: str
    cached: bool
    size: int
    quants: list[str]
    license: str
    source: str


def list_models() -> list[CachedModel]:
    """Every manifest model (cached or not) and every other cached model."""
    rows = []
    root = models_dir()
    others = sorted(p.name for p in root.glob("*") if p.is_dir() and p.name not in manifests())
    for name in [*manifests(), *others]:
        folder = root / name
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        ggufs = sorted(p.stem.removeprefix(f"{name}-") for p in folder.glob("*.gguf"))
        manifest = get_manifest(name)
        lock = Lock.load(folder) if folder.is_dir() else None
        rows.append(
            CachedModel(
                name=name,
                cached=bool(ggufs) or (folder / HF_SUBDIR / "config.json").is_file(),
                size=sum(p.stat().st_size for p in files),
                quants=ggufs,
                license=manifest.license if manifest else "?",
                source=lock.source if lock else ("manifest" if manifest else "?"),
            )
        )
    return rows


def remove(name: str) -> None:
    folder = model_dir(name)
    if not folder.exists():
        raise StoreError(f"{name!r} is not in the cache.")
    shutil.rmtree(folder)
