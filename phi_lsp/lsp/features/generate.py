"""Docstring → function body: a code action and the `phiLsp.generateFunction` command.

The command answers at once (editors give up on a request after seconds: Emacs after 10 s),
then writes the body in the background under cancellable work-done progress, and finally asks
the editor to apply it with `workspace/applyEdit`. A second request for the same function
replaces the first.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from lsprotocol import types

from phi_lsp.bodygen.ranking import BodyResult, best_body_on_worker, doctest_runner
from phi_lsp.bodygen.stubs import Stub, find_stub
from phi_lsp.lsp.server import PhiLanguageServer
from phi_lsp.runtime.runner import Superseded

log = logging.getLogger(__name__)

COMMAND = "phiLsp.generateFunction"
TITLE = "Generate body from docstring (phi-lsp)"


def register(ls: PhiLanguageServer) -> None:
    @ls.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite]),
    )
    def code_action(
        ls: PhiLanguageServer, params: types.CodeActionParams
    ) -> list[types.CodeAction]:
        uri, line = params.text_document.uri, params.range.start.line
        doc = ls.open_document(uri)
        if doc is None or not ls.stubs.stub_at(uri, doc.version, doc.source, line):
            return []
        arguments = [uri, params.range.start]
        return [
            types.CodeAction(
                title=TITLE,
                kind=types.CodeActionKind.RefactorRewrite,
                command=types.Command(title=TITLE, command=COMMAND, arguments=arguments),
            )
        ]

    @ls.command(COMMAND)
    def generate_function(ls: PhiLanguageServer, *args: Any) -> dict[str, str] | None:
        """Start writing the body; `{"function": name}` once started, None when there is none."""
        uri, position = _parse_arguments(list(args))
        job = body_job(ls, uri, position)
        if job is None:
            return None
        start(ls, job)
        return {"function": job.stub.name}


@dataclass
class BodyJob:
    """One function's body being written in the background."""

    uri: str
    stub: Stub
    version: int | None
    task: asyncio.Task[None] | None = None
    replaced: bool = False
    outcome: str = "cancelled"

    @property
    def key(self) -> str:
        return f"{self.uri}#def:{self.stub.start[0]}"


def _parse_arguments(args: Any) -> tuple[str, types.Position]:
    """`[uri, position]` or `[{"uri":…, "position":…}]`, as different clients send them."""
    if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict):
        args = [args[0].get("uri"), args[0].get("position")]
    if not (isinstance(args, list) and len(args) == 2 and isinstance(args[0], str)):
        raise ValueError(f"{COMMAND} takes [uri, position]")
    pos = args[1]
    if isinstance(pos, types.Position):
        return args[0], pos
    if isinstance(pos, dict) and isinstance(pos.get("line"), int):
        return args[0], types.Position(line=pos["line"], character=int(pos.get("character", 0)))
    raise ValueError(f"{COMMAND}: position must be {{line, character}}")


def body_job(ls: PhiLanguageServer, uri: str, position: types.Position) -> BodyJob | None:
    """The job for the stub at `position`, or None (with a message saying why not)."""
    doc = ls.open_document(uri)
    stub = find_stub(doc.source, position.line) if doc is not None else None
    if doc is None or stub is None:
        ls.show("phi-lsp: no function whose body is only a docstring here.")
        return None
    if not ls.runner.ready:
        ls.show("phi-lsp: the model is not loaded yet.", types.MessageType.Warning)
        return None
    return BodyJob(uri, stub, doc.version)


def start(ls: PhiLanguageServer, job: BodyJob) -> None:
    """Write `job`'s body in the background; an older job for the same function stops."""
    older = ls.body_jobs.get(job.key)
    if older is not None and older.task is not None:
        older.replaced, older.outcome = True, "replaced by a newer request"
        older.task.cancel()
    job.task = asyncio.ensure_future(write_body(ls, job))
    ls.body_jobs[job.key] = job
    job.task.add_done_callback(lambda _: _finished(ls, job))


