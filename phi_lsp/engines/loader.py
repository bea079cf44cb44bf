"""Choose the engine for the settings and load it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from phi_lsp.engines.base import Engine, ModelLoadError
from phi_lsp.model_source import ModelSource, resolve_model
from phi_lsp.settings import Settings


def choose_backend(settings: Settings, source: ModelSource) -> str:
    """`auto`: transformers on CUDA (when there is an HF folder), llama.cpp otherwise."""
    if settings.backend != "auto":
        return settings.backend
    has_llamacpp = importlib.util.find_spec("llama_cpp") is not None
    if source.hf_dir is not None and settings.device in ("auto", "cuda"):
        from phi_lsp.engines.transformers_engine import cuda_available

        if cuda_available():
            return "transformers"
    if source.gguf is not None and has_llamacpp:
        return "llamacpp"
    if source.hf_dir is not None:
        return "transformers"
    raise ModelLoadError(
        f"{source.gguf} is a GGUF file, which needs llama-cpp-python: "
        "pip install 'phi-lsp[cpu]' (see the README for Metal/CUDA builds)."
    )


def load_engine(settings: Settings) -> Engine:
    """Resolve `settings.model`, pick the engine and load it (slow: call it off the event loop)."""
    remote_url = settings.remote_url
    if settings.backend == "auto" and remote_url is None:
        from phi_lsp.engine_launcher import running_engine

        running = running_engine(settings.model)
        remote_url = running.url if running else None
    adapter = Path(settings.adapter).expanduser() if settings.adapter else None
    if settings.backend == "remote" or (settings.backend == "auto" and remote_url):
        if adapter is not None:
            raise ModelLoadError(
                "phiLsp.adapter cannot be applied to a remote engine; serve the adapter there "
                "(vLLM --lora-modules) or use a local backend."
            )
        if not remote_url:
            raise ModelLoadError(
                "backend `remote` needs phiLsp.remoteUrl (e.g. http://127.0.0.1:8000)."
            )
        from phi_lsp.engines.remote_engine import RemoteEngine

        return RemoteEngine(
            remote_url, settings.remote_model, settings.remote_api_key_env, settings.context_tokens
        )
    source = resolve_model(settings.model)
    backend = choose_backend(settings, source)
    if backend == "llamacpp":
        if source.gguf is None:
            raise ModelLoadError(
                f"{source.label} has no GGUF file for llama.cpp. Convert it with "
                f"`phi-lsp convert {source.hf_dir}` or set phiLsp.backend to transformers."
            )
        if importlib.util.find_spec("llama_cpp") is None:
            raise ModelLoadError(
                "backend llamacpp needs llama-cpp-python: pip install 'phi-lsp[cpu]'."
            )
        from phi_lsp.engines.llamacpp_engine import LlamaCppEngine

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
    if source.hf_dir is None:
        raise ModelLoadError(
            f"{source.label} is a GGUF file; the transformers backend needs the Hugging Face "
            "folder (config.json + safetensors). Set phiLsp.backend to llamacpp or auto."
        )
    from phi_lsp.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        source.hf_dir,
        settings.device,
        settings.context_tokens,
        settings.n_threads,
        settings.quantization,
        settings.prompt_lookup_tokens,
        adapter,
    )
