"""A loopback stand-in for the Hugging Face hub, for download tests without a network.

It serves one or more model repos from memory with the endpoints huggingface_hub (2.x) calls:

    GET  /api/models/{repo}                         model info at main
    GET  /api/models/{repo}/revision/{rev}          model info; `?blobs=True` adds each sibling's
                                                    size, blobId and lfs {size, sha256, pointerSize}
    GET  /api/models/{repo}/tree/{rev}[/{path}]     tree listing (`?recursive=True`), one page
    HEAD /{repo}/resolve/{rev}/{path}               file metadata: X-Repo-Commit, ETag,
    GET  /{repo}/resolve/{rev}/{path}               X-Linked-Etag / X-Linked-Size (LFS files),
                                                    Content-Length, Accept-Ranges; a Range
                                                    (`bytes=a-`, `a-b`, `-n`) answers 206 with
                                                    Content-Range, LFS files 302 to /_lfs/...
    GET  /_lfs/{repo}/{commit}/{path}               where LFS files redirect (302) to, like the CDN

`rev` is a branch (`main`) or a commit SHA; errors carry the hub's `X-Error-Code`
(RepoNotFound, RevisionNotFound, EntryNotFound), which huggingface_hub turns into its exceptions.

Faults, for the tests: `cut_after(path, n)` sends the headers and n body bytes of the next GET of
`path`, then drops the connection (and, by default, answers 503 to everything after that until
`restore()`: the network "went away"); `corrupt(path)` serves wrong bytes under the right
metadata; `replace(path, data)` changes a file in place at the current commit (metadata updated,
commit unchanged: a hub that rewrote history). `stats[path]` counts requests and body bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt", ".gguf", ".h5", ".msgpack")
_CHUNK = 64 * 1024


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
    )


@dataclass
class FileStats:
    """What the fake served for one file path (all revisions)."""

    heads: int = 0
    gets: int = 0
    bytes_served: int = 0
    ranges: list[str | None] = field(default_factory=list)  # each GET's Range header


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """`with FakeHub() as hub: hub.add_repo("org/name", {...}); ... hub.url ...`"""

    def __init__(self, *, lfs_redirect: bool = True) -> None:
        self.lfs_redirect = lfs_redirect
        self.repos: dict[str, _Repo] = {}
        self.stats: dict[str, FileStats] = {}
        self.log: list[tuple[str, str]] = []  # (method, path?query) of every request
        self.outage = False  # answer 503 to everything
        self._cuts: dict[str, tuple[int, bool]] = {}
        self._corrupt: set[str] = set()
        self._lock = threading.Lock()
        self._commits = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- content --------------------------------------------------------------------------------
    def add_repo(self, repo: str, files: dict[str, bytes]) -> str:
        """Create `repo` with one commit holding `files`; returns the commit SHA."""
        self.repos[repo] = _Repo()
        return self.commit(repo, files)

    def commit(self, repo: str, files: dict[str, bytes]) -> str:
        """A new commit on main holding exactly `files`; returns its SHA."""
        with self._lock:
            self._commits += 1
            digest = hashlib.sha1(f"{repo}#{self._commits}".encode(), usedforsecurity=False)
            for path in sorted(files):
                digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
            sha = digest.hexdigest()
            self.repos[repo].commits[sha] = dict(files)
            self.repos[repo].branches["main"] = sha
            return sha

    def head(self, repo: str) -> str:
        return self.repos[repo].branches["main"]

    def replace(self, repo: str, path: str, data: bytes, commit: str | None = None) -> None:
        """Change a file in place at `commit` (main's by default), metadata and all: a hub
        whose history was rewritten."""
        with self._lock:
            self.repos[repo].commits[commit or self.head(repo)][path] = data

    # -- faults ---------------------------------------------------------------------------------
    def cut_after(self, path: str, nbytes: int, *, outage: bool = True) -> None:
        """Drop the connection after `nbytes` body bytes of the next GET of `path`; with
        `outage`, everything after that gets 503 until `restore()`."""
        self._cuts[path] = (nbytes, outage)

    def corrupt(self, path: str) -> None:
        """Serve `path` with one byte in every 64 KiB flipped, under its true size and hashes."""
        self._corrupt.add(path)

    def restore(self) -> None:
        self.outage = False
        self._cuts.clear()
        self._corrupt.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self.stats.clear()
            self.log.clear()

    def file_stats(self, path: str) -> FileStats:
        with self._lock:
            return self.stats.setdefault(path, FileStats())

    # -- what the hub would say -----------------------------------------------------------------
    def resolve(self, repo: str, rev: str) -> str | None:
        r = self.repos[repo]
        if rev in r.commits:
            return rev
        return r.branches.get(rev)

    @staticmethod
    def is_lfs(path: str) -> bool:
        return path.lower().endswith(LFS_SUFFIXES)

    def sibling(self, path: str, data: bytes, blobs: bool) -> dict[str, object]:
        if not blobs:
            return {"rfilename": path}
        entry: dict[str, object] = {"rfilename": path, "size": len(data)}
        if self.is_lfs(path):
            pointer = lfs_pointer(data)
            entry["blobId"] = git_blob_id(pointer)
            entry["lfs"] = {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "pointerSize": len(pointer),
            }
        else:
            entry["blobId"] = git_blob_id(data)
        return entry

    def model_info(self, repo: str, commit: str, blobs: bool) -> dict[str, object]:
        files = self.repos[repo].commits[commit]
        return {
            "_id": hashlib.md5(repo.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": commit,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "transformers",
            "siblings": [self.sibling(p, files[p], blobs) for p in sorted(files)],
        }

    def tree(self, repo: str, commit: str, under: str, recursive: bool) -> list[dict[str, object]]:
        files = self.repos[repo].commits[commit]
        prefix = f"{under.strip('/')}/" if under.strip("/") else ""
        out: list[dict[str, object]] = []
        dirs: set[str] = set()
        for path in sorted(files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :].split("/")
            for i in range(1, len(rest)):
                if recursive or i == 1:
                    dirs.add(prefix + "/".join(rest[:i]))
            if not recursive and len(rest) > 1:
                continue
            sib = self.sibling(path, files[path], blobs=True)
            item: dict[str, object] = {
                "type": "file",
                "oid": sib["blobId"],
                "size": sib["size"],
                "path": path,
            }
            if "lfs" in sib:
                lfs = sib["lfs"]
                assert isinstance(lfs, dict)
                item["lfs"] = {
                    "oid": lfs["sha256"],
                    "size": lfs["size"],
                    "pointerSize": lfs["pointerSize"],
                }
            out.append(item)
        oid = "0" * 40
        out[:0] = [{"type": "directory", "oid": oid, "size": 0, "path": d} for d in sorted(dirs)]
        return out


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.hub = hub
    return Handler


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    timeout = 10

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- routing --------------------------------------------------------------------------------
    def _dispatch(self, *, head: bool) -> None:
        hub = self.hub
        with hub._lock:
            hub.log.append((self.command, self.path))
        if hub.outage:
            self._error(503, "ServiceUnavailable", "the fake hub is down")
            return
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        parts = split.path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            self._api(parts[2] + "/" + parts[3], parts[4:], query)
        elif parts[0] == "_lfs" and len(parts) >= 5:
            repo, rev, path = (
                parts[1] + "/" + parts[2],
                unquote(parts[3]),
                unquote("/".join(parts[4:])),
            )
            self._file(repo, rev, path, head=head, redirect=False)
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo, rev, path = (
                parts[0] + "/" + parts[1],
                unquote(parts[3]),
                unquote("/".join(parts[4:])),
            )
            self._file(repo, rev, path, head=head, redirect=hub.lfs_redirect)
        else:
            self._error(404, None, f"no route for {split.path}")

    def _api(self, repo: str, rest: list[str], query: dict[str, list[str]]) -> None:
        hub = self.hub
        if repo not in hub.repos:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        kind, rev, under = "revision", "main", ""
        if rest:
            if len(rest) < 2 or rest[0] not in ("revision", "tree"):
                self._error(404, None, "no such api route")
                return
            kind, rev, under = rest[0], unquote(rest[1]), unquote("/".join(rest[2:]))
        commit = hub.resolve(repo, rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        flag = lambda name: query.get(name, ["false"])[0].lower() in ("1", "true")  # noqa: E731
        body: object
        if kind == "tree":
            body = hub.tree(repo, commit, under, recursive=flag("recursive"))
        else:
            body = hub.model_info(repo, commit, blobs=flag("blobs"))
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _file(self, repo: str, rev: str, path: str, *, head: bool, redirect: bool) -> None:
        hub = self.hub
        if repo not in hub.repos:
            self._error(404, "RepoNotFound", "Repository not found")
            return
        commit = hub.resolve(repo, rev)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        data = hub.repos[repo].commits[commit].get(path)
        if data is None:
            self._error(404, "EntryNotFound", f"{path} does not exist", commit=commit)
            return
        lfs = hub.is_lfs(path)
        sha256 = hashlib.sha256(data).hexdigest()
        meta = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        if lfs:
            meta |= {
                "ETag": f'"{sha256}"',
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
            }
        else:
            meta["ETag"] = f'"{git_blob_id(data)}"'
        if lfs and redirect:
            self.send_response(302)
            location = f"/_lfs/{repo}/{commit}/{quote(path)}"
            for k, v in (meta | {"Location": location, "Content-Length": "0"}).items():
                self.send_header(k, v)
            self.end_headers()
            return

        stats = hub.file_stats(path)
        with hub._lock:
            if head:
                stats.heads += 1
            else:
                stats.gets += 1
                stats.ranges.append(self.headers.get("Range"))
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        if rng is not None:
            parsed = _parse_range(rng, len(data))
            if parsed is None:
                self._error(416, None, "Requested range not satisfiable")
                return
            start, end = parsed
        self.send_response(206 if rng is not None else 200)
        for k, v in meta.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end + 1 - start))
        if rng is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if head:
            return
        body = data
        if path in hub._corrupt:
            flipped = bytearray(data)
            for i in range(0, len(flipped), _CHUNK):
                flipped[i] ^= 0xFF
            body = bytes(flipped)
        body = body[start : end + 1]
        cut = hub._cuts.pop(path, None)
        limit = len(body) if cut is None else min(cut[0], len(body))
        sent = 0
        try:
            while sent < limit:
                n = self.wfile.write(body[sent : min(sent + _CHUNK, limit)])
                sent += n or 0
                with hub._lock:
                    stats.bytes_served += n or 0
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if cut is not None:
            if cut[1]:
                hub.outage = True
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def _error(
        self, status: int, code: str | None, message: str, commit: str | None = None
    ) -> None:
        data = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit is not None:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """`bytes=a-`, `bytes=a-b` or `bytes=-n` → (first, last) inclusive; None if unsatisfiable."""
    if not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if a >= size or b < a:
        return None
    return a, min(b, size - 1)
