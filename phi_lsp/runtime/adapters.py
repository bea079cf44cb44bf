"""LoRA adapters from `phi-lsp finetune`, applied where a model is loaded.

The adapter folder (`RUN/adapter/`) serves both engines: peft's files for transformers, and
`lora.gguf` (written by `finetune.export`) for llama.cpp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LORA_GGUF = "lora.gguf"


def resolve_adapter(value: str | None) -> Path | None:
    """The `adapter` setting as a folder: "promoted" is the adapter `phi-lsp finetune`
    promoted (PHI_LSP_HOME/finetune/promoted.json), or None when none is."""
    from phi_lsp.models.promoted import PROMOTED, promoted_adapter

    if not value:
        return None
    if value == PROMOTED:
        return promoted_adapter()
    return Path(value).expanduser()


def lora_gguf_path(adapter_dir: Path) -> Path | None:
    """The llama.cpp adapter in an adapter folder, if there is one."""
    path = Path(adapter_dir) / LORA_GGUF
    return path if path.is_file() else None


def apply_adapter(model: Any, adapter_dir: Path, merge: bool = True) -> Any:
    """`model` with the peft adapter in `adapter_dir`, in eval mode; merged into the weights
    (no extra cost per token) unless `merge` is False or the base is quantized."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(
        model, "is_loaded_in_8bit", False
    )
    if merge and not quantized:
        return peft_model.merge_and_unload().eval()
    return peft_model.eval()
