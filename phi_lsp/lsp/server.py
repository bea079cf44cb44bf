"""The language server: its state (settings, engine) and the steps handlers share.

Handlers live in `phi_lsp.lsp.features`; they stay thin and call the methods here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.workspace import TextDocument

from phi_lsp import __version__
from phi_lsp.completion.pipeline import Suggestion
from phi_lsp.completion.prefill import Prefill
from phi_lsp.completion.service import Completer
from phi_lsp.errors import ModelLoadError
from phi_lsp.lsp.documents import use_lsp_line_breaks
from phi_lsp.lsp.protocol import PhiProtocol
from phi_lsp.lsp.stub_index import StubIndex
from phi_lsp.models.promoted import PROMOTED, promoted_adapter, promoted_stamp
from phi_lsp.models.source import phi_lsp_home
from phi_lsp.runtime.adapters import resolve_adapter
from phi_lsp.runtime.runner import EngineRunner, Superseded
from phi_lsp.settings import SECTION, Settings, settings_from_client
from phi_lsp.usage.journal import Journal
from phi_lsp.usage.recorder import Recorder

log = logging.getLogger(__name__)

# How long to wait for the editor's answer to workspace/configuration or
# window/workDoneProgress/create (editors answer at once) before going on without it: a client
# that loses the request (lsp-mode 8.0 drops a request that arrives in the same read as the
# answer to its synchronous request) must not stall the model load or a generation forever.
CLIENT_ANSWER_TIMEOUT_S = 5.0
PROMOTION_POLL_S = 2.0  # how often promoted.json is checked while `adapter` is "promoted"


class PhiLanguageServer(LanguageServer):
    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        super().__init__("phi-lsp", __version__, protocol_cls=PhiProtocol)
        use_lsp_line_breaks()
        self.settings = Settings()
        # Command-line flags (--model, --backend) win over what the editor sends.
        self.overrides = overrides or {}
        self.runner = EngineRunner()
        self.prefill = Prefill(self.runner, lambda: self.settings)
        self.completer = Completer(
            self.runner,
            lambda: self.settings,
            lambda m: self.show(m, types.MessageType.Warning),
            self.prefill,
        )
        self._load_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._promoted = promoted_stamp()  # promoted.json when the model was last loaded
        # Where the docstring stubs are, per document version (code actions).
        self.stubs = StubIndex()
        # Function bodies being written in the background, by function (features.generate).
        self.body_jobs: dict[str, Any] = {}
        # Shown, accepted and kept suggestions (features.usage), on this machine only.
        self.usage = Recorder(
            Journal(phi_lsp_home() / "usage"),
            lambda: self.settings.usage,
            lambda: self.settings.usage_ignore,
            self.workspace_roots,
        )

    # -- settings ---------------------------------------------------------------------------
    def apply_settings(self, raw: Any) -> bool:
        """Merge settings from the client; report bad keys; True when the engine must reload."""
        incoming = {**settings_from_client(raw), **self.overrides}
        new, errors = self.settings.merge(incoming)
        for error in errors:
            log.warning(error)
            self.show(error, types.MessageType.Error)
        reload = new.engine_changed(self.settings)
        self.settings = new
        return reload

    async def pull_settings(self) -> Any:
        """Ask the client for the `phiLsp` section (None when it cannot answer)."""
        caps = self.client_capabilities.workspace
        if not (caps and caps.configuration):
            return None
        params = types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])
        try:
            items = await asyncio.wait_for(
                self.workspace_configuration_async(params), CLIENT_ANSWER_TIMEOUT_S
            )
        except Exception as exc:  # a client that errors (or never answers) must not stop us
            log.warning("workspace/configuration failed: %s", _why(exc))
            return None
        return items[0] if items else None

    # -- model ------------------------------------------------------------------------------
    def schedule_load(self) -> None:
        """Start loading the model in the background; a newer load replaces an older one.

        The load takes its ticket (and the settings) now: one asked for later supersedes it
        from this moment, so it never starts if it has not yet. A load already running is not
        cancelled: it finishes on the worker, sees it was replaced and closes what it loaded
        (cancelling the await would leak the engine being loaded).
        """
        ticket = self.runner.reserve_load()
        self._promoted = promoted_stamp()
        self._load_task = asyncio.ensure_future(self.load_model(self.settings, ticket))
        if self._watch_task is None:
            self._watch_task = asyncio.ensure_future(self.follow_promotions())

    async def follow_promotions(self) -> None:
        """While `adapter` is "promoted", reload when promoted.json changes (`phi-lsp finetune`
        promoted or rolled back an adapter). A stat every few seconds; never blocks."""
        while True:
            await asyncio.sleep(PROMOTION_POLL_S)
            if self.settings.adapter == PROMOTED and promoted_stamp() != self._promoted:
                log.info("promoted adapter changed: %s", promoted_adapter() or "none")
                self.schedule_load()

    async def load_model(self, settings: Settings, ticket: int) -> None:
        token = await self.begin_progress(f"phi-lsp: loading {settings.model}")
        t0 = time.perf_counter()
        self.completer.cache.clear()  # suggestions of the previous model are not this one's
        try:
            engine = await self.runner.load(settings, ticket)
        except Superseded:
            message = "replaced by a newer load"
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # any loading failure must leave the server serving
            message = _load_failure_message(settings.model, exc)
            log.error(message, exc_info=not isinstance(exc, ModelLoadError))
            self.show(message, types.MessageType.Error)
        else:
            adapter = resolve_adapter(settings.adapter)
            with_adapter = f" + adapter {adapter}" if adapter else ""
            message = (
                f"{settings.model}{with_adapter} ready "
                f"({engine.name}, {time.perf_counter() - t0:.1f} s)"
            )
            log.info(message)
            self.prefill.model_ready(self.document_text)
        finally:
            self.end_progress(token, message)

    def document_text(self, uri: str) -> str | None:
        """The text of an open document, None when it is not open."""
        doc = self.open_document(uri)
        return doc.source if doc is not None else None

    async def begin_progress(self, title: str, cancellable: bool = False) -> str | None:
        """Start server-initiated work-done progress; its token, or None if the client has none."""
        window = self.client_capabilities.window
        if not (window and window.work_done_progress):
            return None
        token = f"phi-lsp/{time.monotonic_ns()}"
        try:
            await asyncio.wait_for(
                self.work_done_progress.create_async(token), CLIENT_ANSWER_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("work done progress refused: %s", _why(exc))
            return None
        begin = types.WorkDoneProgressBegin(title=title, cancellable=cancellable)
        self.work_done_progress.begin(token, begin)
        return token

    def report_progress(self, token: str | None, message: str) -> None:
        if token is not None:
            self.work_done_progress.report(token, types.WorkDoneProgressReport(message=message))

    def end_progress(self, token: str | None, message: str) -> None:
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
            self.work_done_progress.tokens.pop(token, None)

    # -- completion -------------------------------------------------------------------------
    async def suggestion_at(self, uri: str, position: types.Position) -> Suggestion | None:
        """The suggestion at `position`, or None (disabled, loading, superseded, no document)."""
        if not self.settings.enable:
            return None
        if not self.runner.ready:
            log.info(
                "completion asked while the model is %s: empty answer",
                "loading" if self.runner.loading else "not loaded",
            )
            return None
        doc = self.open_document(uri)
        if doc is None:
            return None
        offset = min(doc.offset_at_position(position), len(doc.source))
        return await self.completer.suggest(uri, doc.source, offset)

    def shown(
        self, uri: str, position: types.Position, suggestion: Suggestion, latency_ms: float
    ) -> str | None:
        """Record a suggestion about to be shown; the id its accept command carries."""
        doc = self.open_document(uri)
        if doc is None:
            return None
        prefix = doc.source[: doc.offset_at_position(position)]
        where = (position.line, position.character)
        adapter = resolve_adapter(self.settings.adapter)  # RUN/adapter: the run names it
        model = self.settings.model + (f"+{adapter.parent.name}" if adapter else "")
        return self.usage.shown(
            uri,
            where,
            suggestion.text,
            prefix,
            suggestion.prompt,
            suggestion.mode,
            latency_ms,
            model,
        )

    def accepted(self, shown_id: str, inserted: str | None) -> bool:
        return self.usage.accepted(shown_id, inserted, self.document_text)

    def workspace_roots(self) -> list[str]:
        folders = [f.uri for f in self.workspace.folders.values()]
        return folders or ([self.workspace.root_uri] if self.workspace.root_uri else [])

    def open_document(self, uri: str) -> TextDocument | None:
        """The editor's copy of `uri`, or None for a document it never opened.

        pygls would read an unopened file from disk (or fail on a non-file URI); completions
        are only ever about the text the editor has.
        """
        return self.workspace.text_documents.get(unquote(uri))

    def show(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))


def _why(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from the editor in {CLIENT_ANSWER_TIMEOUT_S:.0f} s"
    return str(exc)


def _load_failure_message(model: str, exc: BaseException) -> str:
    if isinstance(exc, ModelLoadError):
        detail = str(exc)
    elif isinstance(exc, MemoryError):
        detail = "out of memory; choose a smaller quantization (e.g. a Q4_0 GGUF)."
    else:
        detail = f"{exc.__class__.__name__}: {exc}"
    return f"phi-lsp could not load model {model!r}: {detail} Fix phiLsp.model and it loads again."
