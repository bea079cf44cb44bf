"""The `phiLsp` settings: one pydantic model, validated one key at a time.

An editor sends settings from three places (initializationOptions, workspace/configuration and
didChangeConfiguration). A bad value must not throw away the good ones, so `Settings.merge`
applies each key on its own and reports the ones it rejected with the setting's name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

SECTION = "phiLsp"

# Settings whose change means the engine must be loaded again.
ENGINE_KEYS = frozenset(
    {
        "model",
        "backend",
        "device",
        "context_tokens",
        "n_threads",
        "gpu_layers",
        "quantization",
        "compiled_decoding",
        "cpu_buffers",
        "kv_cache_values",
        "prompt_lookup_tokens",
        "adapter",
        "remote_url",
        "remote_model",
        "remote_api_key_env",
    }
)


class Settings(BaseModel):
    """Every setting phi-lsp reads, with its default. Keys are camelCase on the wire."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    model: str = Field(
        "phi-1",
        min_length=1,
        description="A model name (e.g. `phi-1`), or a path to a GGUF file or an HF model folder.",
    )
    backend: Literal["auto", "llamacpp", "transformers", "remote"] = Field(
        "auto",
        description="`auto`: a running `phi-lsp engine` for this model, else transformers on "
        "CUDA, else llama.cpp; `remote`: an OpenAI-compatible server at remoteUrl.",
    )
    remote_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible server (backend `remote`)."
    )
    remote_model: str | None = Field(
        None, description="Model name to ask the remote server for; unset: its first model."
    )
    remote_api_key_env: str = Field(
        "PHI_LSP_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the remote server's API key (never logged).",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where the transformers engine runs."
    )
    max_new_tokens: int = Field(
        64, ge=1, le=1024, description="Most tokens one completion may add."
    )
    context_tokens: int = Field(
        2048, ge=64, le=131072, description="Model context size: prompt + completion, in tokens."
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 means greedy decoding.")
    enable: bool = Field(
        True, description="Turn completions on or off without stopping the server."
    )
    n_threads: int | None = Field(
        None, ge=1, le=512, description="CPU threads for the engine; unset: the number of cores."
    )
    gpu_layers: int = Field(
        -1, ge=-1, description="Layers llama.cpp offloads to Metal/CUDA; -1 all, 0 none."
    )
    adapter: str | None = Field(
        None,
        description="A `phi-lsp finetune` adapter folder (RUN/adapter): peft weights for "
        "transformers, lora.gguf for llama.cpp. Changing it reloads without a restart. "
        '`"promoted"`: the adapter `phi-lsp finetune` promoted (PHI_LSP_HOME/finetune/'
        "promoted.json), or none; the server reloads when a promotion or rollback changes it.",
    )
    cpu_buffers: Literal["auto", "default", "no-amx", "plain"] = Field(
        "auto",
        description="llama.cpp weight buffers on the CPU: `auto` avoids the AMX path, which "
        "crashes on quantized models (llama.cpp #20824), on CPUs that have AMX.",
    )
    kv_cache_values: Literal["f16", "q8_0"] = Field(
        "f16",
        description="llama.cpp: how the KV cache stores attention values. `q8_0` uses ~90 MB "
        "less at phi-1's 2048 context and decodes ~15% faster on a CPU, but processes prompts "
        "far slower as the context grows (a third of f16's speed at 1,500 tokens).",
    )
    quantization: Literal["none", "nf4"] = Field(
        "none", description="transformers on CUDA: `nf4` loads 4-bit weights through bitsandbytes."
    )
    compiled_decoding: Literal["auto", "on", "off"] = Field(
        "auto",
        description="transformers: decode on a static KV cache with the one-token step compiled "
        "at load (a CUDA graph on CUDA). `auto`: on CUDA only; `on`: also on CPU / MPS "
        "(inductor; compiling takes minutes); `off`: transformers' generate().",
    )
    debounce_ms: int | None = Field(
        None,
        ge=0,
        le=2000,
        description="Wait before starting the model; unset: adaptive (only during fast "
        "typing, at most 150 ms); 0: never.",
    )
    typed_ahead_cache: bool = Field(
        True, description="Serve the rest of a shown suggestion while the user types into it."
    )
    prefix_cache: bool = Field(
        True,
        description="Reuse the engine's KV cache for the prompt prefix shared with the last "
        "request (off only to measure what it saves).",
    )
    token_healing: Literal["word", "token", "off"] = Field(
        "word",
        description="When the cursor splits a token (mid-word, after a space), give the "
        "split end of the prompt back to the model and have it write that again: `word` "
        "backs up over the last word, operator or space run; `token` only over the last "
        "token; `off` never.",
    )
    max_latency_ms: int | None = Field(
        None,
        ge=50,
        le=60000,
        description="Stop generating when this much time has passed and show what is "
        "there, cut back to a clean boundary; unset: no limit.",
    )
    prompt_lookup_tokens: int = Field(
        0,
        ge=0,
        le=64,
        description="Speculative decoding from the document: draft this many tokens by "
        "matching the text just generated earlier in the prompt (0: off).",
    )
    generate_candidates: int = Field(
        3, ge=1, le=20, description="Docstring → body: candidates generated (best of N)."
    )
    generate_max_tokens: int = Field(
        256, ge=16, le=2048, description="Docstring → body: most tokens one body may have."
    )
    generate_temperature: float = Field(
        0.8, ge=0.0, le=2.0, description="Docstring → body: temperature of the sampled candidates."
    )
    generate_run_doctests: Literal["when-confined", "always", "never"] = Field(
        "when-confined",
        description="Docstring → body: run the candidates' doctests in the sandbox to rank them. "
        "`when-confined`: only where the kernel keeps the sandbox's writes in its run directory "
        "(Landlock on Linux, sandbox-exec on macOS; see `phi-lsp doctor`); `always`: also with "
        "only the Python guard; `never`: rank by log-probability alone.",
    )
    usage: bool = Field(
        True,
        description="Record, on this machine only (PHI_LSP_HOME/usage), which suggestions were "
        "shown, accepted and kept: for `phi-lsp stats` and `phi-lsp finetune --from-usage`.",
    )
    usage_ignore: list[str] = Field(
        [".env*", "*secret*", "*.pem", "*.key"],
        description="Files (globs on the name or the path) for which nothing is recorded.",
    )
    completion_fallback: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Offer `textDocument/completion` items: `auto` only for clients without "
        "inline completion (read from initializationOptions).",
    )

    def merge(self, incoming: dict[str, Any]) -> tuple[Settings, list[str]]:
        """Apply `incoming` over these settings; return the result and one error per bad key.

        A rejected key keeps its previous value; the other keys still apply.
        """
        current = self.model_dump(by_alias=True)
        errors: list[str] = []
        for key, value in incoming.items():
            if value is None and key in current and current[key] is None:
                continue
            candidate = {**current, key: value}
            try:
                Settings.model_validate(candidate)
            except ValidationError as exc:
                errors.append(_describe(key, value, exc))
                continue
            current = candidate
        return Settings.model_validate(current), errors

    def engine_changed(self, other: Settings) -> bool:
        """True when going from `other` to these settings needs the engine loaded again."""
        return any(getattr(self, k) != getattr(other, k) for k in ENGINE_KEYS)


