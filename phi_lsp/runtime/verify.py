"""`phi-lsp models verify`: a cached model's files match its lock, and each engine loads it."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi_lsp.models.source import resolve_model
from phi_lsp.models.store import check_files
from phi_lsp.runtime.engines.base import GenerationRequest


@dataclass
class VerifyReport:
    name: str
    problems: list[str]
    checked: list[str]
    smoke: dict[str, str]  # engine → generated text or the reason it is unavailable


def verify(name: str, smoke_tokens: int = 16) -> VerifyReport:
    """Hashes against the lock, then a few tokens from each engine that can load the model."""
    folder, problems, checked = check_files(name)
    smoke = smoke_test(folder, smoke_tokens)
    return VerifyReport(name, problems, checked, smoke)


def smoke_test(folder: Path, tokens: int) -> dict[str, str]:
    """Generate a few tokens with each engine that can load this model."""
    source = resolve_model(str(folder))
    prompt = GenerationRequest("def fibonacci(n):\n", max_new_tokens=tokens)
    results: dict[str, str] = {}
    if source.gguf is None:
        results["llamacpp"] = "unavailable: no GGUF file"
    elif importlib.util.find_spec("llama_cpp") is None:
        results["llamacpp"] = "unavailable: pip install 'phi-lsp[cpu]'"
    else:
        from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

        results["llamacpp"] = _smoke(lambda: LlamaCppEngine(source.gguf), prompt)
    if source.hf_dir is None:
        results["transformers"] = "unavailable: no HF folder (config + safetensors)"
    else:
        from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

        results["transformers"] = _smoke(lambda: TransformersEngine(source.hf_dir), prompt)
    return results


def _smoke(make: Any, request: Any) -> str:
    try:
        engine = make()
    except Exception as exc:
        return f"FAILED to load: {exc}"
    try:
        out = engine.generate(request, threading.Event())
        return f"ok: {out.generated_tokens} tokens {out.text!r}"
    finally:
        engine.close()
