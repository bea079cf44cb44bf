"""Replay realistic typing against `phi-lsp serve`, and compare it with a naive baseline.

A few real Python files (from the stdlib) are opened in a real `python -m phi_lsp serve`
subprocess (llama.cpp backend). At a few spots (the first functions after `--prefix-tokens`
tokens of each file) the rest of the function is deleted from the middle of its first body line,
and the text is typed back character by character with human-like timing from a seeded RNG:

  - a file is opened (didOpen) when the typist first goes to it, and read for
    `--read-min-s`..`--read-max-s` seconds (default 4-8) before the first key;
  - 60-120 ms between keys in a burst, 0.5-1.5 s pauses at line ends, an occasional short
    pause after a space;
  - a newline plus its indentation is one keystroke (the editor auto-indents);
  - now and then a wrong character followed by a backspace;
  - at the end of a spot the typist stops and waits for the ghost text (up to `--settle-s`);
    at a share `--accept` of the spots (default 0.5) the suggestion is what they meant, and
    they type on through it (its first line, at most `--accept-chars` characters) instead of
    pressing Tab; then they move to the next spot, 1-2 s later.

The client acts as VS Code does: every keystroke is an incremental didChange followed by
`textDocument/inlineCompletion`; when a key arrives while the previous request is still in
flight, that request is cancelled (`$/cancelRequest`). A suggestion counts as *shown* when a
request returns non-empty before the next keystroke.

The same replay (same keystrokes, same schedule) runs, in one invocation, against

  phi-lsp   the defaults (typed-ahead cache, prefix cache with prefill ahead, adaptive debounce)
  baseline  the same engine and model with typedAheadCache false, prefixCache false,
            debounceMs 0

The characters typed through a ghost text come from what phi-lsp (the first run) showed; the
baseline run types the very same characters at the same times.

Both get `maxNewTokens` (`--max-new-tokens`), `nThreads` (`--threads`) and `cpuBuffers` auto.
Per keystroke it records the latency to a shown suggestion and, from the server log (matched by
request order: the server numbers requests as they arrive), whether the model was called, the
prompt tokens evaluated and the tokens generated. Totals: p50/p95/mean latency of shown
suggestions, the same at the spots' ends only (the typist waits there, so both servers show
one suggestion per spot: the like-for-like comparison), the fraction of keystrokes served
without a model call, model calls, server CPU seconds (utime+stime of the server process over
the replay) and peak RSS (VmHWM).

Then, on the phi-lsp server, a decode probe: a ~`--prefix-tokens` document cut mid-line, one
cold request and `--probe` one-character requests (warm KV cache, a few tokens evaluated); the
same prompts then go through llama-cpp-python directly in this process (the server's prompt
builder, greedy, as many tokens as the server generated, weights loaded through the same
`phi_lsp.runtime.engines.llama_buffers.weight_buffers`, the same KV cache types). Decode tokens/s =
generated tokens / request wall time, phi-lsp / direct. LSP overhead = client wall time -
server `total` for requests that called the model and were answered, as a % of the client wall
time.

    .venv/bin/python bench/typing_replay.py --quick       # tiny model, < 1 minute
    .venv/bin/python bench/typing_replay.py               # phi-1 shape Q4_0, ~6-8 minutes

Random weights: the text is noise, the speed is real. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(REPO)]

import spine_latency as spine  # noqa: E402
from lsprotocol import types  # noqa: E402

PHI1_Q4 = BENCH_DIR / ".models" / "phi1-shape" / "phi1-shape-q4_0.gguf"
TINY_DIR = BENCH_DIR / ".models" / "tiny-replay"
DRAIN_TIMEOUT_S = 120


# --- the typing script ------------------------------------------------------------------------


@dataclass
class Key:
    """One keystroke: insert `text` (or delete one char when `backspace`) at the cursor."""

    segment: int
    text: str = ""
    backspace: bool = False
    gap_after_s: float = 0.1  # human time until the next key
    settle: bool = False  # last key of a spot: the typist waits for the ghost text


@dataclass
class Segment:
    index: int
    file: str
    uri: str
    offset: int  # in the ORIGINAL file text: where the deletion starts
    delete_len: int  # characters deleted there (the rest of the function)
    typed: str  # what is typed back
    keys: list[Key] = field(default_factory=list)
    read_s: float = 0.0  # the file is new to the typist: reading it before the first key
    accept: bool = False  # the typist types on through the ghost text shown at the spot's end


def key_units(text: str) -> list[str]:
    """Split into keystrokes: a newline with the next line's indentation is one key."""
    units: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\n":
            j = i + 1
            while j < len(text) and text[j] == " ":
                j += 1
            units.append(text[i:j])
            i = j
        else:
            units.append(text[i])
            i += 1
    return units


