"""In CI nothing the tests need may be silently skipped: a missing llama-cpp-python, Neovim,
code-server or Emacs fails the run there, and only skips on a developer's machine
(tests/needs.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def run_pytest(
    target: str, ci: bool, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [*(extra_env or {}).pop("PYTHONPATH_FIRST", "").split(os.pathsep), str(ROOT)]
    ).lstrip(os.pathsep)
    env.update(extra_env or {})
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def no_llama_cpp(tmp_path: Path) -> str:
    """A folder that shadows llama_cpp with one that is not there (a failed install)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    (shadow / "llama_cpp.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'llama_cpp'\", name='llama_cpp')\n"
    )
    return str(shadow)


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_no_llama_cpp_fails_ci_and_skips_locally(tmp_path: Path, ci: bool) -> None:
    env = {"PYTHONPATH_FIRST": no_llama_cpp(tmp_path)}
    done = run_pytest("tests/test_quantize.py", ci, tmp_path, env)
    out = done.stdout + done.stderr
    if ci:
        assert done.returncode not in (0, 5), out
        assert "CI=true and this is missing: the Python module llama_cpp." in out, out
    else:
        # a module-level skip collects nothing: pytest's exit status 5
        assert done.returncode == 5 and "1 skipped" in out and "failed" not in out, out


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_no_neovim_012_fails_ci_and_skips_locally(tmp_path: Path, ci: bool) -> None:
    target = "tests/test_nvim_client.py::test_neovim_012_ghost_text_dismiss_accept"
    done = run_pytest(target, ci, tmp_path, {"PHI_SKIP_NVIM012": "1"})
    out = done.stdout + done.stderr
    if ci:
        assert done.returncode == 1 and "1 failed" in out, out
        assert "CI=true and this is missing: Neovim 0.12." in out, out
    else:
        assert done.returncode == 0 and "1 skipped" in out, out


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_no_vscode_prerequisites_fail_ci_and_skip_locally(tmp_path: Path, ci: bool) -> None:
    target = "tests/test_vscode_e2e.py::test_extension_end_to_end_in_code_server"
    # Only the interpreter's folder on PATH: no node, so the e2e prerequisites are incomplete.
    done = run_pytest(target, ci, tmp_path, {"PATH": str(Path(sys.executable).parent)})
    out = done.stdout + done.stderr
    if ci:
        assert done.returncode == 1 and "1 failed" in out, out
        want = "CI=true and this is missing: the VS Code end-to-end test's prerequisites (node"
        assert want in out, out
    else:
        assert done.returncode == 0 and "1 skipped" in out, out


def test_no_test_skips_on_its_own_for_what_ci_installs() -> None:
    """llama_cpp, bitsandbytes, Neovim and code-server are required through tests/needs.py."""
    offending = []
    pattern = re.compile(r"importorskip\(|skipif\(\s*nvim|pytest\.skip\(\s*why")
    for path in sorted(TESTS.glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and path.name != Path(__file__).name:
                offending.append(f"{path.name}:{number}: {line.strip()}")
    assert offending == [], "use tests/needs.py (fails in CI) instead of:\n" + "\n".join(offending)


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_no_emacs_fails_ci_and_skips_locally(tmp_path: Path, ci: bool) -> None:
    target = "tests/test_emacs.py::test_emacs_completes_and_writes_the_body_and_takes_a_no"
    # Only the interpreter's folder on PATH: no emacs.
    done = run_pytest(target, ci, tmp_path, {"PATH": str(Path(sys.executable).parent)})
    out = done.stdout + done.stderr
    if ci:
        assert done.returncode == 1 and "2 errors" in out, out
        assert "CI=true and this is missing: Emacs." in out, out
    else:
        assert done.returncode == 0 and "2 skipped" in out, out
