"""What both architectures share: reading config.json, finding the safetensors shards, and
streaming tensors into the GGUF writer one at a time (2-D weights as `outtype`, 1-D as f32).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

OutType = Literal["f32", "f16"]

# Buffers some older checkpoints carry that llama.cpp recomputes itself.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def read_config(hf_dir: Path) -> dict[str, Any]:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{hf_dir} has no config.json; expected a Hugging Face model folder")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not contain a JSON object")
    return config


def model_name(hf_dir: Path, config: dict[str, Any]) -> str:
    name = config.get("_name_or_path")
    if isinstance(name, str) and name and not os.path.isabs(name):
        return name.rsplit("/", 1)[-1]
    return hf_dir.resolve().name


def safetensors_files(hf_dir: Path) -> list[Path]:
    """The safetensors shards of the model; pickled .bin weights are never loaded."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = sorted({hf_dir / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{hf_dir}: shards listed in {index.name} are missing: {missing}")
        if files:
            return files
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return [single]
    # Unindexed shards; never pick up unrelated files such as adapter_model.safetensors.
    files = sorted(hf_dir.glob("model*.safetensors"))
    if files:
        return files
    bins = sorted(p.name for p in hf_dir.glob("*.bin"))
    hint = (
        f" (found {bins}; pickled .bin weights are not loaded for safety — download the "
        f"model.safetensors files instead)"
        if bins
        else ""
    )
    raise ValueError(f"{hf_dir} has no .safetensors weights{hint}")


@dataclass(frozen=True)
class TensorSpec:
    gguf_name: str
    src_name: str
    shard: Path
    shape: tuple[int, ...]
    src_dtype: str
    out_dtype: type[np.floating[Any]]
    # Set for tensors the converter generates (phi-3's rope factors) rather than reads.
    data: np.ndarray[Any, Any] | None = field(default=None, compare=False, repr=False)


def _plan_tensors(
    shards: list[Path],
    n_layer: int,
    outtype: OutType,
    arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.PHI2,
    require_output: bool = True,
) -> list[TensorSpec]:
    """Map every source tensor to its GGUF name and output dtype without loading data.

    `require_output=False` lets a tied-embedding model go without `output.weight`: llama.cpp's
    phi3 then reuses token_embd (its phi2 always needs the separate output tensor).
    """
    from safetensors import safe_open

    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    tmap = gguf.get_tensor_name_map(arch, n_layer)
    specs: list[TensorSpec] = []
    seen: set[str] = set()
    for shard in shards:
        with safe_open(str(shard), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                if name.endswith(_IGNORED_SUFFIXES):
                    continue
                new_name = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise ValueError(
                        f"{shard.name}: tensor {name!r} has no {arch_name} GGUF equivalent"
                    )
                if arch == gguf.MODEL_ARCH.PHI3 and name.endswith(".bias"):
                    raise ValueError(
                        f"{shard.name}: tensor {name!r}: llama.cpp's phi3 has no biases"
                    )
                if new_name in seen:
                    raise ValueError(f"{shard.name}: tensor {name!r} appears twice")
                seen.add(new_name)
                sl = f.get_slice(name)
                shape = tuple(int(d) for d in sl.get_shape())
                out: type[np.floating[Any]] = (
                    np.float16 if outtype == "f16" and len(shape) >= 2 else np.float32
                )
                specs.append(TensorSpec(new_name, name, shard, shape, sl.get_dtype(), out))
    if require_output and "output.weight" not in seen:
        raise ValueError(
            "no lm_head.weight found; tied-embedding phi checkpoints are unsupported (phi-3 "
            "ones need tie_word_embeddings=true in config.json)"
        )
    return specs


def _load_tensors(specs: list[TensorSpec]) -> Iterator[np.ndarray[Any, Any]]:
    """Yield each tensor converted to its output dtype, one at a time to bound memory."""
    from safetensors import safe_open

    with ExitStack() as stack:
        handles: dict[tuple[Path, str], Any] = {}
        for spec in specs:
            if spec.data is not None:
                yield np.ascontiguousarray(spec.data.astype(spec.out_dtype, copy=False))
                continue
            framework = "pt" if spec.src_dtype == "BF16" else "numpy"
            key = (spec.shard, framework)
            if key not in handles:
                handles[key] = stack.enter_context(safe_open(str(spec.shard), framework=framework))
            data = handles[key].get_tensor(spec.src_name)
            if framework == "pt":
                # numpy has no bfloat16; torch widens it exactly to float32.
                data = data.float().numpy()
            yield np.ascontiguousarray(data.astype(spec.out_dtype, copy=False))


def write_tensors(
    writer: gguf.GGUFWriter,
    shards: list[Path],
    n_layer: int,
    outtype: OutType,
    arch: gguf.MODEL_ARCH = gguf.MODEL_ARCH.PHI2,
    extra: list[TensorSpec] | None = None,
    require_output: bool = True,
) -> None:
    """Stream tensors into the file: header and tensor infos first, then data one by one."""
    specs = list(extra or []) + _plan_tensors(shards, n_layer, outtype, arch, require_output)
    for spec in specs:
        dtype = np.dtype(spec.out_dtype)
        nbytes = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
        writer.add_tensor_info(spec.gguf_name, spec.shape, dtype, nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for spec, data in zip(specs, _load_tensors(specs), strict=True):
        if data.shape != spec.shape:
            raise ValueError(f"{spec.src_name}: shape changed while reading ({data.shape})")
        writer.write_tensor_data(data)
    writer.flush()
