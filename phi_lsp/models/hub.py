"""Download a manifest's files from the Hugging Face hub: verified, resumable, never pickles.

`pull_files` resolves the manifest's revision (or a previous pull's commit) to a commit SHA with
one model-info call, picks the repo files that match the manifest's patterns (never `*.bin`,
`*.pt`, `*.pkl`, `*.ckpt`: pickled weights can run code), and downloads each one through
huggingface_hub into a staging folder beside `dest` (`.<dest name>.partial`). A file is checked
(size, sha256, and the git blob id for small non-LFS files) before it counts; only when every
file is checked are they moved into `dest`. So `dest` never holds an unchecked file.

Where the hashes come from, strongest first: the lock of a previous pull (trust on first use:
the first pull records every file's sha256, later pulls of that commit must match it), the
manifest's `known_files`, and the hub's own LFS metadata. When two sources disagree the pull
stops before it downloads anything.

Resuming: each download goes to `<path>.<blob id>.incomplete` in the staging folder, which
survives a failed pull; the next pull continues it with an HTTP Range request. huggingface_hub's
own `hf_hub_download(local_dir=...)` no longer does that (2.4 writes a uniquely named temporary
file per call and deletes it on failure, huggingface_hub PR #4228), so this module drives
`huggingface_hub.file_download.http_get`, which takes a `resume_size`, itself.

`HF_ENDPOINT` is read when `pull_files` runs (huggingface_hub reads it once, at import), and
huggingface_hub's telemetry is switched off for the process (`HF_HUB_DISABLE_TELEMETRY=1`): no
request goes anywhere but the model-info and file URLs of the endpoint.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import hashlib
import importlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.hf_api import ModelInfo
from huggingface_hub.utils import build_hf_headers
from huggingface_hub.utils import tqdm as hf_tqdm

from phi_lsp.models.manifests import Manifest

# Pickled weights: loading them can run arbitrary code. Never fetched, whatever the patterns say.
FORBIDDEN_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Seconds to wait for the model-info call before calling the hub unreachable.
INFO_TIMEOUT = 20.0
_HASH_CHUNK = 1 << 20


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


_TRANSPORT_ERRORS = _transport_errors()


@dataclass(frozen=True)
class _Want:
    """One file to pull and everything known about it before the download."""

    path: str
    size: int | None
    size_from: str
    sha256: str | None
    sha256_from: str
    git_oid: str | None  # git blob id of a non-LFS file: sha1 over "blob <size>\0" + content
    key: str  # names the partial download; changes when the content does


def pull_files(
    manifest: Manifest,
    dest: Path,
    *,
    lock: PullRecord | None = None,
    progress: bool = True,
    endpoint: str | None = None,
) -> PullRecord:
    """Download `manifest`'s files into `dest` and return what was pulled.

    `lock`, the record of a previous pull, pins its commit and every file's sha256. `endpoint`
    defaults to `$HF_ENDPOINT`, then huggingface.co. Files already in `dest` that match are kept
    without a download. Raises PullError.
    """
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    constants.HF_HUB_DISABLE_TELEMETRY = True
    if _offline_mode():
        raise PullError(_offline_message(manifest, endpoint, "HF_HUB_OFFLINE is set"))
    if lock is not None and lock.repo != manifest.hf_repo:
        raise PullError(
            f"The lock of the previous pull of {manifest.name} is for {lock.repo}, but the "
            f"manifest now says {manifest.hf_repo}. Remove the model (`phi-lsp models rm "
            f"{manifest.name}`) and pull again to trust the new repo."
        )
    revision = lock.revision if lock is not None else manifest.revision
    api = HfApi(endpoint=endpoint)
    info = _model_info(api, manifest, revision, endpoint, locked=lock is not None)
    commit = info.sha or ""
    if not _is_sha(commit):
        raise PullError(
            f"{endpoint} answered without a commit SHA for {manifest.hf_repo}@{revision}; "
            "it does not look like a Hugging Face hub (check HF_ENDPOINT)."
        )
    if _is_sha(revision) and commit != revision:
        raise PullError(
            f"Asked {endpoint} for commit {revision} of {manifest.hf_repo} and got {commit}."
        )
    wants = _select(manifest, info.siblings or [], commit, lock)

    dest = Path(dest)
    staging = dest.parent / f".{dest.name}.partial"
    headers = build_hf_headers(headers={"Accept-Encoding": "identity"})
    pulled: list[PulledFile] = []
    staged: list[str] = []
    staging.mkdir(parents=True, exist_ok=True)
    with _exclusive(staging, manifest.name):
        try:
            for want in wants:
                existing = dest / want.path
                if existing.is_file() and (sha := _matches(existing, want)):
                    pulled.append(PulledFile(want.path, existing.stat().st_size, sha))
                    continue
                ready = staging / want.path
                if not (ready.is_file() and (sha := _matches(ready, want))):
                    ready.unlink(missing_ok=True)
                    url = hf_hub_url(
                        manifest.hf_repo, want.path, revision=commit, endpoint=endpoint
                    )
                    part = _download(url, staging, want, headers, manifest, endpoint, progress)
                    sha = _verify(part, want, manifest)
                    os.replace(part, ready)
                pulled.append(PulledFile(want.path, ready.stat().st_size, sha))
                staged.append(want.path)
            # Every file is checked: only now does anything go into `dest`.
            for path in staged:
                target = dest / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / path, target)
        except BaseException:
            _tidy(staging)  # keeps checked files and partial downloads for the next pull
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return PullRecord(manifest.hf_repo, commit, tuple(pulled))


# -- the hub's answer -------------------------------------------------------------------------
def _is_sha(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)


def _offline_mode() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or env.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline_message(manifest: Manifest, endpoint: str, reason: str) -> str:
    return (
        f"No network: phi-lsp cannot reach the Hugging Face hub at {endpoint} to download "
        f"{manifest.name} ({reason}). Connect and run the pull again (an interrupted download "
        f"resumes), or get the files of {manifest.hf_repo} on a machine with network access "
        f"(for instance `hf download {manifest.hf_repo} --local-dir {manifest.name}`), copy that "
        f"folder here and add it with `phi-lsp models import PATH --name {manifest.name}`."
    )


def _model_info(
    api: HfApi, manifest: Manifest, revision: str, endpoint: str, *, locked: bool
) -> ModelInfo:
    repo = manifest.hf_repo
    try:
        return api.model_info(repo, revision=revision, files_metadata=True, timeout=INFO_TIMEOUT)
    except GatedRepoError as exc:
        raise PullError(
            f"{repo} is gated: accept its terms on the hub, log in with `hf auth login`, and "
            f"pull again ({_first_line(exc)})."
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
            f"{_first_line(exc)}. Try again later."
        ) from exc
    except _TRANSPORT_ERRORS as exc:
        raise PullError(_offline_message(manifest, endpoint, _first_line(exc))) from exc


def _select(
    manifest: Manifest, siblings: Sequence[Any], commit: str, lock: PullRecord | None
) -> list[_Want]:
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
        wants.append(_Want(path, size, size_from, sha, sha_from, git_oid, key))
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


# -- download and checks ----------------------------------------------------------------------
class _NoBar(hf_tqdm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _download(
    url: str,
    staging: Path,
    want: _Want,
    headers: dict[str, str],
    manifest: Manifest,
    endpoint: str,
    progress: bool,
) -> Path:
    """Fetch `want` into its `.incomplete` file in `staging`, continuing one left by an earlier
    pull. The partial file is kept when the transfer breaks, so the next pull resumes it."""
    part = staging / f"{want.path}.{want.key}.incomplete"
    part.parent.mkdir(parents=True, exist_ok=True)
    pattern = glob.escape(str(staging / want.path)) + ".*.incomplete"
    for stale in glob.glob(pattern):
        if Path(stale) != part:
            Path(stale).unlink(missing_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if want.size is not None and have > want.size:
        part.unlink()
        have = 0
    try:
        with part.open("ab") as f:
            f.seek(0, os.SEEK_END)
            http_get(
                url,
                f,
                resume_size=have,
                headers=headers,
                expected_size=want.size,
                displayed_filename=want.path,
                tqdm_class=None if progress else _NoBar,
            )
    except HfHubHTTPError as exc:
        raise PullError(
            f"The hub refused {want.path} after {_got(part, want)}: {_first_line(exc)}. "
            "Run the pull again later; it resumes where it stopped."
        ) from exc
    except _TRANSPORT_ERRORS as exc:
        raise PullError(
            f"The download of {want.path} stopped after {_got(part, want)}. "
            + _offline_message(manifest, endpoint, _first_line(exc))
        ) from exc
    except OSError as exc:  # huggingface_hub's size check, or a local disk problem
        if want.size is not None and part.exists() and part.stat().st_size > want.size:
            part.unlink()
        raise PullError(
            f"Downloading {want.path} failed: {_first_line(exc)}. Run the pull again."
        ) from exc
    return part


def _got(part: Path, want: _Want) -> str:
    have = part.stat().st_size if part.exists() else 0
    return f"{have:,} of {want.size:,} bytes" if want.size is not None else f"{have:,} bytes"


def _verify(part: Path, want: _Want, manifest: Manifest) -> str:
    """Size, sha256 and git blob id of a finished download; a file that fails is deleted.
    Returns its sha256."""
    sha, problem = _check(part, want)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise PullError(
            f"{want.path} failed verification: {problem}. The download was deleted and nothing "
            f"was installed. Run the pull again; if it fails the same way the files upstream are "
            f"not the ones expected (remove the model with `phi-lsp models rm {manifest.name}` "
            "to trust new files)."
        )
    return sha


def _matches(path: Path, want: _Want) -> str | None:
    """The sha256 of a file already on disk when it is the one wanted, checked by hash (a file
    with no known hash to check against is never taken as is)."""
    if want.sha256 is None and want.git_oid is None:
        return None
    if want.size is not None and path.stat().st_size != want.size:
        return None
    sha, problem = _check(path, want)
    return sha if problem is None else None


def _check(path: Path, want: _Want) -> tuple[str, str | None]:
    """(sha256, what is wrong with the file or None)."""
    size = path.stat().st_size
    sha, oid = _digests(path)
    if want.size is not None and size != want.size:
        return sha, f"expected {want.size:,} bytes ({want.size_from}), got {size:,} (sha256 {sha})"
    if want.sha256 is not None and sha != want.sha256:
        return sha, f"expected sha256 {want.sha256} ({want.sha256_from}), got sha256 {sha}"
    if want.git_oid is not None and oid != want.git_oid:
        return (
            sha,
            f"expected git blob {want.git_oid} (the hub's file list), got {oid} (sha256 {sha})",
        )
    return sha, None


def _digests(path: Path) -> tuple[str, str]:
    """sha256 and git blob id of a file, read once, in chunks."""
    sha = hashlib.sha256()
    git = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(_HASH_CHUNK):
            sha.update(block)
            git.update(block)
    return sha.hexdigest(), git.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# -- the staging folder -----------------------------------------------------------------------
@contextlib.contextmanager
def _exclusive(staging: Path, name: str) -> Iterator[None]:
    """One pull at a time per destination."""
    from filelock import FileLock, Timeout  # a huggingface_hub dependency

    lock = FileLock(str(staging / ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise PullError(f"Another pull of {name} is running; wait for it to finish.") from exc
    try:
        yield
    finally:
        lock.release()


def _tidy(staging: Path) -> None:
    """Drop the staging folder once it holds nothing worth resuming."""
    if not staging.is_dir():
        return
    if not any(p.is_file() and p.name != ".lock" for p in staging.rglob("*")):
        shutil.rmtree(staging, ignore_errors=True)
