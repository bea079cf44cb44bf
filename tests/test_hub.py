"""phi_lsp.models.hub against a loopback fake of the Hugging Face hub (tests/fake_hub.py): complete
pulls, resume after a cut, hash checks (manifest, hub, trust-on-first-use lock), no pickles,
and the offline message. No network is used."""

from __future__ import annotations

import hashlib
import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url

from phi_lsp.models.hub import PulledFile, PullError, PullRecord, pull_files
from phi_lsp.models.manifests import KnownFile, Manifest

REPO = "fake-org/tiny-phi"
PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
)
WEIGHTS = "model.safetensors"
WEIGHTS_SIZE = 1_500_000
PICKLES = ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pkl", "last.ckpt")


def make_files(seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {
        "config.json": json.dumps({"model_type": "phi", "seed": seed}).encode(),
        "generation_config.json": b'{"eos_token_id": 0}',
        "tokenizer.json": json.dumps({"model": {"vocab": {"a": 0}}, "seed": seed}).encode(),
        "vocab.json": b'{"a": 0}',
        "merges.txt": b"#version: 0.2\na b\n",
        WEIGHTS: rng.randbytes(WEIGHTS_SIZE),
        "README.md": b"# tiny\n",
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    }
    for name in PICKLES:
        files[name] = rng.randbytes(50_000)
    return files


def manifest(
    files: tuple[str, ...] = PATTERNS,
    known: dict[str, KnownFile] | None = None,
    revision: str = "main",
) -> Manifest:
    return Manifest(
        name="tiny",
        hf_repo=REPO,
        revision=revision,
        license="MIT",
        parameters=1,
        context_length=128,
        eos_token_id=0,
        model_type="phi",
        gguf_architecture="phi2",
        default_quant="q4_0",
        prompt_format="code",
        files=files,
        known_files=known or {},
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


WANTED = sorted(
    p for p in make_files() if p not in PICKLES and p not in ("README.md", ".gitattributes")
)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, make_files())
        yield fake


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token, no offline flag, no endpoint from the environment, no HF cache outside tmp."""
    for var in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def staging(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.partial"


def leftovers(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(name)] if folder.exists() else []


def pull(
    hub: FakeHub, dest: Path, m: Manifest | None = None, lock: PullRecord | None = None
) -> PullRecord:
    return pull_files(m or manifest(), dest, lock=lock, progress=False, endpoint=hub.url)


# -- complete pulls -------------------------------------------------------------------------------
def test_complete_pull(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "tiny" / "hf"
    record = pull(hub, dest)
    files = make_files()

    assert record.repo == REPO
    assert record.revision == hub.head(REPO)
    assert [f.path for f in record.files] == WANTED
    for f in record.files:
        assert f == PulledFile(f.path, len(files[f.path]), sha256(files[f.path]))
        assert (dest / f.path).read_bytes() == files[f.path]
    assert sorted(p.name for p in dest.iterdir()) == WANTED
    assert not staging(dest).exists()
    # One model-info call, then only the files: no telemetry, no other endpoint.
    paths = [path for _, path in hub.log]
    assert paths[0] == f"/api/models/{REPO}/revision/main?blobs=true"
    assert all(f"/{REPO}/resolve/" in p or p.startswith(f"/_lfs/{REPO}/") for p in paths[1:])


def test_endpoint_from_hf_endpoint(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub reads HF_ENDPOINT once, at import; pull_files reads it when it runs."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    record = pull_files(manifest(), tmp_path / "hf")  # progress bars on: tqdm's own TTY check
    assert record.revision == hub.head(REPO)
    assert hub.log


def test_no_calls_beyond_the_files(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With telemetry on, huggingface_hub 2.x builds its user agent by fetching
    `{constants.ENDPOINT}/api/agent-harnesses` once a day; pull_files turns telemetry off.
    Pointing the import-time ENDPOINT at the fake makes such a call visible."""
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "harnesses.json"))
    monkeypatch.setattr(_detect_agent, "_registry", None)
    pull_files(manifest(), tmp_path / "hf", progress=False)
    paths = [path for _, path in hub.log]
    assert paths[0].startswith(f"/api/models/{REPO}/revision/main")
    assert all(f"/{REPO}/resolve/" in p or p.startswith(f"/_lfs/{REPO}/") for p in paths[1:])


