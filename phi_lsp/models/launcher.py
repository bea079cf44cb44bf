"""`phi-lsp engine start|stop|status`: one shared engine for many editor windows.

Each editor window starts its own language server; without this each would load its own copy
of the model. `engine start` runs llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`) on a pulled GGUF and records it in `PHI_LSP_HOME/engine.json`;
a language server with `backend = auto` then finds it and sends its completions there. This is
a thin launcher for an existing server, not a server of our own.

It binds to loopback. Any other address needs `allow_remote` and an API key, which is passed to
the server through its environment and never written to the state file or a log.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from phi_lsp.models.source import phi_lsp_home, resolve_model

STATE = "engine.json"


class EngineError(Exception):
    """The engine cannot be started or reached; the message says why."""


@dataclass(frozen=True)
class RunningEngine:
    pid: int
    url: str
    model: str  # the `model` spec it was started for (a name or a path)
    gguf: str
    log: str


def state_file() -> Path:
    return phi_lsp_home() / STATE


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state() -> RunningEngine | None:
    try:
        data = json.loads(state_file().read_text())
        engine = RunningEngine(**data)
    except (OSError, ValueError, TypeError):
        return None
    return engine if _alive(engine.pid) else None


def running_engine(model: str) -> RunningEngine | None:
    """The running shared engine, if it serves `model` and answers."""
    engine = read_state()
    if engine is None or engine.model != model:
        return None
    try:
        httpx.get(f"{engine.url}/v1/models", timeout=1.0).raise_for_status()
    except httpx.HTTPError:
        return None
    return engine


def start(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    n_ctx: int = 2048,
    threads: int | None = None,
    allow_remote: bool = False,
    api_key_env: str = "PHI_LSP_API_KEY",
    cpu_buffers: str = "auto",
    wait_s: float = 120.0,
) -> RunningEngine:
    if not _is_loopback(host):
        if not allow_remote:
            raise EngineError(
                f"{host} is not a loopback address: pass --allow-remote to serve other machines."
            )
        if not os.environ.get(api_key_env):
            raise EngineError(f"serving {host} needs an API key in ${api_key_env}.")
    current = read_state()
    if current is not None:
        raise EngineError(f"an engine is already running (pid {current.pid}, {current.url}).")
    source = resolve_model(model)
    if source.gguf is None:
        raise EngineError(f"{model} has no GGUF file; run `phi-lsp models pull {model}` first.")
    port = port or _free_port(host)
    log_path = phi_lsp_home() / "logs" / "engine.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "phi_lsp.runtime.engines.llama_server",
        cpu_buffers,
        str(source.gguf),
        "--",
        "--model",
        str(source.gguf),
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--model_alias",
        model,
    ]
    if threads:
        command += ["--n_threads", str(threads)]
    env = dict(os.environ)
    key = os.environ.get(api_key_env)
    if key:
        env["API_KEY"] = key  # llama_cpp.server's own setting, read from the environment
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # outlives the terminal that started it
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', 'localhost') else host}:{port}"
    engine = RunningEngine(process.pid, url, model, str(source.gguf), str(log_path))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(f"the engine exited with {process.returncode}; see {log_path}")
        try:
            httpx.get(f"{url}/v1/models", headers=headers, timeout=1.0).raise_for_status()
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        raise EngineError(f"the engine did not answer within {wait_s:.0f} s; see {log_path}")
    tmp = state_file().with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(engine)))
    os.replace(tmp, state_file())
    return engine


def stop() -> RunningEngine | None:
    engine = read_state()
    if engine is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(engine.pid, signal.SIGTERM)
        for _ in range(50):
            if not _alive(engine.pid):
                break
            time.sleep(0.1)
    state_file().unlink(missing_ok=True)
    return engine