def function_spots(text: str, count_tokens: Callable[[str], int], min_tokens: int) -> list[tuple]:
    """(def start, first body line start, function end) of functions after `min_tokens`."""
    tree = ast.parse(text)
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(getattr(body[0], "value", None), ast.Constant)
        ):
            body = body[1:]  # skip the docstring
        if not body or body[0].lineno == node.lineno:
            continue
        first = body[0]
        line_start = starts[first.lineno - 1]
        end = starts[node.end_lineno or first.lineno] - 1  # the function's last newline
        found.append((starts[node.lineno - 1], line_start + first.col_offset, end))
    found.sort()
    return [f for f in found if count_tokens(text[: f[1]]) >= min_tokens]


def make_segments(
    files: list[str],
    spots_per_file: int,
    keystrokes: int,
    count_tokens: Callable[[str], int],
    min_tokens: int,
    rng: random.Random,
    read_s: tuple[float, float] = (0.0, 0.0),
    accept: float = 0.0,
) -> tuple[dict[str, str], list[Segment]]:
    """Documents (uri -> text, cut after the last spot) and the spots, in typing order."""
    n_segments = len(files) * spots_per_file
    per_segment = max(2, keystrokes // n_segments)
    documents: dict[str, str] = {}
    segments: list[Segment] = []
    for name in files:
        text = spine.stdlib_source(name).read_text()
        chosen: list[tuple[int, int]] = []
        last_end = 0
        for _def, body, end in function_spots(text, count_tokens, min_tokens):
            if _def < last_end:
                continue  # nested in (or overlapping) a spot already chosen
            # Start mid-line so that the retyped text crosses a line end.
            line_end = text.find("\n", body)
            start = max(body, line_end - per_segment // 2)
            if len(key_units(text[start:end])) < per_segment:
                continue
            chosen.append((start, end))
            last_end = end
            if len(chosen) == spots_per_file:
                break
        if not chosen:
            raise SystemExit(f"no function spot after {min_tokens} tokens in {name}")
        document = text[: chosen[-1][1] + 1]
        uri = f"file:///replay/{name}"
        documents[uri] = document
        for start, end in chosen:
            units = key_units(text[start:end])[:per_segment]
            segments.append(Segment(len(segments), name, uri, start, end - start, "".join(units)))
    seen: set[str] = set()
    for seg in segments:
        seg.keys = human_keys(seg, rng)
        if seg.uri not in seen:
            seen.add(seg.uri)
            seg.read_s = rng.uniform(*read_s)
        seg.accept = rng.random() < accept
    return documents, segments


def human_keys(seg: Segment, rng: random.Random) -> list[Key]:
    units = key_units(seg.typed)
    keys: list[Key] = []
    for i, unit in enumerate(units):
        nxt = units[i + 1] if i + 1 < len(units) else ""
        if unit.isalnum() and rng.random() < 0.04:  # a typo, noticed and deleted
            wrong = rng.choice("asdfghjklqwertyuiop")
            keys.append(Key(seg.index, wrong, gap_after_s=rng.uniform(0.15, 0.35)))
            keys.append(Key(seg.index, backspace=True, gap_after_s=rng.uniform(0.1, 0.2)))
        if nxt.startswith("\n"):
            gap = rng.uniform(0.5, 1.5)  # the end of a line: think
        elif unit == " " and rng.random() < 0.25:
            gap = rng.uniform(0.2, 0.45)
        else:
            gap = rng.uniform(0.06, 0.12)
        keys.append(Key(seg.index, unit, gap_after_s=gap))
    keys[-1].settle = True
    keys[-1].gap_after_s = rng.uniform(1.0, 2.0)  # then the move to the next spot
    return keys


# --- the editor -------------------------------------------------------------------------------


@dataclass
class Stroke:
    """What happened after one keystroke."""

    index: int
    segment: int
    key: str
    settle: bool = False  # the spot's last typed key: the typist waits for the ghost text
    through: bool = False  # typed on through the ghost text (it matched what the user wanted)
    text: str = ""  # the suggestion the answer carried
    sent_s: float = 0.0  # since the replay started
    next_s: float = 0.0  # when the next key (or the end) came
    answered_ms: float | None = None  # response time, whatever it was
    shown: bool = False
    latency_ms: float | None = None  # to a shown suggestion
    chars: int = 0
    cancelled: bool = False
    request: int = 0  # the server's request number
    status: str = ""  # model / cache / debounced / cancelled / superseded / skipped
    prompt_tokens: int = 0
    evaluated: int = 0
    generated: int = 0
    server_total_ms: float | None = None

    def shown_by(self, t: float) -> bool:
        """Whether a non-empty suggestion for this key was on screen at replay time `t`."""
        return bool(
            self.answered_ms is not None
            and self.chars > 0
            and self.sent_s + self.answered_ms / 1000 <= t
        )


@dataclass
class RunResult:
    name: str
    settings: dict[str, Any]
    load_s: float = 0.0
    pid: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    vm_hwm_kb: int = 0
    other_cores: float = 0.0  # cores other processes used during the replay
    strokes: list[Stroke] = field(default_factory=list)
    probe: list[dict[str, Any]] = field(default_factory=list)
    log_file: str = ""


def lsp_range(text: str, start: int, end: int) -> types.Range:
    return types.Range(start=spine.end_position(text[:start]), end=spine.end_position(text[:end]))


class Replayer:
    def __init__(self, name: str, model: Path, work: Path, settings: dict[str, Any]) -> None:
        self.result = RunResult(name, settings, log_file=str(work / f"{name}.log"))
        self.model = model
        self.work = work
        self.client: Any = None
        self.requests = 0  # inline requests sent after load = the server's request numbers
        self.texts: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self._stderr: asyncio.Future[None] | None = None

    async def start(self) -> None:
        command = spine.server_command(self.model, Path(self.result.log_file))
        stderr_file = self.work / f"{self.result.name}.stderr"
        session = await spine.open_session(command, self.work, self.result.settings, stderr_file)
        self.client, self._stderr = session.client, session.stderr_task
        self.result.pid, self.result.load_s = session.pid, session.load_s
        print(f"[{self.result.name}] pid {session.pid}, {session.message}", flush=True)

    def open(self, uri: str, text: str) -> None:
        self.texts[uri], self.versions[uri] = text, 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=text
                )
            )
        )

    def edit(self, uri: str, start: int, end: int, new: str) -> None:
        text = self.texts[uri]
        self.versions[uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=uri, version=self.versions[uri]
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=lsp_range(text, start, end), text=new
                    )
                ],
            )
        )
        self.texts[uri] = text[:start] + new + text[end:]

    def request(self, uri: str, offset: int) -> tuple[str, Any]:
        """Send an inline completion request; (its id, a concurrent future)."""
        msg_id = str(uuid.uuid4())
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=spine.end_position(self.texts[uri][:offset]),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
        )
        self.requests += 1
        future = self.client.protocol.send_request(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
        )
        return msg_id, future

    def cancel(self, msg_id: str) -> None:
        self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))

    async def replay(
        self,
        documents: dict[str, str],
        segments: list[Segment],
        settle_s: float,
        through: dict[int, str],
        record: bool,
        accept_chars: int,
    ) -> None:
        """Type the segments. `through`: per segment, the ghost text typed on through.

        The first run (`record`) fills `through` from what its server showed; a later run types
        the same characters, so both servers get the same keystrokes at the same times.
        """
        shift: dict[str, int] = dict.fromkeys(documents, 0)  # edits before later spots
        cpu0 = spine._process_ticks(self.result.pid)
        meter = spine.CpuMeter([os.getpid(), self.result.pid])
        t_start = time.perf_counter()
        now = lambda: time.perf_counter() - t_start  # noqa: E731
        pending: tuple[str, Any, Stroke] | None = None
        next_at = 0.0

        async def press(seg: Segment, cursor: int, key: Key, **flags: bool) -> tuple[int, Stroke]:
            nonlocal pending, next_at
            await asyncio.sleep(max(0.0, next_at - now()))
            sent = now()
            if pending is not None:
                msg_id, future, prev = pending
                prev.next_s = sent
                if not future.done():
                    self.cancel(msg_id)
                    prev.cancelled = True
            if key.backspace:
                self.edit(seg.uri, cursor - 1, cursor, "")
                cursor -= 1
                shift[seg.uri] -= 1
            else:
                self.edit(seg.uri, cursor, cursor, key.text)
                cursor += len(key.text)
                shift[seg.uri] += len(key.text)
            stroke = Stroke(
                len(self.result.strokes),
                seg.index,
                "<BS>" if key.backspace else key.text,
                **flags,
            )
            stroke.sent_s = sent
            stroke.request = self.requests + 1
            msg_id, future = self.request(seg.uri, cursor)
            future.add_done_callback(self._answered(stroke, t_start))
            self.result.strokes.append(stroke)
            pending = (msg_id, future, stroke)
            next_at = sent + key.gap_after_s
            if stroke.settle and settle_s > 0:
                # shield: a timeout must not cancel the request itself (the next key
                # cancels it over LSP, as an editor would)
                wrapped = asyncio.wrap_future(future)
                wrapped.add_done_callback(_retrieve)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(wrapped), settle_s)
            return cursor, stroke

        for seg in segments:
            if seg.uri not in self.texts:  # the typist opens the file and reads it first
                await asyncio.sleep(max(0.0, next_at - now()))
                self.open(seg.uri, documents[seg.uri])
                next_at = now() + seg.read_s
                await asyncio.sleep(seg.read_s)
            cursor = seg.offset + shift[seg.uri]
            self.edit(seg.uri, cursor, cursor + seg.delete_len, "")  # the rest of the function
            shift[seg.uri] -= seg.delete_len
            for key in seg.keys:
                cursor, stroke = await press(seg, cursor, key, settle=key.settle)
            move_at = next_at
            if record and seg.accept and stroke.text and stroke.shown_by(stroke.next_s or now()):
                through[seg.index] = stroke.text.split("\n")[0][:accept_chars]
            typing = random.Random(seg.index)  # the same rhythm in every run
            next_at = now() + 0.3  # the ghost text is read, then typed on through
            for char in through.get(seg.index, ""):
                key = Key(seg.index, char, gap_after_s=typing.uniform(0.06, 0.12))
                cursor, _ = await press(seg, cursor, key, through=True)
            next_at = max(next_at, move_at)
        await asyncio.sleep(max(0.0, next_at - now()))
        if pending is not None:
            msg_id, future, prev = pending
            prev.next_s = now()
            if not future.done():
                self.cancel(msg_id)
                prev.cancelled = True
        self.result.wall_s = now()
        self.result.other_cores = meter.others()
        # Let the worker finish what it runs before reading the CPU time.
        await self.wait_idle()
        self.result.cpu_s = (spine._process_ticks(self.result.pid) - cpu0) / spine.CLOCK_TICKS
        for stroke in self.result.strokes:
            stroke.shown = stroke.shown_by(stroke.next_s)
            stroke.latency_ms = stroke.answered_ms if stroke.shown else None
        self.read_log()

    def _answered(self, stroke: Stroke, t_start: float) -> Callable[[Any], None]:
        def done(future: Any) -> None:
            stroke.answered_ms = (time.perf_counter() - t_start - stroke.sent_s) * 1000
            if future.cancelled() or future.exception() is not None:
                return
            result = future.result()
            items = result.items if isinstance(result, types.InlineCompletionList) else result
            if items:
                text = items[0].insert_text
                stroke.text = text if isinstance(text, str) else text.value
                stroke.chars = len(stroke.text)

        return done

    async def wait_idle(self) -> None:
        """Until the server's CPU time stops growing (the engine finished what it ran)."""
        t0 = time.perf_counter()
        last = -1
        while time.perf_counter() - t0 < DRAIN_TIMEOUT_S:
            ticks = spine._process_ticks(self.result.pid)
            if ticks - last <= 2:
                break
            last = ticks
            await asyncio.sleep(0.5)

    def read_log(self) -> None:
        lines = _request_lines(Path(self.result.log_file))
        for stroke in self.result.strokes:
            fields = lines.get(stroke.request, {})
            if "prompt_tokens" in fields:
                stroke.status = "model"
                stroke.prompt_tokens = int(fields["prompt_tokens"])
                stroke.evaluated = int(fields["evaluated"])
                stroke.generated = int(fields["generated"])
                stroke.server_total_ms = float(fields["total"].removesuffix("ms"))
            else:
                stroke.status = fields.get("status", "cancelled")
                if "total" in fields:
                    stroke.server_total_ms = float(fields["total"].removesuffix("ms"))

    async def probe(self, document: str, typed: str) -> list[dict[str, Any]]:
        """A cold request at the end of `document`, then one request per typed character."""
        uri = "file:///replay/probe.py"
        self.open(uri, document)
        rows = []
        for i in range(len(typed) + 1):
            if i:
                end = len(self.texts[uri])
                self.edit(uri, end, end, typed[i - 1])
            stroke = Stroke(i, -1, typed[i - 1] if i else "")
            stroke.request = self.requests + 1
            t0 = time.perf_counter()
            _id, future = self.request(uri, len(self.texts[uri]))
            future.add_done_callback(self._answered(stroke, t0))
            await asyncio.wrap_future(future)
            await asyncio.sleep(0.05)
            rows.append({"document": self.texts[uri], "stroke": stroke})
        lines = _request_lines(Path(self.result.log_file))
        out = []
        for row in rows:
            stroke = row["stroke"]
            out.append(
                {
                    "document": row["document"],
                    "client_ms": stroke.answered_ms,
                    "server": lines.get(stroke.request, {}),
                }
            )
        self.result.probe = out
        return out

    async def stop(self) -> None:
        if self.client is None:
            return
        self.result.vm_hwm_kb = spine.proc_status(self.result.pid).get("VmHWM", 0)
        await spine.close_session(self.client, self._stderr)