def _finished(ls: PhiLanguageServer, job: BodyJob) -> None:
    if ls.body_jobs.get(job.key) is job:
        del ls.body_jobs[job.key]
    log.info("generate %s(): %s", job.stub.name, job.outcome)


async def write_body(ls: PhiLanguageServer, job: BodyJob) -> None:
    """Generate the body under progress (cancelling it stops the engine), then apply it."""
    token = await ls.begin_progress(f"phi-lsp: writing {job.stub.name}()", cancellable=True)
    _cancel_with_progress(ls, token)
    try:
        settings = ls.settings
        # Probing the sandbox starts a process: not on the event loop.
        doctests, not_run = await asyncio.to_thread(doctest_runner, settings.generate_run_doctests)
        result = await best_body_on_worker(
            ls.runner,
            job.stub,
            n=settings.generate_candidates,
            temperature=settings.generate_temperature,
            max_new_tokens=settings.generate_max_tokens,
            report=lambda message: ls.report_progress(token, message),
            run_doctests=doctests,
            not_run=not_run,
        )
        job.outcome = await apply_result(ls, job, result)
    except Superseded:
        job.outcome = "stopped: the model is reloading"
    except asyncio.CancelledError:
        job.outcome = "replaced by a newer request" if job.replaced else "cancelled"
        raise
    except Exception as exc:  # a bug or an engine failure: say so, keep serving
        job.outcome = f"failed: {exc.__class__.__name__}: {exc}"
        log.exception("generate %s()", job.stub.name)
        ls.show(f"phi-lsp: writing {job.stub.name}() {job.outcome}", types.MessageType.Error)
    finally:
        ls.end_progress(token, job.outcome)


async def apply_result(ls: PhiLanguageServer, job: BodyJob, result: BodyResult) -> str:
    """Ask the editor to apply the chosen body; what happened, in a few words."""
    if result.chosen is None:
        return "cancelled" if result.cancelled else "no candidate parsed and fit the signature"
    evidence = f"{job.stub.name}(): {result.chosen.evidence}"
    if result.note:
        evidence += f"; {result.note}"
    doc = ls.open_document(job.uri)
    if doc is None or doc.version != job.version:
        return f"{evidence}; not applied: the document changed meanwhile"
    edit = body_edit(ls, job.uri, job.stub, result.chosen.body, job.version)
    try:
        answer = await ls.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label=TITLE)
        )
    except Exception as exc:  # eglot refuses with an error: "User cancelled server edit"
        return f"{evidence}; not applied by the editor: {exc}"
    if not answer.applied:
        return f"{evidence}; not applied by the editor" + (
            f": {answer.failure_reason}" if answer.failure_reason else ""
        )
    return evidence


def _cancel_with_progress(ls: PhiLanguageServer, token: str | None) -> None:
    """Cancelling the progress in the editor cancels the generation."""
    task = asyncio.current_task()
    future = ls.work_done_progress.tokens.get(token) if token else None
    if task is None or future is None:
        return
    loop = asyncio.get_running_loop()
    future.add_done_callback(
        lambda f: loop.call_soon_threadsafe(task.cancel) if f.cancelled() else None
    )


def body_edit(
    ls: PhiLanguageServer, uri: str, stub: Stub, body: str, version: int | None
) -> types.WorkspaceEdit:
    """Replace from the end of the docstring to the end of the stub with the new body."""
    doc = ls.workspace.get_text_document(uri)
    codec, lines = doc.position_codec, doc.lines
    start = codec.position_to_client_units(lines, types.Position(*stub.start))
    end = codec.position_to_client_units(lines, types.Position(*stub.end))
    eol = "\r\n" if "\r\n" in doc.source else "\n"
    edit = types.TextEdit(
        range=types.Range(start=start, end=end), new_text=eol + body.replace("\n", eol)
    )
    return types.WorkspaceEdit(
        document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(
                    uri=uri, version=version
                ),
                edits=[edit],
            )
        ]
    )
