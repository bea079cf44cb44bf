"""The sandbox: programs run in a separate, limited process and every escape is an error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from phi_lsp.bodygen.ranking import run_doctests_sandboxed
from phi_lsp.bodygen.stubs import find_stub
from phi_lsp.sandbox import CHILD_ENV, sandbox_features
from phi_lsp.sandbox import run_sandboxed as run
from testkit.lsp_session import lsp_session, open_document

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


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


def test_environment_is_minimal_and_home_is_the_run_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PHI_LSP_TEST_SECRET", "do-not-leak")
    result = run("import os, json\nprint(json.dumps(dict(os.environ)))\nprint(os.getcwd())")
    assert result.passed, result.detail
    env_line, cwd = result.output.strip().splitlines()
    assert json.loads(env_line) == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": cwd,
        "TMPDIR": os.path.join(cwd, "tmp"),
    }
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


# --- Confinement: hostile programs change nothing outside their run (issue 19) ---------------

# Undoes the Python guard the way a determined program could (fresh `posix` and `_io` modules
# with the original functions), so that what still holds is the kernel's doing.
UNDO_GUARD = """\
import builtins, importlib, importlib.machinery, importlib.util, io, os, shutil
def _fresh(name):
    spec = importlib.machinery.BuiltinImporter.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
posix, _io = _fresh("posix"), _fresh("_io")
builtins.open = io.open = _io.open
io.FileIO = _io.FileIO
for _name in dir(posix):
    if not _name.startswith("__"):
        setattr(os, _name, getattr(posix, _name))
importlib.reload(shutil)
"""

# Each writes, creates, truncates, deletes, renames, links or changes a file outside the run.
# {p}: an existing file; {new}: a path that does not exist yet; {d}: their directory;
# {home}: a new file in the real home directory of the user running the tests.
HOSTILE_WRITES = {
    "open-w": "open({p!r}, 'w').write('gone')",
    "open-a": "open({p!r}, 'a').write('more')",
    "open-x": "open({new!r}, 'x').write('new')",
    "home": "open({home!r}, 'w').write('probe')",
    "pathlib-write_text": "import pathlib\npathlib.Path({p!r}).write_text('gone')",
    "pathlib-write_bytes": "import pathlib\npathlib.Path({p!r}).write_bytes(b'gone')",
    "pathlib-touch": "import pathlib\npathlib.Path({new!r}).touch()",
    "pathlib-unlink": "import pathlib\npathlib.Path({p!r}).unlink()",
    "io.FileIO": "import io\nio.FileIO({p!r}, 'w').write(b'gone')",
    "os.open-trunc": "import os\nos.open({p!r}, os.O_WRONLY | os.O_TRUNC)",
    "os.open-creat": "import os\nos.write(os.open({new!r}, os.O_WRONLY | os.O_CREAT), b'x')",
    "os.truncate": "import os\nos.truncate({p!r}, 0)",
    "os.remove": "import os\nos.remove({p!r})",
    "os.rename": "import os\nos.rename({p!r}, {new!r})",
    "os.replace-over": "import os\nopen('mine', 'w').write('x')\nos.replace('mine', {p!r})",
    "os.mkdir": "import os\nos.mkdir({new!r})",
    "os.chmod": "import os\nos.chmod({p!r}, 0o777)",
    "os.utime": "import os\nos.utime({p!r}, (0, 0))",
    "os.symlink": "import os\nos.symlink('/etc/hostname', {new!r})",
    "symlink-planted": "import os\nos.symlink({p!r}, 'link')\nopen('link', 'w').write('gone')",
    "hard-link": "import os\nos.link({p!r}, 'hard')\nopen('hard', 'w').write('gone')",
    "shutil.copyfile": "import shutil\nopen('m', 'w').write('x')\nshutil.copyfile('m', {p!r})",
    "shutil.copy": "import shutil\nopen('mine', 'w').write('x')\nshutil.copy('mine', {new!r})",
    "shutil.move": "import shutil\nshutil.move({p!r}, 'here')",
    "shutil.rmtree": "import shutil\nshutil.rmtree({d!r})",
}


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside any run (not under pytest's tmp_path, which only root may enter),
    with one precious file; writable by `nobody` too, for the unprivileged test."""
    root = Path(tempfile.mkdtemp(prefix="phi-lsp-outside-"))
    (root / "precious.txt").write_bytes(b"precious data\n")
    if os.geteuid() == 0:
        for path in (root, root / "precious.txt"):
            os.chown(path, NOBODY, NOBODY)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int, int]]:
    """Every entry under `root`: content (files), mode and modification time."""
    out: dict[str, tuple[bytes | None, int, int]] = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(root))] = (data, st.st_mode, st.st_mtime_ns)
    return out