def _retrieve(future: Any) -> None:
    """Mark a cancelled request's error as seen (no "exception never retrieved")."""
    if not future.cancelled():
        future.exception()


def _request_lines(log_file: Path) -> dict[int, dict[str, str]]:
    """`req N` lines by N; a model line wins over a later 'cancelled' line for the same N."""
    found: dict[int, dict[str, str]] = {}
    if not log_file.is_file():
        return found
    for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
        m = spine.REQ_LINE.search(line)
        if not m:
            continue
        n, rest = int(m.group(1)), m.group(2)
        fields = dict(spine.KEY_VALUE.findall(rest))
        words = rest.split()
        if "cache hit" in rest:
            fields["status"] = "cache"
        elif "debouncing" in words:
            fields["status"] = "debounced"
        elif "skipped" in words:
            fields["status"] = "skipped"
        elif "superseded" in words:
            fields["status"] = "superseded"
        elif "cancelled" in words:
            fields["status"] = "cancelled"
        if "prompt_tokens" in found.get(n, {}):
            continue
        found[n] = fields
    return found


# --- llama-cpp-python directly, on the probe's prompts ----------------------------------------


def direct_probe(model: Path, threads: int, probe: list[dict[str, Any]], max_new: int) -> None:
    steps = []
    for i, row in enumerate(probe):
        step = spine.Step(0, f"+{i}" if i else "cold", "", row["document"])
        step.server = row["server"]
        steps.append(step)
    direct = spine.Direct(model, threads, "auto")
    try:
        direct.run_round(steps, max_new, [os.getpid()], (99.0, 0.0, 0.0))
    finally:
        direct.close()
    for row, step in zip(probe, steps, strict=True):
        row["direct_ms"] = step.direct_ms
        row["direct_evaluated"] = step.direct_evaluated
        row["direct_generated"] = step.direct_generated


