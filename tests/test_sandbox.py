"""The sandbox: programs run in a separate, limited process and every escape is an error."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from phi_lsp.sandbox import CHILD_ENV, sandbox_features
from phi_lsp.sandbox import run_sandboxed as run


def test_passes_and_captures_output() -> None:
    result = run("print('hello from the sandbox')")
    assert result.passed and result.status == "passed"
    assert result.output == "hello from the sandbox\n"
    assert result.seconds > 0


def test_failed_assertion_names_the_line() -> None:
    result = run("x = 1\nassert x == 2, 'x is not 2'\n")
    assert not result.passed and result.status == "failed"
    assert "AssertionError at line 2" in result.detail and "x is not 2" in result.detail


def test_syntax_error_is_a_failure() -> None:
    result = run("def f(:\n    pass\n")
    assert result.status == "failed" and "SyntaxError" in result.detail


def test_never_runs_in_the_calling_process() -> None:
    result = run("import sys\nsys.modules['phi_lsp_sandbox_marker'] = sys\nprint(__name__)")
    assert result.passed and result.output.strip() == "__main__"
    assert "phi_lsp_sandbox_marker" not in sys.modules


def test_cwd_is_a_fresh_temp_dir_that_is_removed() -> None:
    result = run("import os\nopen('scratch.txt', 'w').write('x')\nprint(os.getcwd())")
    assert result.passed, result.detail
    cwd = Path(result.output.strip())
    assert cwd != Path.cwd()
    assert cwd.parent == Path(tempfile.gettempdir())
    assert cwd.name.startswith("phi-lsp-sandbox-")
    assert not cwd.exists()


def test_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHI_LSP_TEST_SECRET", "do-not-leak")
    result = run("import os, json\nprint(json.dumps(dict(os.environ)))")
    assert result.passed, result.detail
    assert result.output.strip() == '{"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}'
    assert set(CHILD_ENV) == {"PATH", "LANG"}


def test_stdin_is_closed() -> None:
    result = run("try:\n    input()\nexcept EOFError:\n    print('eof')")
    assert result.passed and result.output.strip() == "eof"


@pytest.mark.parametrize(
    "program",
    [
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)",
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "import socket\nsocket.getaddrinfo('example.com', 80)",
        "import _socket\n_socket.socket()",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')",
    ],
)
def test_network_is_refused(program: str) -> None:
    result = run(program)
    assert result.status == "error"
    assert "blocked" in result.detail and "socket" in result.detail


def test_a_caught_violation_is_still_an_error() -> None:
    result = run("import socket\ntry:\n    socket.socket()\nexcept OSError:\n    pass\n")
    assert result.status == "error" and "blocked: socket.socket" in result.detail


def test_network_namespace_has_no_interface() -> None:
    if not sandbox_features()["network_namespace"]:
        pytest.skip("this kernel does not allow a network namespace here")
    result = run("print(open('/proc/self/net/dev').read())")
    assert result.passed
    interfaces = [line.split(":")[0].strip() for line in result.output.splitlines() if ":" in line]
    assert interfaces == ["lo"]


def test_infinite_loop_times_out() -> None:
    result = run("while True:\n    pass\n", timeout_s=1.0)
    assert result.status == "timeout" and not result.passed
    assert result.seconds < 30  # killed at the timeout, long before a loaded machine would


def test_sleeping_child_times_out_on_wall_clock() -> None:
    result = run("import time\ntime.sleep(60)", timeout_s=0.5)
    # Killed at the wall-clock timeout, not after the 60 s sleep (a wide margin for busy CIs).
    assert result.status == "timeout" and result.seconds < 30


def test_unbounded_allocation_hits_the_memory_limit() -> None:
    result = run("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n", memory_mb=256)
    assert result.status == "error" and "memory limit" in result.detail


@pytest.mark.parametrize(
    "program",
    [
        "import os\nos.fork()",
        "import posix\nposix.fork()",
        "import os\nos.system('echo hi')",
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.execv('/bin/true', ['true'])",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()",
        "import ctypes\nctypes.CDLL(None).fork()",
    ],
)
def test_processes_cannot_be_spawned(program: str) -> None:
    result = run(program)
    assert result.status in ("error", "failed") and not result.passed
    assert "blocked" in result.detail


def test_huge_file_hits_the_file_size_limit() -> None:
    program = "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 2**20)\n"
    result = run(program)
    assert result.status == "error" and "file size limit" in result.detail


def test_output_flood_is_stopped_and_truncated() -> None:
    result = run("while True:\n    print('x' * 1000)\n")
    assert result.status == "error"
    assert len(result.output) < 5000 and result.output.endswith("[... output truncated]")


def test_early_exit_cannot_pass() -> None:
    assert run("import os\nos._exit(0)").status == "error"
    exited = run("import sys\nsys.exit(0)")
    assert exited.status == "failed" and "exit" in exited.detail


def test_limits_are_set_in_the_child() -> None:
    program = (
        "import resource as r\n"
        "print(r.getrlimit(r.RLIMIT_AS)[1], r.getrlimit(r.RLIMIT_NPROC)[1],"
        " r.getrlimit(r.RLIMIT_CORE)[1], r.getrlimit(r.RLIMIT_CPU)[1])\n"
    )
    result = run(program, memory_mb=300, cpu_s=3)
    assert result.passed, result.detail
    assert result.output.split() == [str(300 * 2**20), "1", "0", "4"]


@pytest.mark.skipif(os.geteuid() == 0, reason="the kernel exempts root from RLIMIT_NPROC")
def test_process_limit_binds() -> None:
    assert sandbox_features()["process_limit"]