def hostile(name: str, d: Path, home_probe: Path) -> str:
    paths = {"p": str(d / "precious.txt"), "new": str(d / "new"), "d": str(d)}
    return HOSTILE_WRITES[name].format(home=str(home_probe), **paths)


def home_probe() -> Path:
    return Path.home() / f".phi-lsp-sandbox-probe-{secrets.token_hex(4)}"


def require_kernel_confinement() -> None:
    """Kernel-only tests: skipped where the kernel offers none, but never in CI."""
    features = sandbox_features()
    if features["files_confined"] and features["process_limit"]:
        return
    message = f"no kernel confinement here: {features['confinement']}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run these tests)")
    pytest.skip(message)


def processes_in(workdir: str) -> list[int]:
    """Processes whose working directory is `workdir` (what a fork bomb there leaves)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd") == workdir:
                    found.append(int(entry.name))
    return found


@pytest.mark.parametrize("name", sorted(HOSTILE_WRITES))
def test_the_guard_blocks_writes_outside_the_run(name: str, outside: Path) -> None:
    before, probe = snapshot(outside), home_probe()
    result = run(hostile(name, outside, probe))
    assert result.status == "error" and "blocked" in result.detail, (result.detail, result.output)
    assert snapshot(outside) == before
    assert not probe.exists()


@pytest.mark.parametrize("name", sorted(HOSTILE_WRITES))
def test_the_kernel_blocks_writes_outside_the_run_without_the_guard(
    name: str, outside: Path
) -> None:
    require_kernel_confinement()
    before, probe = snapshot(outside), home_probe()
    result = run(UNDO_GUARD + hostile(name, outside, probe))
    assert result.status == "failed", (result.detail, result.output)
    assert "blocked" not in result.detail  # the guard was undone: the kernel refused it
    assert any(e in result.detail for e in ("PermissionError", "OSError")), result.detail
    assert snapshot(outside) == before
    assert not probe.exists()


def test_undoing_the_guard_works_where_the_kernel_allows_it(outside: Path) -> None:
    """The kernel variant above is meaningful: the undo really restores the original calls."""
    result = run(UNDO_GUARD + "open('inside.txt', 'w').write('x')\nprint(os.fork is posix.fork)")
    assert result.passed and result.output.strip() == "True", result.detail


@pytest.mark.parametrize(
    "program",
    [
        "print(open({secret!r}).read())",
        "import os\nprint(os.listdir({home!r}))",
        "print(open('/etc/passwd').read())",
    ],
)
def test_the_home_directory_and_system_files_are_not_readable(program: str, outside: Path) -> None:
    require_kernel_confinement()
    secret = secrets.token_hex(16)
    (outside / "secret.txt").write_text(secret)
    text = program.format(secret=str(outside / "secret.txt"), home=str(Path.home()))
    result = run(text)
    assert result.status == "failed" and "PermissionError" in result.detail, result.detail
    assert secret not in result.output and "root:x:0:0" not in result.output


@pytest.mark.parametrize("undo", [False, True], ids=["guard", "kernel"])
def test_a_fork_bomb_ends_and_leaves_no_process(undo: bool) -> None:
    if undo:
        require_kernel_confinement()
    program = (UNDO_GUARD if undo else "import os as posix\n") + (
        "import os, time\n"
        "print(os.getcwd(), flush=True)\n"
        "made = 0\n"
        "for _ in range(10_000):\n"
        "    try:\n"
        "        pid = posix.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(60)\n"
        "        posix._exit(0)\n"
        "    made += 1\n"
        "print('forked', made)\n"
    )
    result = run(program, timeout_s=10.0)
    workdir = result.output.splitlines()[0]
    assert workdir.startswith(str(Path(tempfile.gettempdir()) / "phi-lsp-sandbox-"))
    if undo:
        assert result.status == "passed" and result.output.split()[-1] == "0", result.output
    else:
        assert result.status == "error" and "blocked: os.fork" in result.detail
    assert processes_in(workdir) == []
    assert sandbox_features()["process_limit"] or os.environ.get("CI") != "true"


@pytest.mark.parametrize(
    "program",
    [
        "i = 0\nwhile True:\n    with open(f'fill{i}', 'wb') as f:\n"
        "        f.write(b'x' * 2**22)\n    i += 1\n",
        "i = 0\nwhile True:\n    open(f'empty{i}', 'w').close()\n    i += 1\n",
    ],
    ids=["bytes", "files"],
)
def test_filling_the_run_directory_is_stopped(program: str, outside: Path) -> None:
    before = snapshot(outside)
    result = run(program, timeout_s=120.0)
    assert result.status == "error" and "disk limit" in result.detail, result.detail
    assert snapshot(outside) == before


def test_writing_inside_the_run_directory_still_works() -> None:
    program = (
        "import os, pathlib, shutil, tempfile\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    p = pathlib.Path(d, 'a.txt')\n"
        "    p.write_text('hi')\n"
        "    os.rename(p, pathlib.Path(d, 'b.txt'))\n"
        "    assert pathlib.Path(d, 'b.txt').read_text() == 'hi'\n"
        "with tempfile.NamedTemporaryFile('w+') as f:\n"
        "    f.write('x')\n"
        "open('local.txt', 'w').write('ok')\n"
        "os.makedirs('sub/deeper')\n"
        "shutil.copyfile('local.txt', 'sub/deeper/copy.txt')\n"
        "os.symlink('local.txt', 'sub/link')\n"
        "os.link('local.txt', 'hard')\n"
        "assert open('hard').read() == 'ok'\n"
        "shutil.rmtree('sub')\n"
        "os.remove('local.txt')\n"
        "with open(os.devnull, 'w') as f:\n"
        "    f.write('x')\n"
        "print(sorted(os.listdir('.')))\n"
    )
    result = run(program)
    assert result.passed, (result.detail, result.output)
    assert result.output.strip() == "['hard', 'program.py', 'tmp']"


def test_a_doctest_that_writes_a_temporary_file_passes() -> None:
    source = (
        "def save(path, text):\n"
        '    """Write text to path and return how many characters were written.\n\n'
        "    >>> import os, tempfile\n"
        "    >>> path = os.path.join(tempfile.mkdtemp(), 'out.txt')\n"
        "    >>> save(path, 'hello')\n"
        "    5\n"
        "    >>> open(path).read()\n"
        "    'hello'\n"
        '    """\n'
        "    pass\n"
    )
    stub = find_stub(source, 1)
    assert stub is not None
    body = "    with open(path, 'w') as f:\n        return f.write(text)"
    assert run_doctests_sandboxed(stub, body) == (4, 0)


