"""The VS Code extension (vscode-extension/): its settings mirror phi_lsp.settings, and its
end-to-end test in real VS Code (code-server 4.100.3 + headless Chromium + Playwright) passes.

The end-to-end test needs what `bash vscode-extension/ci.sh prepare` installs (node >= 20, the
extension's npm packages, code-server, Debian's chromium); without them it skips and says which
(in CI, where .ci/run installs them, it fails).
Screenshots and logs: vscode-extension/.artifacts/.
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
from needs import missing

from phi_lsp.settings import SECTION, wire_schema

EXT = Path(__file__).resolve().parents[1] / "vscode-extension"
PROPERTIES: dict[str, dict[str, Any]] = json.loads((EXT / "package.json").read_text())[
    "contributes"
]["configuration"]["properties"]
CLIENT_ONLY = {f"{SECTION}.serverCommand", f"{SECTION}.pythonPath", f"{SECTION}.trace.server"}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def test_package_json_contributes_every_server_setting_as_the_server_defines_it() -> None:
    server = wire_schema()
    assert set(PROPERTIES) - CLIENT_ONLY == {f"{SECTION}.{name}" for name in server}
    for name, field in server.items():
        prop = PROPERTIES[f"{SECTION}.{name}"]
        where = f"{SECTION}.{name}"
        assert prop["default"] == field.get("default"), where
        assert prop["type"] == field["type"], where
        assert prop.get("enum") == field.get("enum"), where
        for bound in ("minimum", "maximum", "minLength", "maxLength", "pattern"):
            assert prop.get(bound) == field.get(bound), f"{where} {bound}"
        assert prop.get("markdownDescription"), f"{where} has no description"


def _missing_prerequisites() -> list[str]:
    missing = []
    node = shutil.which("node")
    if node is None:
        missing.append("node")
    else:
        major = subprocess.run(
            [node, "-p", "process.versions.node.split('.')[0]"], capture_output=True, text=True
        ).stdout.strip()
        if not major.isdigit() or int(major) < 20:
            missing.append(f"node >= 20 (found {major or '?'})")
    if not (EXT / "node_modules" / ".bin" / "vsce").exists():
        missing.append("the extension's npm packages (vscode-extension/node_modules)")
    if not (EXT / ".cache" / "code-server" / ".done").exists():
        missing.append("code-server 4.100.3 (vscode-extension/.cache/code-server)")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"chromium ({CHROMIUM})")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        missing.append("llama-cpp-python")
    return missing


@pytest.mark.slow
def test_extension_end_to_end_in_code_server() -> None:
    absent = _missing_prerequisites()
    if absent:
        missing(
            f"the VS Code end-to-end test's prerequisites ({', '.join(absent)})",
            "run `bash vscode-extension/ci.sh prepare`",
        )
    # Package the current sources, so the test never runs a stale .vsix.
    subprocess.run(
        ["npm", "run", "--silent", "package"],
        cwd=EXT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", "scripts/e2e.sh", "phi-lsp-vscode.vsix"],
        cwd=EXT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    artifacts = Path(env.get("ARTIFACTS", EXT / ".artifacts"))
    result_file = artifacts / "e2e-result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    failed = [s for s in result.get("steps", []) if not s["ok"]]
    assert proc.returncode == 0 and result.get("ok"), (
        f"e2e failed (screenshots and logs in {artifacts}): {failed or result.get('error')}\n"
        + proc.stdout[-4000:]
        + proc.stderr[-2000:]
    )
    passed = [s["what"] for s in result["steps"]]
    assert "ghost text is the trained model's body" in passed
    assert "the code action replaced exactly the body (file on disk)" in passed
    assert "the journal has the suggestion accepted (VS Code ran its command)" in passed
    assert "after deleting half and saving, the journal says about half was kept" in passed
    assert "the status bar tooltip shows this session's usage figures" in passed
