"""Runs llama-cpp-python's OpenAI-compatible server with phi-lsp's CPU weight buffers.

`python -m phi_lsp.runtime.engines.llama_server CPU_BUFFERS GGUF -- <llama_cpp.server args>`:
the same server, but the model loads with the AMX workaround the in-process engine uses
(engines/llama_buffers.py), so quantized models do not crash on CPUs with AMX.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from phi_lsp.runtime.engines.llama_buffers import weight_buffers


def main() -> None:
    mode, gguf, separator, *rest = sys.argv[1:]
    assert separator == "--", "usage: engine_server CPU_BUFFERS GGUF -- ARGS"
    with weight_buffers(mode, Path(gguf)) as buffers:
        print(f"phi-lsp engine: {buffers.description}", file=sys.stderr, flush=True)
        # Repacked weights are copies: without this the mapped file would hold them twice.
        no_mmap = [] if buffers.use_mmap else ["--use_mmap", "False"]
        sys.argv = ["llama_cpp.server", *rest, *no_mmap]
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