def test_the_features_name_the_confinement() -> None:
    features = sandbox_features()
    assert features["python_guard"] and features["subprocess"]
    if features["files_confined"]:
        assert features["files"] in ("landlock", "sandbox-exec")
        assert (
            features["files"] in features["confinement"]
            or "landlock ABI" in (features["confinement"])
        )
    else:
        assert (
            features["confinement"] == "python guard only" or "broken" in (features["confinement"])
        )
    if sys.platform.startswith("linux") and os.environ.get("CI") == "true":
        assert features["files"] == "landlock" and features["seccomp"], features
        assert features["process_limit"], features


async def test_the_server_keeps_answering_while_hostile_programs_run(tmp_path: Path) -> None:
    """A real `phi-lsp serve`; sandboxed programs try to kill it and to fork without bound."""
    require_kernel_confinement()
    settings = {"model": str(tmp_path / "missing.gguf")}
    async with lsp_session(tmp_path, settings) as client:
        uri = (tmp_path / "a.py").as_uri()
        open_document(client, uri, "x = 1\n")
        server = client._server
        assert server is not None
        for prefix in ("", UNDO_GUARD):
            kill = prefix + f"import os, signal\nos.kill({server.pid}, signal.SIGKILL)\n"
            assert not (await asyncio.to_thread(run, kill)).passed
            bomb = prefix + "import os\nwhile True:\n    os.fork()\n"
            assert not (await asyncio.to_thread(run, bomb)).passed
        answer = await asyncio.wait_for(
            client.protocol.send_request_async("phiLsp/documentText", {"uri": uri}), 60
        )
        assert server.returncode is None
    assert "x = 1" in str(answer)


