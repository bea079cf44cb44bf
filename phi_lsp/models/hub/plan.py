"""What to pull: the hub's answer (one model-info call), the files the manifest picks from it, and
every size and hash known for each before anything is downloaded; plus the records a pull
returns and the error it raises.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import ModelInfo

from phi_lsp.models.manifests import Manifest

# Pickled weights: loading them can run arbitrary code. Never fetched, whatever the patterns say.
FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Seconds to wait for the model-info call before calling the hub unreachable.
INFO_TIMEOUT = 20.0


@dataclass(frozen=True)
class PulledFile:
    path: str  # relative to `dest`, "/"-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class PullRecord:
    repo: str
    revision: str  # the resolved commit SHA
    files: tuple[PulledFile, ...]

    def file(self, path: str) -> PulledFile | None:
        return next((f for f in self.files if f.path == path), None)


class PullError(Exception):
    """A pull that cannot complete; the message says what happened and what to do."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level failures (no route, refused, reset, timeout), whatever HTTP library
    this huggingface_hub uses (httpx2 in 2.x, httpx in 1.x, requests before)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()


@dataclass(frozen=True)
class Want:
    """One file to pull and everything known about it before the download."""

    path: str
    size: int | None
    size_from: str
    sha256: str | None
    sha256_from: str
    git_oid: str | None  # git blob id of a non-LFS file: sha1 over "blob <size>\0" + content
    key: str  # names the partial download; changes when the content does


# -- the hub's answer -------------------------------------------------------------------------
def is_sha(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def offline_mode() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline_message(manifest: Manifest, endpoint: str, reason: str) -> str:
    return (
        f"No network: phi-lsp cannot reach the Hugging Face hub at {endpoint} to download "
        f"{manifest.name} ({reason}). Connect and run the pull again (an interrupted download "
        f"resumes), or get the files of {manifest.hf_repo} on a machine with network access "
        f"(for instance `hf download {manifest.hf_repo} --local-dir {manifest.name}`), copy that "
        f"folder here and add it with `phi-lsp models import PATH --name {manifest.name}`."
    )


def model_info(
    api: HfApi, manifest: Manifest, revision: str, endpoint: str, *, locked: bool
) -> ModelInfo:
    repo = manifest.hf_repo
    try:
        return api.model_info(repo, revision=revision, files_metadata=True, timeout=INFO_TIMEOUT)
    except GatedRepoError as exc:
        raise PullError(
            f"{repo} is gated: accept its terms on the hub, log in with `hf auth login`, and "
            f"pull again ({first_line(exc)})."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise PullError(
            f"{endpoint} has no repo {repo} (or it is private). Check `hf_repo` in the "
            f"manifest for {manifest.name}."
        ) from exc
    except RevisionNotFoundError as exc:
        if locked:
            raise PullError(
                f"{repo} no longer has commit {revision}, which the previous pull of "
                f"{manifest.name} recorded. Remove the model (`phi-lsp models rm "
                f"{manifest.name}`) and pull again to trust the current files."
            ) from exc
        raise PullError(
            f"{repo} has no revision {revision!r}; check `revision` in the manifest for "
            f"{manifest.name}."
        ) from exc
    except HfHubHTTPError as exc:
        raise PullError(
            f"The hub at {endpoint} refused the file list of {repo}@{revision}: "
            f"{first_line(exc)}. Try again later."
        ) from exc
    except TRANSPORT_ERRORS as exc:
        raise PullError(offline_message(manifest, endpoint, first_line(exc))) from exc


def select_files(
    manifest: Manifest, siblings: Sequence[Any], commit: str, lock: PullRecord | None
) -> list[Want]:
    """The repo files the manifest asks for, with every size and hash known for each."""
    by_path = {s.rfilename: s for s in siblings}
    chosen = sorted(
        path
        for path in by_path
        if any(fnmatch.fnmatchcase(path, pat) for pat in manifest.files)
        and not path.lower().endswith(FORBIDDEN_SUFFIXES)
    )
    where = f"{manifest.hf_repo}@{commit}"
    for path in manifest.known_files:
        if path not in by_path:
            raise PullError(
                f"The manifest for {manifest.name} expects {path}, but {where} has no such file."
            )
    if lock is not None:
        for pf in lock.files:
            if pf.path not in by_path:
                raise PullError(
                    f"{pf.path}, recorded by the previous pull of {manifest.name}, is missing "
                    f"from {where}. Remove the model (`phi-lsp models rm {manifest.name}`) and "
                    "pull again to trust the current files."
                )
    if not chosen:
        raise PullError(
            f"No file of {where} matches the manifest's patterns ({', '.join(manifest.files)})."
        )
    wants = []
    for path in chosen:
        _check_path(path, where)
        sib = by_path[path]
        lfs = sib.lfs
        known = manifest.known_files.get(path)
        locked = lock.file(path) if lock is not None else None
        size, size_from = _agree(
            path,
            "size",
            manifest,
            [
                ("the previous pull's lock", locked.size if locked else None),
                (f"the manifest for {manifest.name}", known.size if known else None),
                ("the hub's file list", lfs.size if lfs is not None else sib.size),
            ],
        )
        sha, sha_from = _agree(
            path,
            "sha256",
            manifest,
            [
                ("the previous pull's lock", locked.sha256 if locked else None),
                (f"the manifest for {manifest.name}", known.sha256 if known else None),
                ("the hub's LFS metadata", lfs.sha256 if lfs is not None else None),
            ],
        )
        git_oid = sib.blob_id if lfs is None else None
        key = (sha or sib.blob_id or commit)[:16]
        wants.append(Want(path, size, size_from, sha, sha_from, git_oid, key))
    return wants


def _agree(
    path: str, what: str, manifest: Manifest, sources: list[tuple[str, Any]]
) -> tuple[Any, str]:
    """The value the sources agree on (None if none knows it); PullError if they disagree."""
    known = [(src, value) for src, value in sources if value is not None]
    for src, value in known[1:]:
        if value != known[0][1]:
            first_src, first = known[0]
            raise PullError(
                f"{path}: {first_src} says {what} {first}, but {src} says {value}. The files "
                f"upstream changed; nothing was downloaded. If you trust the new files, remove "
                f"the model (`phi-lsp models rm {manifest.name}`) or update the manifest, and "
                "pull again."
            )
    if not known:
        return None, ""
    src, value = known[0]
    return value, src


def _check_path(path: str, where: str) -> None:
    if "\\" in path or ":" in path or any(p in ("", ".", "..") for p in path.split("/")):
        raise PullError(f"{where} lists an unsafe file name {path!r}; refusing to pull.")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