# --- report -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarize(run: RunResult) -> dict[str, Any]:
    strokes = run.strokes
    shown = [s.latency_ms for s in strokes if s.latency_ms is not None]
    settle = [s for s in strokes if s.settle]
    through = [s for s in strokes if s.through]
    model = [s for s in strokes if s.status == "model"]
    answered_model = [
        s
        for s in model
        if s.answered_ms is not None and not s.cancelled and s.server_total_ms is not None
    ]
    overhead = [
        (s.answered_ms - s.server_total_ms) / s.answered_ms for s in answered_model if s.answered_ms
    ]
    statuses: dict[str, int] = {}
    for s in strokes:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    return {
        "keystrokes": len(strokes),
        "shown": len(shown),
        "p50_ms": pct(shown, 0.5),
        "p95_ms": pct(shown, 0.95),
        "mean_ms": statistics.fmean(shown) if shown else float("nan"),
        "settle_p50_ms": pct([s.latency_ms for s in settle if s.latency_ms is not None], 0.5),
        "settle_shown": sum(1 for s in settle if s.shown),
        "settle_n": len(settle),
        "no_model_call": 1 - len(model) / len(strokes) if strokes else float("nan"),
        "through_keys": len(through),
        "through_shown": sum(1 for s in through if s.shown),
        "through_p50_ms": pct([s.latency_ms for s in through if s.latency_ms is not None], 0.5),
        "cache_served": statuses.get("cache", 0) / len(strokes) if strokes else float("nan"),
        "model_calls": len(model),
        "evaluated": sum(s.evaluated for s in model),
        "generated": sum(s.generated for s in model),
        "cpu_s": run.cpu_s,
        "replay_wall_s": run.wall_s,
        "peak_rss_mb": run.vm_hwm_kb / 1024,
        "other_cores": run.other_cores,
        "statuses": statuses,
        "lsp_overhead_pct": 100 * statistics.median(overhead) if overhead else float("nan"),
        "lsp_overhead_n": len(overhead),
    }


