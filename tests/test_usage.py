"""The local learning loop's records: accepted and kept suggestions, in a journal a kill never
corrupts, measured through a real `phi-lsp serve`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from needs import need_module

from phi_lsp.usage.journal import Journal
from phi_lsp.usage.retention import Span, kept_chars
from testkit.lsp_session import inline_completion, lsp_session, open_document, wait_for_loads
from testkit.tinymodel import TinyModel

SOURCE = 'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n    """\n'


def test_a_kill_mid_append_leaves_no_torn_event(tmp_path: Path) -> None:
    """A process SIGKILLed half-way through a write: the torn line is never read back, and
    the next append starts on a line of its own."""
    journal = Journal(tmp_path)
    journal.append({"event": "shown", "id": "before", "t": 1})
    child = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from phi_lsp.usage.journal import Journal\n"
        "real = os.write\n"
        "def half(fd, data):\n"
        "    real(fd, bytes(data[: len(data) // 2]))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.write = half\n"
        "torn = {'event': 'accepted', 'id': 'torn', 'text': 'x' * 5000}\n"
        "Journal(Path(sys.argv[1])).append(torn)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    raw = journal.path.read_bytes()
    assert b'"id":"torn"' in raw and not raw.endswith(b"\n")  # really torn
    journal.append({"event": "shown", "id": "after", "t": 2})
    assert [e["id"] for e in journal.read()] == ["before", "after"]


def test_the_journal_is_bounded_and_keeps_the_previous_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=2000)
    for i in range(100):
        journal.append({"event": "shown", "id": str(i), "t": i, "text": "y" * 50})
    sizes = [p.stat().st_size for p in tmp_path.glob("*.jsonl")]
    assert len(sizes) == 2 and all(s <= 2000 for s in sizes)
    ids = [int(e["id"]) for e in journal.read()]
    assert ids == sorted(ids) and ids[-1] == 99 and len(ids) < 100


def test_a_span_follows_edits_around_and_inside_it() -> None:
    span = Span((2, 4), (3, 10))
    span.apply((0, 0), (0, 0), "import os\n")  # a line above: everything moves down
    assert (span.start, span.end) == ((3, 4), (4, 10))
    span.apply((3, 0), (3, 0), "xx")  # typed before it on its first line
    assert (span.start, span.end) == ((3, 6), (4, 10))
    span.apply((4, 10), (4, 10), "  # mine")  # typed right after it: not part of it
    assert span.end == (4, 10)
    span.apply((4, 2), (4, 10), "")  # its end deleted
    assert span.end == (4, 2)
    span.apply((2, 0), (3, 8), "")  # everything up to inside it deleted
    assert span.start == (2, 0) and span.end == (3, 2)


def test_kept_chars_counts_what_is_left_in_order() -> None:
    assert kept_chars("return a + b", "return a + b") == 12
    assert kept_chars("return a + b", "return a") == 8
    assert kept_chars("return a + b", "") == 0


def journal_events(home: Path) -> list[dict]:
    return list(Journal(home / "usage").read())


@pytest.fixture
def llama() -> None:
    need_module("llama_cpp")


async def test_accept_then_delete_half_then_save_records_half_kept(
    tmp_path: Path, trained_model: TinyModel, llama: None
) -> None:
    home = tmp_path / "home"
    settings = {"model": str(trained_model.gguf_f32), "backend": "llamacpp", "nThreads": 2}
    uri = (tmp_path / "calc.py").as_uri()
    async with lsp_session(tmp_path, settings, home=home) as client:
        await wait_for_loads(client)
        typed = SOURCE + "    return a"
        open_document(client, uri, typed)
        (item,) = await inline_completion(client, uri, 6, 12)
        assert item.insert_text == " + b" and item.command is not None
        assert item.command.command == "phiLsp.accepted"
        # The client inserts the item, then runs its command.
        change(client, uri, 2, (6, 12), (6, 12), item.insert_text)
        accepted = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(item.command.command, item.command.arguments)
        )
        assert accepted is True
        change(client, uri, 3, (6, 13), (6, 15), "")  # " + b" loses "+ ": half of it kept
        client.text_document_did_save(
            types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(uri))
        )
        stats = await client.protocol.send_request_async("phiLsp/usageStats", {})
    events = journal_events(home)
    (shown_id,) = item.command.arguments
    kinds = {e["event"]: e for e in events if e["id"] == shown_id}
    assert set(kinds) == {"shown", "accepted", "retained"}
    assert kinds["shown"]["file"] == "calc.py" and kinds["shown"]["text"] == " + b"
    assert kinds["accepted"]["prompt"].endswith("    return a")
    retained = kinds["retained"]
    assert retained["reason"] == "saved" and retained["kept"] == " b"
    assert retained["share"] == pytest.approx(1 / 2)
    assert stats.shown >= 1 and stats.accepted == 1
    done = subprocess.run(
        [sys.executable, "-m", "phi_lsp", "stats"],
        env={"PHI_LSP_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "50%" in done.stdout  # the kept share, on the "all" line of the last day


async def test_nothing_is_recorded_for_ignored_files_or_with_usage_off(
    tmp_path: Path, trained_model: TinyModel, llama: None
) -> None:
    home = tmp_path / "home"
    settings = {"model": str(trained_model.gguf_f32), "backend": "llamacpp", "nThreads": 2}
    async with lsp_session(tmp_path, settings, home=home) as client:
        await wait_for_loads(client)
        secret = (tmp_path / "my_secret.py").as_uri()
        open_document(client, secret, SOURCE + "    return a")
        (item,) = await inline_completion(client, secret, 6, 12)
        assert item.insert_text == " + b" and item.command is None
    async with lsp_session(tmp_path, {**settings, "usage": False}, home=home) as client:
        await wait_for_loads(client)
        other = (tmp_path / "calc.py").as_uri()
        open_document(client, other, SOURCE + "    return a")
        (item,) = await inline_completion(client, other, 6, 12)
        assert item.command is None
    assert journal_events(home) == []


def change(client, uri: str, version: int, start: tuple, end: tuple, text: str) -> None:  # type: ignore[no-untyped-def]
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(types.Position(*start), types.Position(*end)), text=text
                )
            ],
        )
    )