def _describe(key: str, value: Any, exc: ValidationError) -> str:
    """One line a user can act on: which setting, what was wrong, and that the old value stays."""
    err = exc.errors()[0]
    reason = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
    return f"{SECTION}.{key} = {value!r} was ignored: {reason}. The previous value stays in force."


def settings_from_client(raw: Any) -> dict[str, Any]:
    """Pick the `phiLsp` section out of whatever shape a client sent.

    Clients send either the section itself or an object that contains it; anything that is not
    a mapping is treated as no settings.
    """
    if not isinstance(raw, dict):
        return {}
    inner = raw.get(SECTION)
    if isinstance(inner, dict):
        return inner
    return raw


def wire_schema() -> dict[str, dict[str, Any]]:
    """Each setting's JSON schema by its camelCase key, as editors' settings schemas want it.

    pydantic writes `int | None` as anyOf[{type: integer, bounds}, {type: null}]; here that is
    one dict with `type: ["integer", "null"]` and the bounds.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, schema in Settings.model_json_schema(by_alias=True)["properties"].items():
        merged = {k: v for k, v in schema.items() if k != "anyOf"}
        if "anyOf" in schema:
            merged["type"] = []
            for option in schema["anyOf"]:
                merged["type"].append(option["type"])
                merged.update({k: v for k, v in option.items() if k != "type"})
        out[name] = merged
    return out