def probe_summary(probe: list[dict[str, Any]]) -> dict[str, Any]:
    warm = [
        r for r in probe[1:] if r.get("direct_ms") and int(r["server"].get("generated", 0) or 0) > 0
    ]
    gen = sum(int(r["server"]["generated"]) for r in warm)
    lsp_s = sum(r["client_ms"] for r in warm) / 1000
    d_gen = sum(r["direct_generated"] for r in warm)
    d_s = sum(r["direct_ms"] for r in warm) / 1000
    lsp_tps = gen / lsp_s if lsp_s else float("nan")
    d_tps = d_gen / d_s if d_s else float("nan")
    return {
        "requests": len(warm),
        "generated": gen,
        "evaluated": [int(r["server"].get("evaluated", 0)) for r in warm],
        "lsp_tok_s": lsp_tps,
        "direct_tok_s": d_tps,
        "ratio": lsp_tps / d_tps if d_tps else float("nan"),
        "cold_client_ms": probe[0]["client_ms"] if probe else None,
        "cold_direct_ms": probe[0].get("direct_ms") if probe else None,
    }


def print_strokes(run: RunResult) -> None:
    print(f"\n[{run.name}] per keystroke")
    print(
        f"{'#':>3} {'seg':>3} {'key':<8} {'t s':>6} {'status':<10} {'prompt':>6} "
        f"{'eval':>5} {'gen':>4} {'srv ms':>8} {'answer ms':>9} {'shown':>5} note"
    )
    for s in run.strokes:
        srv = f"{s.server_total_ms:8.0f}" if s.server_total_ms is not None else f"{'-':>8}"
        ans = f"{s.answered_ms:9.0f}" if s.answered_ms is not None else f"{'-':>9}"
        print(
            f"{s.index:>3} {s.segment:>3} {s.key!r:<8} {s.sent_s:6.2f} {s.status:<10} "
            f"{s.prompt_tokens:>6} {s.evaluated:>5} {s.generated:>4} {srv} {ans} "
            f"{'yes' if s.shown else '':>5} "
            f"{'end of spot' if s.settle else 'through ghost text' if s.through else ''}"
        )


