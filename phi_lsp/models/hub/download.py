"""Download and check one file: resumable HTTP transfers into a staging folder (continued with a
Range request), the size/sha256/git-blob checks a file must pass before it counts, and the lock
that allows one pull at a time per destination.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import tqdm as hf_tqdm

from phi_lsp.models.hub.plan import (
    TRANSPORT_ERRORS,
    PullError,
    Want,
    first_line,
    offline_message,
)
from phi_lsp.models.manifests import Manifest

_HASH_CHUNK = 1 << 20


class _NoBar(hf_tqdm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def download(
    url: str,
    staging: Path,
    want: Want,
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
            f"The hub refused {want.path} after {_got(part, want)}: {first_line(exc)}. "
            "Run the pull again later; it resumes where it stopped."
        ) from exc
    except TRANSPORT_ERRORS as exc:
        raise PullError(
            f"The download of {want.path} stopped after {_got(part, want)}. "
            + offline_message(manifest, endpoint, first_line(exc))
        ) from exc
    except OSError as exc:  # huggingface_hub's size check, or a local disk problem
        if want.size is not None and part.exists() and part.stat().st_size > want.size:
            part.unlink()
        raise PullError(
            f"Downloading {want.path} failed: {first_line(exc)}. Run the pull again."
        ) from exc
    return part


def _got(part: Path, want: Want) -> str:
    have = part.stat().st_size if part.exists() else 0
    return f"{have:,} of {want.size:,} bytes" if want.size is not None else f"{have:,} bytes"


def verify(part: Path, want: Want, manifest: Manifest) -> str:
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


def matches(path: Path, want: Want) -> str | None:
    """The sha256 of a file already on disk when it is the one wanted, checked by hash (a file
    with no known hash to check against is never taken as is)."""
    if want.sha256 is None and want.git_oid is None:
        return None
    if want.size is not None and path.stat().st_size != want.size:
        return None
    sha, problem = _check(path, want)
    return sha if problem is None else None


def _check(path: Path, want: Want) -> tuple[str, str | None]:
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


# -- the staging folder -----------------------------------------------------------------------
@contextlib.contextmanager
def exclusive(staging: Path, name: str) -> Iterator[None]:
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


def tidy(staging: Path) -> None:
    """Drop the staging folder once it holds nothing worth resuming."""
    if not staging.is_dir():
        return
    if not any(p.is_file() and p.name != ".lock" for p in staging.rglob("*")):
        shutil.rmtree(staging, ignore_errors=True)
