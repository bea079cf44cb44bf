"""`phi-lsp doctor`: one screen on what this machine can run, each gap with its fix."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import dataclass
from typing import Any

from phi_lsp.errors import ModelLoadError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_checks(model: str = "phi-1") -> list[Check]:
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 10),
            f"{platform.python_version()} ({platform.machine()}, {platform.system()})",
            "phi-lsp needs Python 3.10+",
        )
    ]
    checks += _torch_checks()
    checks += _llamacpp_checks()
    checks += _model_checks(model)
    checks.append(_sandbox_check())
    return checks


def _sandbox_check() -> Check:
    """What confines model-written code (doctests of generated bodies, `phi-lsp eval`)."""
    from phi_lsp.sandbox import sandbox_features

    features = sandbox_features()
    return Check(
        "sandbox",
        bool(features["files_confined"]),
        str(features["confinement"]),
        "Linux >= 5.13 with Landlock enabled (or macOS sandbox-exec) confines files at the "
        "kernel level; until then the doctests of generated bodies run only with "
        'generateRunDoctests: "always"',
    )


def _torch_checks() -> list[Check]:
    version = _version("torch")
    if version is None:
        return [Check("torch", False, "not installed", "pip install torch")]
    from phi_lsp.runtime.devices import accelerators

    cuda, mps = accelerators()
    device = cuda or "no CUDA GPU"
    out = [
        Check("torch", True, f"{version}; CUDA: {device}; MPS: {'yes' if mps else 'no'}"),
        Check(
            "transformers",
            _version("transformers") is not None,
            _version("transformers") or "not installed",
            "pip install transformers",
        ),
    ]
    flash = importlib.util.find_spec("flash_attn") is not None
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    if cuda:
        out.append(
            Check(
                "flash-attn",
                flash,
                "installed" if flash else "missing (SDPA is used)",
                "pip install 'phi-lsp[cuda]' (needs a CUDA build of torch)",
            )
        )
        out.append(
            Check(
                "bitsandbytes",
                bnb,
                "installed" if bnb else "missing (no 4-bit NF4)",
                "pip install bitsandbytes",
            )
        )
    else:
        out.append(Check("flash-attn / bitsandbytes", True, "only used on CUDA"))
    return out


def _llamacpp_checks() -> list[Check]:
    version = _version("llama_cpp_python")
    if version is None:
        return [
            Check(
                "llama.cpp",
                False,
                "llama-cpp-python is not installed",
                "CMAKE_ARGS='-DLLAVA_BUILD=OFF' pip install 'phi-lsp[cpu]' "
                "(Metal: -DGGML_METAL=on, CUDA: -DGGML_CUDA=on)",
            )
        ]
    from phi_lsp.runtime.engines.llama_buffers import system_info

    info, features, offload = system_info()
    return [
        Check("llama.cpp", True, f"llama-cpp-python {version}; CPU: {features or info}"),
        Check(
            "llama.cpp GPU offload",
            True,
            "Metal/CUDA build" if offload else "CPU-only build (gpuLayers is ignored)",
            "" if offload else "rebuild with CMAKE_ARGS='-DGGML_CUDA=on' or '-DGGML_METAL=on'",
        ),
    ]


def _model_checks(model: str) -> list[Check]:
    from phi_lsp.models.store import list_models
    from phi_lsp.runtime.engines.loader import choose_backend
    from phi_lsp.settings import Settings

    cached = [m for m in list_models() if m.cached]
    listing = ", ".join(f"{m.name} ({'/'.join(m.quants) or 'hf'})" for m in cached) or "none"
    out = [Check("models cached", bool(cached), listing, "phi-lsp models pull phi-1")]
    try:
        choice = choose_backend(Settings(model=model))
        out.append(Check(f"model {model!r}", True, f"backend auto → {choice.describe()}"))
    except ModelLoadError as exc:
        out.append(Check(f"model {model!r}", False, str(exc), f"phi-lsp models pull {model}"))
    return out


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{'ok ' if c.ok else 'NO '} {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"    {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines)


def add_parser(commands: Any) -> None:
    doctor = commands.add_parser("doctor", help="what this machine can run, and fixes")
    doctor.add_argument("--model", default="phi-1")
    doctor.set_defaults(run=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    checks = run_checks(args.model)
    print(render(checks))
    return 0 if all(c.ok for c in checks) else 1