def test_an_unprivileged_user_gets_the_same_confinement(outside: Path, code: Path) -> None:
    """As `nobody` (the files outside are theirs, so only the sandbox stands in the way)."""
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: every other test here runs as this user")
    require_kernel_confinement()
    python = unprivileged_python(code)
    names = sorted(HOSTILE_WRITES)
    programs = [UNDO_GUARD + hostile(n, outside, outside / "home-probe") for n in names]
    programs += [hostile(n, outside, outside / "home-probe") for n in names]
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(code)!r})\n"
        "from phi_lsp.sandbox import run_sandboxed, sandbox_features\n"
        "programs = json.loads(sys.stdin.read())\n"
        "results = [run_sandboxed(p).status for p in programs]\n"
        "print(json.dumps([sandbox_features(), results]))\n"
    )
    before = snapshot(outside)
    done = subprocess.run(
        [*AS_NOBODY, python, "-c", script],
        input=json.dumps(programs),
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    features, statuses = json.loads(done.stdout)
    assert features["files_confined"] and features["process_limit"], features
    assert statuses == ["failed"] * len(names) + ["error"] * len(names)
    assert snapshot(outside) == before
    assert not (outside / "home-probe").exists()


@pytest.fixture
def code() -> Iterator[Path]:
    """phi_lsp/__init__.py and phi_lsp/sandbox/ (all the code under test) where `nobody` can
    read them, wherever this checkout is (CI may check out under /root)."""
    root = Path(tempfile.mkdtemp(prefix="phi-lsp-code-"))
    shutil.copytree(REPO / "phi_lsp" / "sandbox", root / "phi_lsp" / "sandbox")
    shutil.copy(REPO / "phi_lsp" / "__init__.py", root / "phi_lsp" / "__init__.py")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def unprivileged_python(code: Path) -> str:
    """A Python that `nobody` can run the sandbox with (fail in CI, else skip)."""
    candidates = [sys.executable, "/usr/bin/python3", shutil.which("python3")]
    probe = (
        f"import sys; sys.path.insert(0, {str(code)!r})\n"
        "from phi_lsp.sandbox import run_sandboxed\n"
        "assert run_sandboxed('pass').passed\n"
    )
    for python in dict.fromkeys(c for c in candidates if c):
        done = subprocess.run(
            [*AS_NOBODY, python, "-c", probe], capture_output=True, timeout=60, cwd="/"
        )
        if done.returncode == 0:
            return python
    message = f"no Python that uid {NOBODY} can run the sandbox with ({candidates})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
