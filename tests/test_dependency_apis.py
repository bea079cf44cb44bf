"""The private APIs phi-lsp relies on, and the upper bounds in pyproject.toml that guard them.

llama-cpp-python (`Llama._input_ids`, `n_tokens`, `_ctx`, the model-params struct that
llama_buffers patches), pygls (`_send_response`, `_shutdown`, `TextDocument.lines`) and
huggingface_hub (`file_download.http_get`) may change these in any release. Each check names the
package version, the API and the phi-lsp code that uses it, so that raising a bound and
running the tests says exactly what to adapt.
"""

from __future__ import annotations

import inspect
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from needs import need_module
from packaging.requirements import Requirement
from packaging.version import Version

from testkit.tinymodel import TinyModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
GUARDED = ("llama-cpp-python", "pygls", "huggingface_hub")


def changed(package: str, api: str, used_by: str) -> str:
    return (
        f"{package} {version(package)} changed {api}, which {used_by} uses: adapt that code "
        f"(and its test here), then move {package}'s upper bound in pyproject.toml"
    )


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    found = {}
    for line in lines:
        req = Requirement(line)
        found.setdefault(req.name.lower().replace("_", "-"), req)
    return found


@pytest.mark.parametrize("package", GUARDED)
def test_packages_whose_private_apis_we_use_have_an_upper_bound(package: str) -> None:
    req = requirements()[package.lower().replace("_", "-")]
    uppers = [s for s in req.specifier if s.operator in ("<", "<=", "~=", "==")]
    assert uppers, f"pyproject.toml: {req} has no upper bound, and phi-lsp uses private APIs of it"
    installed = Version(version(package))
    assert req.specifier.contains(installed, prereleases=True), (
        f"{package} {installed} is installed but pyproject.toml says {req}"
    )


def test_llama_cpp_private_apis(tiny_model: TinyModel) -> None:
    llama_cpp = need_module("llama_cpp")
    import numpy as np

    pkg = "llama-cpp-python"
    params = inspect.signature(llama_cpp.Llama.__init__).parameters
    for name in ("draft_model", "logits_all", "use_mmap", "type_v", "flash_attn", "lora_path"):
        assert name in params, changed(pkg, f"Llama(..., {name}=)", "engines/llamacpp_engine.py")
    fields = {f[0] for f in llama_cpp.llama_cpp.llama_model_params._fields_}
    for name in ("use_extra_bufts", "tensor_buft_overrides"):
        assert name in fields, changed(pkg, f"llama_model_params.{name}", "llama_buffers.py")
    assert callable(getattr(llama_cpp.llama_cpp, "llama_model_default_params", None)), changed(
        pkg, "llama_cpp.llama_cpp.llama_model_default_params", "llama_buffers.py (patches it)"
    )
    assert (Path(llama_cpp.__file__).parent / "lib" / "libggml.so").is_file(), changed(
        pkg, "the location of lib/libggml.so", "llama_buffers.extra_buffer_types"
    )

    llm = llama_cpp.Llama(model_path=str(tiny_model.gguf_f32), n_ctx=64, verbose=False)
    try:
        tokens = llm.tokenize(b"def f(x):\n    return x", add_bos=False)
        llm.eval(tokens)
        ids = getattr(llm, "_input_ids", None)
        where = "LlamaCppEngine.cached_prefix"
        assert isinstance(ids, np.ndarray) and ids.ndim == 1, changed(
            pkg, "Llama._input_ids", where
        )
        assert isinstance(llm.n_tokens, int), changed(pkg, "Llama.n_tokens", where)
        assert list(ids[: llm.n_tokens]) == tokens, changed(pkg, "Llama._input_ids", where)
        # _evaluate drops a diverging cached tail by setting n_tokens, then evaluates on from it.
        llm.n_tokens = 2
        llm.eval(tokens[2:4])
        assert llm.n_tokens == 4 and list(llm._input_ids[:4]) == tokens[:4], changed(
            pkg, "assigning Llama.n_tokens", "LlamaCppEngine._evaluate"
        )
        ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
        assert ctx is not None, changed(pkg, "Llama._ctx.ctx", "LlamaCppEngine._last_logprob")
        assert llama_cpp.llama_get_logits_ith(ctx, -1), changed(
            pkg, "llama_get_logits_ith(Llama._ctx.ctx, -1)", "LlamaCppEngine._last_logprob"
        )
    finally:
        llm.close()


def test_pygls_private_apis() -> None:
    from pygls.lsp.server import LanguageServer
    from pygls.workspace import TextDocument

    from phi_lsp.lsp.documents import use_lsp_line_breaks
    from phi_lsp.lsp.protocol import PhiProtocol

    pkg = "pygls"
    send = inspect.signature(PhiProtocol._send_response).parameters
    assert list(send)[:4] == ["self", "msg_id", "result", "error"], changed(
        pkg, "JsonRPCProtocol._send_response(msg_id, result, error)", "phi_lsp/lsp/protocol.py"
    )
    for name in ("structure_message", "handle_message"):
        assert callable(getattr(PhiProtocol, name, None)), changed(
            pkg, f"JsonRPCProtocol.{name}", "phi_lsp/lsp/protocol.py (overrides it)"
        )
    server = LanguageServer("phi-lsp", "test", protocol_cls=PhiProtocol)
    assert getattr(server.protocol, "_shutdown", None) is False, changed(
        pkg, "JsonRPCProtocol._shutdown", "phi_lsp/lsp/protocol.py"
    )
    assert isinstance(inspect.getattr_static(TextDocument, "lines"), property), changed(
        pkg, "TextDocument.lines", "phi_lsp/lsp/documents.py (replaces the property)"
    )
    original = TextDocument.lines
    use_lsp_line_breaks()
    try:
        doc = TextDocument("file:///a.py", "a\x0cb\nc\n")
        doc.apply_change(
            types.TextDocumentContentChangePartial(
                range=types.Range(types.Position(1, 0), types.Position(1, 0)), text="X"
            )
        )
        assert doc.source == "a\x0cb\nXc\n", changed(
            pkg, "how TextDocument applies edits (no longer through .lines)", "documents.py"
        )
    finally:
        TextDocument.lines = original  # type: ignore[method-assign]


def test_huggingface_hub_private_apis() -> None:
    from huggingface_hub import file_download

    pkg = "huggingface_hub"
    http_get: Any = getattr(file_download, "http_get", None)
    assert callable(http_get), changed(
        pkg, "file_download.http_get", "phi_lsp/models/hub/download.py"
    )
    params = inspect.signature(http_get).parameters
    want = ("resume_size", "headers", "expected_size", "displayed_filename", "tqdm_class")
    for name in ("url", "temp_file", *want):
        assert name in params, changed(
            pkg, f"file_download.http_get({name}=)", "phi_lsp/models/hub/download.py"
        )
    assert list(params)[:2] == ["url", "temp_file"], changed(
        pkg, "file_download.http_get(url, temp_file, ...)", "phi_lsp/models/hub/download.py"
    )