def ratio(a: float, b: float) -> str:
    if not b or b != b or a != a:
        return "n/a"
    return f"{a / b:.2f}x"


def print_table(ours: dict[str, Any], base: dict[str, Any], probe: dict[str, Any]) -> None:
    rows = [
        ("keystrokes", "keystrokes", "{:.0f}"),
        ("suggestions shown", "shown", "{:.0f}"),
        ("p50 shown latency ms", "p50_ms", "{:.0f}"),
        ("p95 shown latency ms", "p95_ms", "{:.0f}"),
        ("mean shown latency ms", "mean_ms", "{:.0f}"),
        ("p50 at end of spot ms", "settle_p50_ms", "{:.0f}"),
        ("keys through ghost text", "through_keys", "{:.0f}"),
        ("... shown", "through_shown", "{:.0f}"),
        ("... p50 shown ms", "through_p50_ms", "{:.0f}"),
        ("model calls", "model_calls", "{:.0f}"),
        ("no model call", "no_model_call", "{:.0%}"),
        ("served from cache", "cache_served", "{:.0%}"),
        ("tokens evaluated", "evaluated", "{:.0f}"),
        ("tokens generated", "generated", "{:.0f}"),
        ("server CPU s", "cpu_s", "{:.1f}"),
        ("replay wall s", "replay_wall_s", "{:.1f}"),
        ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
        ("others' cores in replay", "other_cores", "{:.2f}"),
        ("LSP overhead % (median)", "lsp_overhead_pct", "{:.1f}"),
    ]
    print()
    print(f"{'':<26} {'phi-lsp':>10} {'baseline':>10} {'ours/base':>10}")
    print("-" * 59)
    for label, key, fmt in rows:
        a, b = ours[key], base[key]
        print(f"{label:<26} {fmt.format(a):>10} {fmt.format(b):>10} {ratio(a, b):>10}")
    print(
        f"\nstatuses: phi-lsp {ours['statuses']}; baseline {base['statuses']}"
        f"\nsettle: spot ends shown phi-lsp {ours['settle_shown']}/{ours['settle_n']}, "
        f"baseline {base['settle_shown']}/{base['settle_n']}"
    )
    if probe:
        print(
            f"decode probe ({probe['requests']} warm requests, {probe['generated']} tokens, "
            f"evaluated {probe['evaluated']}): phi-lsp {probe['lsp_tok_s']:.2f} tok/s, "
            f"llama-cpp-python direct {probe['direct_tok_s']:.2f} tok/s, "
            f"ratio {probe['ratio']:.2f}; cold request {probe['cold_client_ms']:.0f} ms "
            f"(direct {probe['cold_direct_ms'] or float('nan'):.0f} ms)"
        )


