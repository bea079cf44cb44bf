"""Choose the engine for the settings (all of backend "auto" is here) and load it."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from phi_lsp.errors import ModelLoadError
from phi_lsp.models.launcher import running_engine
from phi_lsp.models.source import ModelSource, resolve_model
from phi_lsp.runtime.adapters import resolve_adapter
from phi_lsp.runtime.engines.base import Engine
from phi_lsp.settings import Settings


@dataclass(frozen=True)
class Choice:
    backend: str  # "llamacpp" | "transformers" | "remote"
    source: ModelSource | None = None  # the local model; None for remote
    remote_url: str | None = None

    def describe(self) -> str:
        where = self.remote_url if self.source is None else self.source.gguf or self.source.hf_dir
        return f"{self.backend} ({where})"


def choose_backend(settings: Settings) -> Choice:
    """`auto`: a shared engine already serving this model (`phi-lsp engine start`), else
    transformers on CUDA (when there is an HF folder), else llama.cpp, else transformers."""
    remote_url = settings.remote_url
    if settings.backend == "auto" and remote_url is None:
        running = running_engine(settings.model)
        remote_url = running.url if running else None
    if settings.backend == "remote" or (settings.backend == "auto" and remote_url):
        if not remote_url:
            raise ModelLoadError(
                "backend `remote` needs phiLsp.remoteUrl (e.g. http://127.0.0.1:8000)."
            )
        return Choice("remote", remote_url=remote_url)
    source = resolve_model(settings.model)
    if settings.backend != "auto":
        return Choice(settings.backend, source)
    if source.hf_dir is not None and settings.device in ("auto", "cuda"):
        from phi_lsp.runtime.devices import cuda_available

        if cuda_available():
            return Choice("transformers", source)
    if source.gguf is not None and importlib.util.find_spec("llama_cpp") is not None:
        return Choice("llamacpp", source)
    if source.hf_dir is not None:
        return Choice("transformers", source)
    raise ModelLoadError(
        f"{source.gguf} is a GGUF file, which needs llama-cpp-python: "
        "pip install 'phi-lsp[cpu]' (see the README for Metal/CUDA builds)."
    )


def load_engine(settings: Settings) -> Engine:
    """Resolve `settings.model`, pick the engine and load it (slow: call it off the event loop)."""
    choice = choose_backend(settings)
    adapter = resolve_adapter(settings.adapter)
    if choice.source is None:
        assert choice.remote_url is not None
        if adapter is not None:
            raise ModelLoadError(
                "phiLsp.adapter cannot be applied to a remote engine; serve the adapter there "
                "(vLLM --lora-modules) or use a local backend."
            )
        from phi_lsp.runtime.engines.remote_engine import RemoteEngine

        return RemoteEngine(
            choice.remote_url,
            settings.remote_model,
            settings.remote_api_key_env,
            settings.context_tokens,
        )
    if choice.backend == "llamacpp":
        return load_llamacpp(choice.source, settings, adapter)
    return load_transformers(choice.source, settings, adapter)


def load_llamacpp(source: ModelSource, settings: Settings, adapter: Path | None) -> Engine:
    if source.gguf is None:
        raise ModelLoadError(
            f"{source.label} has no GGUF file for llama.cpp. Convert it with "
            f"`phi-lsp convert {source.hf_dir}` or set phiLsp.backend to transformers."
        )
    if importlib.util.find_spec("llama_cpp") is None:
        raise ModelLoadError("backend llamacpp needs llama-cpp-python: pip install 'phi-lsp[cpu]'.")
    from phi_lsp.runtime.engines.llamacpp_engine import LlamaCppEngine

    return LlamaCppEngine(
        source.gguf,
        settings.context_tokens,
        settings.n_threads,
        settings.gpu_layers,
        settings.cpu_buffers,
        settings.kv_cache_values,
        settings.prompt_lookup_tokens,
        adapter,
    )


def load_transformers(source: ModelSource, settings: Settings, adapter: Path | None) -> Engine:
    if source.hf_dir is None:
        raise ModelLoadError(
            f"{source.label} is a GGUF file; the transformers backend needs the Hugging Face "
            "folder (config.json + safetensors). Set phiLsp.backend to llamacpp or auto."
        )
    from phi_lsp.runtime.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        source.hf_dir,
        settings.device,
        settings.context_tokens,
        settings.n_threads,
        settings.quantization,
        settings.prompt_lookup_tokens,
        adapter,
        settings.compiled_decoding,
    )