def test_second_pull_reuses_verified_files(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "hf"
    first = pull(hub, dest)
    hub.reset_stats()
    again = pull(hub, dest, lock=first)
    assert again == first
    assert all(s.gets == 0 for s in hub.stats.values())


def test_pinned_revision(hub: FakeHub, tmp_path: Path) -> None:
    old = hub.head(REPO)
    hub.commit(REPO, make_files(seed=1))
    record = pull(hub, tmp_path / "hf", manifest(revision=old))
    assert record.revision == old
    assert (tmp_path / "hf" / WEIGHTS).read_bytes() == make_files()[WEIGHTS]


# -- resume ---------------------------------------------------------------------------------------
def test_cut_transfer_resumes(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx hands huggingface_hub the body in DOWNLOAD_CHUNK_SIZE pieces (10 MiB) and drops a
    # partial piece when the connection breaks; smaller pieces let a 1.5 MB file keep some bytes.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    dest = tmp_path / "tiny" / "hf"
    hub.cut_after(WEIGHTS, 1_000_000)  # then the "network" is gone: 503 until restore()

    with pytest.raises(PullError, match=WEIGHTS) as err:
        pull(hub, dest)
    assert "resume" in str(err.value)
    assert not (dest / WEIGHTS).exists()
    (part,) = leftovers(staging(dest), WEIGHTS)
    assert part.name.endswith(".incomplete")
    kept = part.stat().st_size
    assert 0 < kept <= 1_000_000

    hub.restore()
    hub.reset_stats()
    record = pull(hub, dest)

    weights = hub.file_stats(WEIGHTS)
    assert weights.gets == 1
    assert weights.ranges == [f"bytes={kept}-"]
    assert weights.bytes_served == WEIGHTS_SIZE - kept < WEIGHTS_SIZE
    assert (dest / WEIGHTS).read_bytes() == make_files()[WEIGHTS]
    assert record.file(WEIGHTS) == PulledFile(WEIGHTS, WEIGHTS_SIZE, sha256(make_files()[WEIGHTS]))
    # Files checked before the cut waited in the staging folder and were not fetched again.
    assert hub.file_stats("config.json").gets == 0
    assert not staging(dest).exists()


def test_partial_of_other_content_is_discarded(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial download of a file that changed upstream is not continued."""
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    dest = tmp_path / "hf"
    hub.cut_after(WEIGHTS, 700_000)
    with pytest.raises(PullError):
        pull(hub, dest)
    hub.restore()
    new = make_files(seed=2)
    hub.commit(REPO, new)
    hub.reset_stats()
    pull(hub, dest)
    assert hub.file_stats(WEIGHTS).ranges == [None]
    assert (dest / WEIGHTS).read_bytes() == new[WEIGHTS]


# -- hashes ---------------------------------------------------------------------------------------
def test_corrupt_download_is_rejected(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "hf"
    hub.corrupt(WEIGHTS)
    with pytest.raises(PullError) as err:
        pull(hub, dest)
    message = str(err.value)
    assert WEIGHTS in message
    assert sha256(make_files()[WEIGHTS]) in message  # expected (the hub's LFS sha256)
    served = bytearray(make_files()[WEIGHTS])
    for i in range(0, len(served), 64 * 1024):
        served[i] ^= 0xFF
    assert sha256(bytes(served)) in message  # actual
    assert not (dest / WEIGHTS).exists()
    assert leftovers(staging(dest), WEIGHTS) == []


def test_manifest_sha256_mismatch_stops_before_download(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "hf"
    wrong = "0" * 64
    with pytest.raises(PullError) as err:
        pull(hub, dest, manifest(known={WEIGHTS: KnownFile(sha256=wrong)}))
    assert WEIGHTS in str(err.value) and wrong in str(err.value)
    assert sha256(make_files()[WEIGHTS]) in str(err.value)
    assert hub.file_stats(WEIGHTS).gets == 0
    assert not (dest / WEIGHTS).exists()


def test_manifest_sha256_mismatch_on_small_file(hub: FakeHub, tmp_path: Path) -> None:
    """Non-LFS files have no sha256 on the hub: the check happens after the download."""
    dest = tmp_path / "hf"
    wrong = "1" * 64
    with pytest.raises(PullError) as err:
        pull(hub, dest, manifest(known={"config.json": KnownFile(sha256=wrong)}))
    assert "config.json" in str(err.value)
    assert wrong in str(err.value) and sha256(make_files()["config.json"]) in str(err.value)
    assert not (dest / "config.json").exists()
    assert leftovers(staging(dest), "config.json") == []


def test_manifest_size_is_enforced(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(PullError, match="size"):
        pull(hub, tmp_path / "hf", manifest(known={WEIGHTS: KnownFile(size=WEIGHTS_SIZE + 1)}))
    assert hub.file_stats(WEIGHTS).gets == 0


def test_manifest_known_file_must_exist(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(PullError, match="model-00001-of-00002.safetensors"):
        pull(
            hub, tmp_path / "hf", manifest(known={"model-00001-of-00002.safetensors": KnownFile()})
        )


def test_lock_pins_the_commit(hub: FakeHub, tmp_path: Path) -> None:
    first = pull(hub, tmp_path / "a")
    hub.commit(REPO, make_files(seed=3))  # main moves on
    again = pull(hub, tmp_path / "b", lock=first)
    assert again == first
    assert (tmp_path / "b" / WEIGHTS).read_bytes() == make_files()[WEIGHTS]


def test_lock_rejects_changed_small_file(hub: FakeHub, tmp_path: Path) -> None:
    first = pull(hub, tmp_path / "a")
    original = make_files()["config.json"]
    changed = original.replace(b'"phi"', b'"evl"')  # same size: caught by the hash, after download
    assert len(changed) == len(original) and changed != original
    hub.replace(REPO, "config.json", changed, commit=first.revision)
    dest = tmp_path / "b"
    with pytest.raises(PullError) as err:
        pull(hub, dest, lock=first)
    message = str(err.value)
    assert "config.json" in message
    assert first.file("config.json").sha256 in message  # type: ignore[union-attr]
    assert sha256(changed) in message
    assert not (dest / "config.json").exists()
    assert leftovers(staging(dest), "config.json") == []


def test_lock_rejects_changed_weights_before_download(hub: FakeHub, tmp_path: Path) -> None:
    first = pull(hub, tmp_path / "a")
    changed = random.Random(9).randbytes(WEIGHTS_SIZE)
    hub.replace(REPO, WEIGHTS, changed, commit=first.revision)
    hub.reset_stats()
    dest = tmp_path / "b"
    with pytest.raises(PullError) as err:
        pull(hub, dest, lock=first)
    assert WEIGHTS in str(err.value) and sha256(changed) in str(err.value)
    assert hub.file_stats(WEIGHTS).gets == 0
    assert not (dest / WEIGHTS).exists()


def test_lock_for_another_repo(hub: FakeHub, tmp_path: Path) -> None:
    lock = PullRecord("someone/else", "a" * 40, ())
    with pytest.raises(PullError, match="someone/else"):
        pull(hub, tmp_path / "hf", lock=lock)


# -- never pickles --------------------------------------------------------------------------------
def test_pickles_are_never_downloaded(hub: FakeHub, tmp_path: Path) -> None:
    dest = tmp_path / "hf"
    record = pull(hub, dest, manifest(files=("*", "*.bin", "*.pt")))
    pulled = {f.path for f in record.files}
    assert pulled == set(WANTED) | {"README.md", ".gitattributes"}
    for name in PICKLES:
        assert not (dest / name).exists()
        assert name not in hub.stats
    assert not any(f"/{name}" in path for _, path in hub.log for name in PICKLES)


def test_only_pickles_is_an_error(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(PullError, match="matches"):
        pull(hub, tmp_path / "hf", manifest(files=("*.bin",)))


# -- no hub ---------------------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint(tmp_path: Path) -> None:
    dest = tmp_path / "hf"
    with pytest.raises(PullError) as err:
        pull_files(manifest(), dest, progress=False, endpoint=f"http://127.0.0.1:{closed_port()}")
    message = str(err.value)
    assert "No network" in message
    assert "phi-lsp models import PATH --name tiny" in message
    assert not dest.exists() and not staging(dest).exists()


def test_offline_mode(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PullError, match="No network.*HF_HUB_OFFLINE"):
        pull(hub, tmp_path / "hf")
    assert hub.log == []


def test_unknown_repo_and_revision(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(PullError, match="has no revision 'nope'"):
        pull(hub, tmp_path / "hf", manifest(revision="nope"))
    other = manifest().model_copy(update={"hf_repo": "fake-org/missing"})
    with pytest.raises(PullError, match="no repo fake-org/missing"):
        pull(hub, tmp_path / "hf", other)


def test_one_pull_at_a_time(hub: FakeHub, tmp_path: Path) -> None:
    from filelock import FileLock

    dest = tmp_path / "hf"
    staging(dest).mkdir(parents=True)
    with FileLock(str(staging(dest) / ".lock")), pytest.raises(PullError, match="Another pull"):
        pull(hub, dest)
    assert (staging(dest) / ".lock").exists()  # the other pull's staging folder is left alone
    pull(hub, dest)
    assert not staging(dest).exists()


def test_hub_down(hub: FakeHub, tmp_path: Path) -> None:
    hub.outage = True
    with pytest.raises(PullError, match="503"):
        pull(hub, tmp_path / "hf")


# -- the fake speaks the hub's protocol -----------------------------------------------------------
def test_fake_hub_with_huggingface_hub(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    files = make_files()
    api = HfApi(endpoint=hub.url)
    assert api.list_repo_files(REPO) == sorted(files)
    info = api.model_info(REPO, files_metadata=True)
    assert info.sha == hub.head(REPO)
    weights = next(s for s in info.siblings or [] if s.rfilename == WEIGHTS)
    assert weights.lfs is not None and weights.lfs.sha256 == sha256(files[WEIGHTS])

    meta = get_hf_file_metadata(hf_hub_url(REPO, WEIGHTS, endpoint=hub.url), endpoint=hub.url)
    assert (meta.commit_hash, meta.etag, meta.size) == (
        hub.head(REPO),
        sha256(files[WEIGHTS]),
        WEIGHTS_SIZE,
    )

    local = hf_hub_download(REPO, "config.json", local_dir=tmp_path / "dl", endpoint=hub.url)
    assert Path(local).read_bytes() == files["config.json"]
