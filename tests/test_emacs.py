"""Emacs as a phi-lsp client: eglot and lsp-mode from Debian, driven in batch mode.

Each script (tests/emacs/*.el) completes at the end of "    return" in add() (the trained
model's "return a + b"), then turns add() into a docstring stub and runs the code action's
`phiLsp.generateFunction`: the command must answer at once (both clients give up on a request
after 10 s; the generation takes about a minute for phi-1 on a laptop CPU) and the body arrive
as workspace/applyEdit. Then the same once more with the user saying no: eglot answers the
server with the error "User cancelled server edit", lsp-mode with `applied: false`; the server
logs one info line and shows nothing.

Needs `apt-get install emacs-nox elpa-eglot elpa-lsp-mode` (.ci/run installs them; in CI a
missing Emacs fails the run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from needs import missing, need_module

from testkit.tinymodel import TinyModel

SCRIPTS = Path(__file__).parent / "emacs"
APT = "apt-get install emacs-nox elpa-eglot elpa-lsp-mode"
SOURCE = '''import os


def add(a, b):
    """Return the sum of a and b.

    >>> add(2, 3)
    5
    """
    return
'''
RETURN_LINE = 10  # 1-based: "    return" in add()
STUB = SOURCE.replace("    return\n", "    pass\n")
WRITTEN = SOURCE.replace("    return\n", "    return a + b\n")
SETTINGS = {
    "backend": "llamacpp",
    "nThreads": 2,
    "maxNewTokens": 16,
    "generateCandidates": 2,
    "generateRunDoctests": "always",
}


@pytest.fixture(scope="session")
def emacs() -> str:
    """The emacs binary, if it loads eglot and lsp-mode (else `missing`: a failure in CI).

    Session-scoped and first in the tests' arguments, so that it is checked before the
    trained model is built."""
    binary = shutil.which("emacs")
    if binary is None:
        missing("Emacs", APT)
    for package in ("eglot", "lsp-mode"):
        probe = subprocess.run(
            [binary, "--batch", "--eval", f"(progn (package-initialize) (require '{package}))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            missing(f"the Emacs package {package}", f"{APT} ({probe.stderr.strip()[-200:]})")
    return binary


def run_emacs(emacs: str, client: str, tmp_path: Path, model: Path) -> tuple[dict[str, Any], str]:
    """Run tests/emacs/CLIENT.el against a real `phi-lsp serve`; its result and the server log."""
    need_module("llama_cpp")
    source = tmp_path / "calc.py"
    source.write_text(SOURCE)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'calc'\n")
    result_file, log = tmp_path / f"{client}.json", tmp_path / "server.log"
    command = [sys.executable, "-m", "phi_lsp", "serve", "--model", str(model)]
    command += ["--backend", "llamacpp", "--log-file", str(log)]
    env = {
        **os.environ,
        "PHI_CMD": json.dumps(command),
        "PHI_SETTINGS": json.dumps(SETTINGS),
        "PHI_FILE": str(source),
        "PHI_LINE": str(RETURN_LINE),
        "PHI_OUT": str(result_file),
        "PHI_TIMEOUT": "120",
        "PHI_LOG_IO": "1",
        "PHI_LSP_HOME": str(tmp_path / "home"),
        "HOME": str(tmp_path),  # no user init, no saved sessions
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    proc = subprocess.run(
        [emacs, "--batch", "-l", str(SCRIPTS / f"{client}.el")],
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
        capture_output=True,
        text=True,
    )
    server_log = log.read_text() if log.exists() else ""
    assert result_file.exists(), f"emacs wrote no result (rc {proc.returncode}): {proc.stderr}"
    result = json.loads(result_file.read_text())
    assert "error" not in result, (result, proc.stderr[-3000:], server_log[-3000:])
    return result, server_log


@pytest.mark.parametrize("client", ["eglot", "lsp-mode"])
def test_emacs_completes_and_writes_the_body_and_takes_a_no(
    emacs: str, trained_model: TinyModel, tmp_path: Path, client: str
) -> None:
    result, log = run_emacs(emacs, client, tmp_path, trained_model.gguf_f32)
    assert any(c.startswith("return a + b") for c in result["completion"]), result["completion"]
    assert result["actions"] == ["Generate body from docstring (phi-lsp)"]
    # The command's answer names the function being written; the body comes afterwards.
    assert result["answer"] == result["answer_refused"] == "add"
    assert result["after_accept"] == WRITTEN
    # The user said no: the buffer keeps its stub, and nothing is shown as an error.
    assert result["asked"] == 2
    assert result["after_refuse"] == STUB
    assert result["actions_after"] == 1
    assert not [m for m in result["messages"] if m.startswith("1:")], result["messages"]
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    (refused,) = [line for line in log.splitlines() if "not applied" in line]
    assert " INFO " in refused
    if client == "eglot":
        assert "User cancelled server edit" in refused
