"""Where llama.cpp keeps quantized weights on the CPU, for hosts where its AMX path crashes.

On CPUs with AMX (Intel Sapphire Rapids and later) a native llama-cpp-python build puts the
quantized matmul weights in its AMX buffer, and `ggml_backend_amx_mul_mat` segfaults on the
first decode (Q4_0, Q8_0; llama.cpp issue #20824, closed without a fix). `Llama(...)` has no
argument for this, so `weight_buffers` patches the model parameters llama-cpp-python starts
from, while one model loads:

  default  llama.cpp's choice (AMX first where the CPU has it, else CPU_REPACK)
  no-amx   no extra buffers, except the Q4_0 block weights, which go to CPU_REPACK explicitly
           (its fast repacked 8x8 Q4_0 kernels)
  plain    no extra buffers at all (plain dot products: prefill about 2-3x slower)
  auto     no-amx on a CPU with AMX, default elsewhere

Repacked weights are copies: whenever some are (decided from the GGUF and this build's buffer
types, `repacks`), the model loads without mmap, or the mapped file would hold them a second
time (phi-1 Q4_0 on an AMD Zen 4 CPU, `default`: 1,939 MB peak RSS with mmap, see Buffers).
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

MODES = ("auto", "default", "no-amx", "plain")
GGML_BACKEND_DEVICE_TYPE_CPU = 0
# Weight types each extra buffer copies into its own layout, among those phi-lsp quantizes to
# (CPU_REPACK: 8x8 Q4_0/Q4_K with AVX2, 4x4/4x8 with NEON; its Q8_0 kernels are ARM-only).
REPACKED_TYPES = {"CPU_REPACK": ("Q4_0", "Q4_K"), "AMX": ("Q4_0", "Q4_K", "Q8_0")}


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@cache
def cpu_has_amx() -> bool:
    try:
        return bool(re.search(r"\bamx_int8\b", Path("/proc/cpuinfo").read_text()))
    except OSError:
        return False


def resolve(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"CPU buffer mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "no-amx" if cpu_has_amx() else "default"
    return mode


@cache
def extra_buffer_types() -> dict[str, int]:
    """The CPU backend's extra buffer types by name (e.g. AMX, CPU_REPACK) → handle."""
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so"))
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_buft_name.restype = ctypes.c_char_p
    lib.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    dev = lib.ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)
    if not dev:
        return {}
    reg = lib.ggml_backend_dev_backend_reg(dev)
    address = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return {}
    get_extra = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)
    array = get_extra(dev)
    found: dict[str, int] = {}
    i = 0
    while array and array[i]:
        name = lib.ggml_backend_buft_name(array[i])
        found[name.decode() if name else f"#{i}"] = int(array[i])
        i += 1
    return found


def repackable_tensors(model: Path, types: Iterable[str] = ("Q4_0",)) -> list[str]:
    """Block matmul weights of `types` whose rows split in 8s (what CPU_REPACK's Q4_0 takes)."""
    from gguf import GGUFReader

    wanted = set(types)
    names = []
    for tensor in GGUFReader(str(model)).tensors:
        shape = [int(d) for d in tensor.shape]
        if (
            tensor.name.startswith("blk.")
            and tensor.name.endswith(".weight")
            and tensor.tensor_type.name in wanted
            and len(shape) == 2
            and shape[1] % 8 == 0
        ):
            names.append(tensor.name)
    return names


def repacks(model: Path) -> bool:
    """Whether llama.cpp's default buffers copy some of `model`'s weights (on this build)."""
    bufts = extra_buffer_types()
    types = {t for name, kinds in REPACKED_TYPES.items() if name in bufts for t in kinds}
    return bool(types) and bool(repackable_tensors(model, types))


class Buffers:
    """What `weight_buffers` did; holds the override table llama.cpp's params point to."""

    def __init__(self, description: str, table: Any = None, repacked: bool = False) -> None:
        self.description, self.table, self.repacked = description, table, repacked

    @property
    def use_mmap(self) -> bool:
        """Repacked weights are copies: mapping the file too would hold the weights twice
        (phi-1 Q4_0 peak RSS with mmap: 1.96 GB with the no-amx override, 1.94 GB with
        the default buffers on Zen 4; 1.31 GB without)."""
        return not self.repacked


@contextmanager
def weight_buffers(mode: str, model: Path) -> Iterator[Buffers]:
    """While loading `model`, put its weights where `mode` says.

    Keep the yielded object as long as the model lives: the loaded model's params keep a raw
    pointer to its override table.
    """
    mode = resolve(mode)
    if mode == "default":
        repacked = repacks(model)
        note = "; weights repacked, so no mmap" if repacked else ""
        yield Buffers(f"llama.cpp's default buffers{note}", repacked=repacked)
        return
    import llama_cpp.llama_cpp as lib

    overrides: Any = None
    described = "plain CPU buffers"
    if mode == "no-amx":
        repack = extra_buffer_types().get("CPU_REPACK")
        names = repackable_tensors(model) if repack else []
        if repack and names:
            pattern = "^(" + "|".join(re.escape(n) for n in names) + ")$"
            overrides = (_BuftOverride * 2)(
                _BuftOverride(pattern.encode(), repack), _BuftOverride(None, None)
            )
            described = f"no AMX; {len(names)} Q4_0 weights in CPU_REPACK"
    original = lib.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = False
        if overrides is not None:
            params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
        return params

    lib.llama_model_default_params = patched
    try:
        yield Buffers(described, overrides, repacked=overrides is not None)
    finally:
        lib.llama_model_default_params = original


def system_info() -> tuple[str, str, bool]:
    """(llama.cpp's system info line, the CPU features it uses, whether it can offload to a
    GPU), for `phi-lsp doctor`."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    features = " ".join(
        p.split(" = ")[0].replace("CPU :", "").strip()
        for p in info.split("|")
        if p.strip().endswith("= 1")
    )
    return info, features, bool(llama_cpp.llama_supports_gpu_offload())
