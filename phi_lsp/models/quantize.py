"""Quantize a GGUF model with llama.cpp's own quantizer (through llama-cpp-python).

`quantize_gguf` writes the result under a temporary name next to the destination and renames
it into place only when llama.cpp reports success, so a failed or interrupted run never
leaves a file that looks like a finished model.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Literal, get_args

logger = logging.getLogger(__name__)

QuantType = Literal["q4_0", "q4_k_m", "q8_0", "f16"]

# llama.cpp `llama_ftype` constant names in llama_cpp, per supported quant.
_FTYPE_NAMES: dict[str, str] = {
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "f16": "LLAMA_FTYPE_MOSTLY_F16",
}
_GGUF_MAGIC = b"GGUF"


def quantize_gguf(
    src: str | Path, dst: str | Path, quant: QuantType | str, threads: int | None = None
) -> Path:
    """Quantize the GGUF model `src` to `quant`, write it to `dst` and return `dst`.

    `quant` is one of QuantType; plain strings (e.g. from a manifest) are accepted and checked
    at run time.

    `threads` defaults to llama.cpp's choice (all hardware threads). For "f16" a source that
    is already F16 is copied rather than re-quantized. K-quants ("q4_k_m") need tensor rows
    divisible by 256; llama.cpp quietly uses a fallback type for tensors that are not.

    Raises ValueError for a bad argument or a source that is not a GGUF file, and
    RuntimeError when llama.cpp fails; in both cases nothing is left at `dst` (an existing
    `dst` is only replaced on success).
    """
    src = Path(src)
    dst = Path(dst)
    if quant not in _FTYPE_NAMES:
        raise ValueError(f"quant must be one of {list(get_args(QuantType))}, got {quant!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if not src.is_file():
        raise ValueError(f"{src} is not a file")
    with src.open("rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise ValueError(f"{src} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"source and destination are the same file: {src}")

    dst.parent.mkdir(parents=True, exist_ok=True)
    # Unique, hidden, not ending in .gguf: nothing mistakes it for a finished model.
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if quant == "f16" and _is_f16(src):
            shutil.copyfile(src, tmp)
        else:
            _llama_quantize(src, tmp, quant, threads)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst


def _is_f16(path: Path) -> bool:
    """Whether the GGUF's general.file_type says MOSTLY_F16."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        field = reader.fields.get("general.file_type")
        return field is not None and int(field.contents()) == int(gguf.LlamaFileType.MOSTLY_F16)
    except Exception as e:  # a damaged file: let llama.cpp report it
        logger.debug("cannot read file type of %s: %s", path, e)
        return False


def _llama_quantize(src: Path, tmp: Path, quant: str, threads: int | None) -> None:
    try:
        import llama_cpp
    except ImportError as e:
        raise RuntimeError("quantizing needs llama-cpp-python (pip install 'phi-lsp[cpu]')") from e

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _FTYPE_NAMES[quant])
    params.nthread = threads or 0  # <= 0: llama.cpp uses std::thread::hardware_concurrency()
    rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(tmp), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(
            f"llama.cpp failed to quantize {src} to {quant} (llama_model_quantize returned "
            f"{rc}; its log on stderr has the reason)"
        )
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise RuntimeError(f"llama.cpp reported success but wrote no output for {src}")
