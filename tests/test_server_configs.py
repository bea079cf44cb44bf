"""server/: the vLLM and Kubernetes configuration, checked statically (no GPU here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from needs import need_module

SERVER = Path(__file__).parent.parent / "server"
# Flags of `vllm serve` (vLLM's engine and OpenAI-server arguments) that the files use.
VLLM_FLAGS = {
    "--model",
    "--revision",
    "--served-model-name",
    "--host",
    "--port",
    "--dtype",
    "--max-model-len",
    "--tensor-parallel-size",
    "--gpu-memory-utilization",
    "--api-key",
    "--enable-lora",
    "--max-lora-rank",
    "--lora-modules",
}


def flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def test_serve_script_uses_known_flags_and_needs_a_key() -> None:
    script = (SERVER / "vllm" / "serve.sh").read_text()
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", script))
    assert used <= VLLM_FLAGS, used - VLLM_FLAGS
    assert "PHI_LSP_API_KEY:?" in script
    subprocess.run(["bash", "-n", str(SERVER / "vllm" / "serve.sh")], check=True)


def test_compose_file() -> None:
    compose = yaml.safe_load((SERVER / "vllm" / "compose.yaml").read_text())
    service = compose["services"]["phi-vllm"]
    assert flags(service["command"]) <= VLLM_FLAGS
    assert any(p.startswith("127.0.0.1:") for p in service["ports"])  # loopback by default
    assert service["healthcheck"]["test"][-1].endswith("/health")
    gpu = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_kubernetes_manifest() -> None:
    deployment, service = yaml.safe_load_all((SERVER / "kubernetes" / "phi-vllm.yaml").read_text())
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    spec = deployment["spec"]
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    (container,) = spec["template"]["spec"]["containers"]
    assert flags(container["args"]) <= VLLM_FLAGS
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    key = next(e for e in container["env"] if e["name"] == "VLLM_API_KEY")
    assert "secretKeyRef" in key["valueFrom"]  # the key comes from a Secret, not the manifest
    assert service["kind"] == "Service" and service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_engine_launcher_flags_are_ones_llama_cpp_server_accepts() -> None:
    need_module("llama_cpp.server")
    from phi_lsp.models import launcher as engine_launcher

    help_text = subprocess.run(
        [sys.executable, "-m", "llama_cpp.server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    source = Path(engine_launcher.__file__).read_text()
    launched = set(re.findall(r'"(--[a-z_]+)"', source)) - {"--"}
    assert launched and all(flag in help_text for flag in launched), launched
