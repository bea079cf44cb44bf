"""The package's shape holds: layers point down (import-linter), no private name crosses a module,
no module grows past ~400 lines without a stated reason."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
MAX_LINES = 400
# Modules allowed past MAX_LINES, and why.
LONG_MODULES: dict[str, str] = {}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layer_contracts_hold_and_catch_an_upward_import(tmp_path: Path) -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
    # The same contracts on a copy where the model cache imports the language server.
    shutil.copytree(REPO / "phi_lsp", tmp_path / "phi_lsp")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    store = tmp_path / "phi_lsp" / "models" / "store.py"
    store.write_text(store.read_text() + "\nfrom phi_lsp.lsp import server  # noqa\n")
    broken = lint_imports(tmp_path)
    assert broken.returncode != 0
    assert "phi_lsp.models is not allowed to import phi_lsp.lsp" in broken.stdout


def python_files() -> list[Path]:
    return sorted(
        p for d in ("phi_lsp", "bench", "testkit", "tests") for p in (REPO / d).rglob("*.py")
    )


def test_no_private_name_is_imported_across_modules() -> None:
    found = []
    for path in python_files():
        if "fixtures" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("phi_lsp"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} {alias.name}")
    assert not found, found


def test_no_module_is_longer_than_the_limit_without_a_reason() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in (REPO / "phi_lsp").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert set(long) <= set(LONG_MODULES), long


def test_the_readme_names_every_command_every_reloading_setting_and_real_modules() -> None:
    import re

    from phi_lsp.cli import main  # noqa: F401  (the parser lists the commands)
    from phi_lsp.settings import ENGINE_KEYS, Settings

    readme = (REPO / "README.md").read_text()
    help_text = subprocess.run(
        [sys.executable, "-m", "phi_lsp", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    commands = re.search(r"\{([a-z,]+)\}", help_text)
    assert commands is not None
    for command in commands.group(1).split(","):
        assert f"phi-lsp {command}" in readme, command
    sentence = re.search(r"Changing (.+?) reloads the model", readme, re.S)
    assert sentence is not None
    named = set(re.findall(r"`(\w+)`", sentence.group(1)))
    aliases = {f.alias or k for k, f in Settings.model_fields.items() if k in ENGINE_KEYS}
    assert named == aliases
    for key, f in Settings.model_fields.items():
        assert f"| `{f.alias or key}` |" in readme, f"the settings table lacks {f.alias or key}"
    section = readme.split("## How a keystroke becomes a suggestion")[1].split("\n## ")[0]
    for path in re.findall(r"`((?:phi_lsp/)?[a-z_/]+\.py)`", section):
        full = REPO / (path if path.startswith("phi_lsp/") else f"phi_lsp/{path}")
        found = full.exists() or any((REPO / "phi_lsp").rglob(Path(path).name))
        assert found, path