# --- main -------------------------------------------------------------------------------------


def tiny_model() -> Path:
    sys.path.insert(0, str(REPO))  # testkit
    from testkit.tinymodel import build_tiny_model

    gguf = TINY_DIR / "tiny-f16.gguf"
    if not gguf.is_file():
        built = build_tiny_model(TINY_DIR)
        gguf = built.gguf_f16
    return gguf


async def run(args: argparse.Namespace, model: Path, work: Path) -> dict[str, Any]:
    count = spine.count_tokens_with(model)
    rng = random.Random(args.seed)
    documents, segments = make_segments(
        args.files,
        args.spots_per_file,
        args.keystrokes,
        count,
        args.prefix_tokens,
        rng,
        (args.read_min_s, args.read_max_s),
        args.accept,
    )
    n_keys = sum(len(s.keys) for s in segments)
    print(f"model: {model} ({model.stat().st_size / 1e9:.3f} GB); work dir: {work}")
    for seg in segments:
        prefix_tokens = count(documents[seg.uri][: seg.offset])
        print(
            f"spot {seg.index}: {seg.file} at {prefix_tokens} tokens, typing {seg.typed!r}"
            + (f" after reading the file {seg.read_s:.1f} s" if seg.read_s else "")
            + (", then on through the ghost text" if seg.accept else "")
        )
    print(f"{n_keys} keystrokes (seed {args.seed}); settle up to {args.settle_s} s per spot")
    common = {"maxNewTokens": args.max_new_tokens, "nThreads": args.threads, "cpuBuffers": "auto"}
    configs = {
        "phi-lsp": {**common, "promptLookupTokens": args.prompt_lookup},
        "baseline": {
            **common,
            "typedAheadCache": False,
            "prefixCache": False,
            "debounceMs": 0,
        },
    }
    runs: dict[str, RunResult] = {}
    probe_rows: list[dict[str, Any]] = []
    through: dict[int, str] = {}  # filled by the first run, typed the same by the second
    for name, settings in configs.items():
        replayer = Replayer(name, model, work, settings)
        try:
            await replayer.start()
            await replayer.replay(
                documents, segments, args.settle_s, through, not runs, args.accept_chars
            )
            if name == "phi-lsp" and args.probe > 0:
                text = spine.stdlib_source(args.probe_source).read_text()
                doc, typed = spine.build_document(text, count, args.prefix_tokens, args.probe)
                probe_rows = await replayer.probe(doc, typed)
        finally:
            await replayer.stop()
        runs[name] = replayer.result
        s = summarize(replayer.result)
        print(
            f"[{name}] {s['shown']}/{s['keystrokes']} shown, p50 {s['p50_ms']:.0f} ms, "
            f"{s['model_calls']} model calls, CPU {s['cpu_s']:.1f} s",
            flush=True,
        )
    if probe_rows:
        await asyncio.to_thread(direct_probe, model, args.threads, probe_rows, args.max_new_tokens)
    for r in runs.values():
        print_strokes(r)
    ours, base = summarize(runs["phi-lsp"]), summarize(runs["baseline"])
    probe = probe_summary(probe_rows) if probe_rows else {}
    print_table(ours, base, probe)
    return {
        "model": str(model),
        "args": {k: str(v) for k, v in vars(args).items()},
        "segments": [{k: v for k, v in asdict(s).items() if k != "keys"} for s in segments],
        "summary": {"phi-lsp": ours, "baseline": base, "probe": probe},
        "ratios": {
            k: (ours[k] / base[k] if base[k] else None)
            for k in ("p50_ms", "p95_ms", "mean_ms", "settle_p50_ms", "model_calls", "cpu_s")
        },
        "runs": {k: asdict(v) for k, v in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, < 1 minute")
    parser.add_argument("--model", help=f"a GGUF file (default: {PHI1_Q4.name})")
    parser.add_argument("--files", nargs="+", help="stdlib modules to type into")
    parser.add_argument("--spots-per-file", type=int, help="default 3 (--quick: 2)")
    parser.add_argument("--keystrokes", type=int, help="about this many keys in all")
    parser.add_argument("--prefix-tokens", type=int, default=600, help="file prefix at a spot")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-lookup", type=int, default=0, help="phi-lsp promptLookupTokens")
    parser.add_argument("--settle-s", type=float, help="wait for ghost text at a spot's end")
    parser.add_argument("--read-min-s", type=float, help="reading a file just opened (s)")
    parser.add_argument("--read-max-s", type=float)
    parser.add_argument(
        "--accept", type=float, default=0.5, help="share of spots typed on through the ghost text"
    )
    parser.add_argument("--accept-chars", type=int, default=12, help="... at most this many chars")
    parser.add_argument("--probe", type=int, default=8, help="warm decode-probe requests")
    parser.add_argument("--probe-source", default="difflib.py", help="a file not in the replay")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--out", type=Path, help="results JSON (default: WORK/results.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.files = args.files or ["shlex.py", "queue.py", "fnmatch.py"]
        args.spots_per_file = args.spots_per_file or 2
        args.keystrokes = args.keystrokes or 36
        args.settle_s = 5.0 if args.settle_s is None else args.settle_s
        read = (1.0, 2.0)
        model = Path(args.model).resolve() if args.model else tiny_model()
    else:
        args.files = args.files or ["shlex.py", "queue.py", "textwrap.py"]
        args.spots_per_file = args.spots_per_file or 3
        args.keystrokes = args.keystrokes or 16 * len(args.files) * args.spots_per_file
        args.settle_s = 60.0 if args.settle_s is None else args.settle_s
        read = (4.0, 8.0)
        model = Path(args.model).resolve() if args.model else PHI1_Q4
        if not model.is_file():
            import phi1_shape

            model = phi1_shape.build(phi1_shape.PHI1).gguf_q4_0
    args.read_min_s = read[0] if args.read_min_s is None else args.read_min_s
    args.read_max_s = max(args.read_min_s, read[1] if args.read_max_s is None else args.read_max_s)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="phi-lsp-replay-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args, model, work))
    out = args.out or work / "results.json"
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"results: {out}; server logs: {work}/{{phi-lsp,baseline}}.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
