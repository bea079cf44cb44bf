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
file per call and deletes it on failure, huggingface_hub PR #4228), so `hub.download` drives
`huggingface_hub.file_download.http_get`, which takes a `resume_size`, itself.

`HF_ENDPOINT` is read when `pull_files` runs (huggingface_hub reads it once, at import), and
huggingface_hub's telemetry is switched off for the process (`HF_HUB_DISABLE_TELEMETRY=1`): no
request goes anywhere but the model-info and file URLs of the endpoint.

This module holds `pull_files`, which runs a pull; `plan` asks the hub and decides what to fetch
with which hashes, and `download` transfers and checks each file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub.utils import build_hf_headers

from phi_lsp.models.hub.download import download, exclusive, matches, tidy, verify
from phi_lsp.models.hub.plan import (
    FORBIDDEN_SUFFIXES,
    INFO_TIMEOUT,
    PulledFile,
    PullError,
    PullRecord,
    is_sha,
    model_info,
    offline_message,
    offline_mode,
    select_files,
)
from phi_lsp.models.manifests import Manifest

__all__ = [
    "FORBIDDEN_SUFFIXES",
    "INFO_TIMEOUT",
    "PullError",
    "PullRecord",
    "PulledFile",
    "pull_files",
]


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
    if offline_mode():
        raise PullError(offline_message(manifest, endpoint, "HF_HUB_OFFLINE is set"))
    if lock is not None and lock.repo != manifest.hf_repo:
        raise PullError(
            f"The lock of the previous pull of {manifest.name} is for {lock.repo}, but the "
            f"manifest now says {manifest.hf_repo}. Remove the model (`phi-lsp models rm "
            f"{manifest.name}`) and pull again to trust the new repo."
        )
    revision = lock.revision if lock is not None else manifest.revision
    api = HfApi(endpoint=endpoint)
    info = model_info(api, manifest, revision, endpoint, locked=lock is not None)
    commit = info.sha or ""
    if not is_sha(commit):
        raise PullError(
            f"{endpoint} answered without a commit SHA for {manifest.hf_repo}@{revision}; "
            "it does not look like a Hugging Face hub (check HF_ENDPOINT)."
        )
    if is_sha(revision) and commit != revision:
        raise PullError(
            f"Asked {endpoint} for commit {revision} of {manifest.hf_repo} and got {commit}."
        )
    wants = select_files(manifest, info.siblings or [], commit, lock)

    dest = Path(dest)
    staging = dest.parent / f".{dest.name}.partial"
    headers = build_hf_headers(headers={"Accept-Encoding": "identity"})
    pulled: list[PulledFile] = []
    staged: list[str] = []
    staging.mkdir(parents=True, exist_ok=True)
    with exclusive(staging, manifest.name):
        try:
            for want in wants:
                existing = dest / want.path
                if existing.is_file() and (sha := matches(existing, want)):
                    pulled.append(PulledFile(want.path, existing.stat().st_size, sha))
                    continue
                ready = staging / want.path
                if not (ready.is_file() and (sha := matches(ready, want))):
                    ready.unlink(missing_ok=True)
                    url = hf_hub_url(
                        manifest.hf_repo, want.path, revision=commit, endpoint=endpoint
                    )
                    part = download(url, staging, want, headers, manifest, endpoint, progress)
                    sha = verify(part, want, manifest)
                    os.replace(part, ready)
                pulled.append(PulledFile(want.path, ready.stat().st_size, sha))
                staged.append(want.path)
            # Every file is checked: only now does anything go into `dest`.
            for path in staged:
                target = dest / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / path, target)
        except BaseException:
            tidy(staging)  # keeps checked files and partial downloads for the next pull
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return PullRecord(manifest.hf_repo, commit, tuple(pulled))
