"""Latency of the whole spine: an editor typing at the end of a ~1,500-token Python file.

Starts a real `phi-lsp serve` subprocess (llama.cpp backend) and drives it like an editor:
initialize (inline completion + work-done progress), answer workspace/configuration, wait for
the model load to end, open a file cut from real stdlib code in the middle of a line inside a
function (so the completion is in line mode), then:

  cold     inline completion at the end of the file (the whole prompt is evaluated)
  +1 char  didChange (incremental, one character) + inline completion
  +k char  more characters, one at a time, the same way

The characters typed are the ones the source file really has next. For each request it records
the client's wall time and, from the server's log line (`req N ... prompt_tokens= evaluated=
generated= ... total=`), the prompt tokens, the tokens evaluated (not in the KV cache) and the
tokens generated. The same prompts then go through llama-cpp-python directly in this process —
`Llama(n_ctx=2048, flash_attn=True)`, the same threads, greedy, as many tokens as the server
generated — and phi-lsp / direct ratios are printed.

The machine may be shared, and llama.cpp's threads stall badly when another process takes a
core, so: the sequence runs `--rounds` times (each round opens a new document that differs
from the first token, so its first request is cold again), server and direct interleaved round
by round, and the summary gives medians; before each request the bench waits (up to
`--quiet-wait` s) until other processes use fewer than `--quiet` cores; and each request
records how many cores other processes used while it ran ("others").

The server gets `cpuBuffers` (`--cpu-buffers`, default auto: off llama.cpp's AMX buffers,
which crash on quantized weights) and the direct run loads through the same
`phi_lsp.runtime.engines.llama_buffers.weight_buffers`; `debounceMs` is 0 (`--debounce-ms`) so the
numbers are the model path, and `maxLatencyMs` is left unset. A request the server answers from
its typed-ahead cache shows `stopped=cache`.

    .venv/bin/python bench/spine_latency.py                 # phi-1 shape (builds it if missing)
    .venv/bin/python bench/spine_latency.py --tiny          # 2-layer model, seconds
    .venv/bin/python bench/spine_latency.py --model X.gguf  # any phi GGUF

Timings only: nothing is asserted. Random weights give noise text; speed is real.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path[:0] = [str(BENCH_DIR), str(REPO)]

import phi1_shape  # noqa: E402
from lsprotocol import types  # noqa: E402

from phi_lsp.completion.context import cursor_context, scan, should_complete  # noqa: E402
from phi_lsp.completion.prompt import build_prompt  # noqa: E402
from phi_lsp.runtime.engines import llama_buffers  # noqa: E402
from phi_lsp.runtime.engines.base import common_prefix  # noqa: E402

LOAD_TIMEOUT_S = 900
REQUEST_TIMEOUT_S = 600
Quiet = tuple[float, float, float]  # max cores others may use, longest wait s, window s
REQ_LINE = re.compile(r"\breq (\d+) (.*)$")
KEY_VALUE = re.compile(r"(\w+)=(\S+)")


@dataclass
class Step:
    round: int
    label: str
    typed: str  # characters typed before this request ("" for the cold one)
    document: str  # the whole document (= the prompt: it fits the context)
    other_cpu: float = 0.0  # cores other processes used during the phi-lsp request
    client_ms: float = 0.0
    server: dict[str, str] = field(default_factory=dict)  # key=value pairs of the log line
    suggestion: str = ""
    direct_ms: float = 0.0
    direct_first_token_ms: float = 0.0
    direct_prompt_tokens: int = 0
    direct_evaluated: int = 0
    direct_generated: int = 0
    direct_other_cpu: float = 0.0

    def server_int(self, key: str) -> int:
        value = self.server.get(key, "")
        return int(value) if value.isdigit() else 0

    def server_ms(self, key: str) -> float:
        value = self.server.get(key, "").removesuffix("ms")
        try:
            return float(value)
        except ValueError:
            return float("nan")


@dataclass
class ServerInfo:
    command: list[str]
    load_s: float = 0.0
    load_message: str = ""
    pid: int = 0
    vm_hwm_kb: int = 0
    vm_rss_kb: int = 0
    log_file: str = ""


# --- the document -----------------------------------------------------------------------------


def stdlib_source(name: str) -> Path:
    import sysconfig

    path = Path(sysconfig.get_paths()["stdlib"]) / name
    if not path.is_file():
        raise SystemExit(f"{path} does not exist; pass --source with another stdlib module")
    return path


def build_document(
    text: str, count_tokens: Callable[[str], int], target: int, n_typed: int
) -> tuple[str, str]:
    """Cut `text` inside a function, mid-line, at the first such point >= `target` tokens.

    Returns (document, the next `n_typed` characters of that line).
    """
    offset = 0
    for line in text.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        body = line.rstrip("\r\n")
        stripped = body.lstrip(" ")
        indent = len(body) - len(stripped)
        if indent < 8 or not (stripped[:1].isalpha() or stripped[:1] == "_"):
            continue  # not a statement inside a method/nested block
        if stripped.startswith(("def ", "class ", "async def ")):
            continue
        state = scan(text[:start])
        if state.open_brackets or state.string_start is not None:
            continue  # a continuation line or inside a docstring
        eq = stripped.find(" = ")
        cut_in_line = eq + 3 if 0 < eq < len(stripped) // 2 else len(stripped) // 2
        if len(stripped) - cut_in_line < n_typed + 3:
            continue
        cut = start + indent + cut_in_line
        document = text[:cut]
        if count_tokens(document) < target:
            continue
        ctx = cursor_context(document, len(document))
        if ctx.mode != "line" or not should_complete(ctx):
            continue
        return document, text[cut : cut + n_typed]
    raise SystemExit(f"no cut point with >= {target} tokens in the source; pick a longer file")


def round_steps(r: int, document: str, typed: str) -> list[Step]:
    # A first line that differs per round: the cached prefix ends at the first token.
    text = f"# phi-lsp latency bench, round {r}\n{document}"
    steps = [Step(r, "cold", "", text)]
    for i, char in enumerate(typed, start=1):
        steps.append(Step(r, f"+{i} char", char, steps[-1].document + char))
    return steps


def end_position(text: str) -> types.Position:
    """LSP position (UTF-16 columns) of the end of `text`."""
    line = text.count("\n")
    last = text[text.rfind("\n") + 1 :]
    return types.Position(line=line, character=len(last.encode("utf-16-le")) // 2)


# --- noise: CPU that other processes use while we measure ------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    """CPU ticks spent busy by the whole machine (all cores) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def _process_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class CpuMeter:
    """Cores used by processes other than `pids` between start() and others()."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.start()

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._busy0 = _busy_ticks()
        self._own0 = sum(_process_ticks(p) for p in self.pids)

    def others(self) -> float:
        seconds = time.perf_counter() - self._t0
        busy = _busy_ticks() - self._busy0
        own = sum(_process_ticks(p) for p in self.pids) - self._own0
        return max(0.0, (busy - own) / CLOCK_TICKS / max(seconds, 1e-3))


def wait_until_quiet(
    pids: Sequence[int], max_other: float, max_wait_s: float, window_s: float = 3.0
) -> float:
    """Sleep until other processes use < `max_other` cores over `window_s` (<= `max_wait_s`)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        meter = CpuMeter(pids)
        time.sleep(window_s)
        if meter.others() < max_other:
            break
    return time.perf_counter() - t0


# --- the editor -------------------------------------------------------------------------------


def client_capabilities() -> types.ClientCapabilities:
    return types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(),
            inline_completion=types.InlineCompletionClientCapabilities(),
        ),
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(configuration=True),
    )


def read_request_lines(log_file: Path) -> dict[int, dict[str, str]]:
    """Every `req N` line of the server log, by request number."""
    found: dict[int, dict[str, str]] = {}
    if not log_file.is_file():
        return found
    for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
        m = REQ_LINE.search(line)
        if m:
            rest = m.group(2)
            values = dict(KEY_VALUE.findall(rest))
            if "cache hit" in rest:
                values.setdefault("stopped", "cache")
            for word in ("skipped", "superseded", "cancelled", "failed"):
                if word in rest.split():
                    values.setdefault("stopped", word)
            found[int(m.group(1))] = values
    return found


async def load_end(client: Any) -> str:
    """The message of the first finished model load the server reported ($/progress end)."""
    while True:
        for reports in client.progress_reports.values():
            for report in reports:
                if isinstance(report, types.WorkDoneProgressEnd):
                    return str(report.message or "")
        await asyncio.sleep(0.05)


async def server_log_line(log_file: Path, seen: set[int]) -> dict[str, str]:
    """The first request line not yet in `seen` (it is written before the response is sent)."""
    for _ in range(100):
        fresh = {k: v for k, v in read_request_lines(log_file).items() if k not in seen}
        if fresh:
            key = min(fresh)
            seen.add(key)
            return fresh[key]
        await asyncio.sleep(0.02)
    return {}


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM/VmRSS (kB) of a live process, from /proc."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


async def drain(stream: asyncio.StreamReader | None, sink: Path) -> None:
    """Keep the server's stderr pipe empty (a full pipe would block the server)."""
    if stream is None:
        return
    with sink.open("ab") as f:
        while line := await stream.readline():
            f.write(line)
            f.flush()


@dataclass
class Session:
    """A started, initialized `phi-lsp serve` whose model load has ended."""

    client: Any
    pid: int
    stderr_task: asyncio.Future[None]
    load_s: float
    message: str


async def open_session(
    command: list[str], work: Path, settings: dict[str, Any], stderr_file: Path
) -> Session:
    """Start the server (its stderr to a file), initialize it and wait for the model load."""
    from pytest_lsp import ClientServerConfig

    env = {
        **os.environ,
        "PHI_LSP_HOME": str(work / "home"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.getenv("PYTHONPATH")])),
    }
    client = await ClientServerConfig(server_command=command, server_env=env).start()
    # pytest-lsp copies the server's stderr to ours; send it to a file instead.
    forwarder = getattr(client, "_stderr_forwarder", None)
    if forwarder is not None:
        forwarder.cancel()
    process = client._server
    stderr_task = asyncio.ensure_future(drain(process.stderr, stderr_file))
    client.set_configuration(settings, section="phiLsp")
    t0 = time.perf_counter()
    await client.initialize_session(
        types.InitializeParams(capabilities=client_capabilities(), root_uri=work.as_uri())
    )
    message = await asyncio.wait_for(load_end(client), LOAD_TIMEOUT_S)
    if "ready" not in message:
        raise SystemExit(f"the server did not load the model: {message}")
    return Session(client, process.pid, stderr_task, time.perf_counter() - t0, message)


async def close_session(client: Any, stderr_task: asyncio.Future[None] | None) -> None:
    """Shut the server down (if it still runs) and stop reading its stderr."""
    try:
        if client._server is not None and client._server.returncode is None:
            await asyncio.wait_for(client.shutdown_session(), 60)
    finally:
        await client.stop()
        if stderr_task is not None:
            stderr_task.cancel()


class Editor:
    """A pytest-lsp client driving one `phi-lsp serve` subprocess."""

    def __init__(self, info: ServerInfo, work: Path, settings: dict[str, Any]) -> None:
        self.info = info
        self.work = work
        self.settings = settings
        self.log_file = Path(info.log_file)
        self.seen: set[int] = set()
        self.client: Any = None
        self._stderr_task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        session = await open_session(
            self.info.command, self.work, self.settings, self.work / "server.stderr"
        )
        self.client, self._stderr_task = session.client, session.stderr_task
        self.info.pid, self.info.load_s = session.pid, session.load_s
        self.info.load_message = session.message
        print(f"server: pid {session.pid}, loaded in {session.load_s:.1f} s: {session.message}")

    async def run_round(self, steps: list[Step], quiet: Quiet) -> None:
        client = self.client
        pids = [os.getpid(), self.info.pid]
        uri = (self.work / f"bench_round{steps[0].round}.py").as_uri()
        text = steps[0].document
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=text
                )
            )
        )
        for version, step in enumerate(steps, start=1):
            await asyncio.to_thread(wait_until_quiet, pids, *quiet)
            meter = CpuMeter(pids)
            t0 = time.perf_counter()
            if step.typed:
                at = end_position(text)
                client.text_document_did_change(
                    types.DidChangeTextDocumentParams(
                        text_document=types.VersionedTextDocumentIdentifier(
                            uri=uri, version=version
                        ),
                        content_changes=[
                            types.TextDocumentContentChangePartial(
                                range=types.Range(start=at, end=at), text=step.typed
                            )
                        ],
                    )
                )
                text += step.typed
                assert text == step.document
            result = await asyncio.wait_for(
                client.text_document_inline_completion_async(
                    types.InlineCompletionParams(
                        text_document=types.TextDocumentIdentifier(uri=uri),
                        position=end_position(text),
                        context=types.InlineCompletionContext(
                            trigger_kind=types.InlineCompletionTriggerKind.Automatic
                        ),
                    )
                ),
                REQUEST_TIMEOUT_S,
            )
            step.client_ms = (time.perf_counter() - t0) * 1000
            step.other_cpu = meter.others()
            items = result.items if isinstance(result, types.InlineCompletionList) else result
            first = items[0].insert_text if items else ""
            step.suggestion = first if isinstance(first, str) else first.value
            step.server = await server_log_line(self.log_file, self.seen)
            print(
                f"  round {step.round} {step.label:<8} phi-lsp {step.client_ms:9.1f} ms  "
                f"evaluated={step.server.get('evaluated', '?')} "
                f"generated={step.server.get('generated', '?')}  "
                f"others used {step.other_cpu:.2f} cores",
                flush=True,
            )
        client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    async def stop(self) -> None:
        if self.client is None:
            return
        status = proc_status(self.info.pid)
        self.info.vm_hwm_kb = status.get("VmHWM", 0)
        self.info.vm_rss_kb = status.get("VmRSS", 0)
        await close_session(self.client, self._stderr_task)


# --- llama-cpp-python directly ---------------------------------------------------------------


class Direct:
    """One long-lived `Llama`, as the server keeps one."""

    def __init__(
        self, model: Path, threads: int, cpu_buffers: str, kv_cache_values: str = "f16"
    ) -> None:
        import llama_cpp

        from phi_lsp.models.check import check_gguf
        from phi_lsp.runtime.engines.llamacpp_engine import KV_TYPES, v_cache_type

        kv_cache_values = v_cache_type(kv_cache_values, check_gguf(model))

        t0 = time.perf_counter()
        with llama_buffers.weight_buffers(cpu_buffers, model) as self.buffers:
            self.llm = llama_cpp.Llama(
                model_path=str(model),
                n_ctx=2048,
                n_threads=threads,
                n_threads_batch=threads,
                flash_attn=True,
                type_v=KV_TYPES[kv_cache_values],  # as the server's engine (its default)
                verbose=False,
                use_mmap=self.buffers.use_mmap,
            )
        self.load_s = time.perf_counter() - t0
        self.eos = self.llm.token_eos()

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def run_round(
        self, steps: list[Step], max_new_tokens: int, pids: list[int], quiet: Quiet
    ) -> None:
        """The server's prompts, greedy, as many tokens as the server generated for each."""
        llm = self.llm
        budget = llm.n_ctx() - max_new_tokens  # pipeline.prompt_budget
        for step in steps:
            prompt = build_prompt(step.document, budget, lambda s: len(self.tokenize(s)))
            tokens = self.tokenize(prompt)
            cached = common_prefix(llm._input_ids[: llm.n_tokens], tokens)
            want = max(1, step.server_int("generated"))
            out: list[int] = []
            wait_until_quiet(pids, *quiet)
            meter = CpuMeter(pids)
            t0 = time.perf_counter()
            first = 0.0
            for token in llm.generate(
                tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0
            ):
                if not first:
                    first = time.perf_counter()
                if token == self.eos:
                    break
                out.append(token)
                if len(out) >= want:
                    break
            end = time.perf_counter()
            step.direct_other_cpu = meter.others()
            step.direct_ms = (end - t0) * 1000
            step.direct_first_token_ms = (first - t0) * 1000
            step.direct_prompt_tokens = len(tokens)
            step.direct_evaluated = len(tokens) - cached
            step.direct_generated = len(out)
            print(
                f"  round {step.round} {step.label:<8} direct  {step.direct_ms:9.1f} ms  "
                f"evaluated={step.direct_evaluated} generated={step.direct_generated}  "
                f"others used {step.direct_other_cpu:.2f} cores",
                flush=True,
            )

    def close(self) -> None:
        self.llm.close()


# --- report ----------------------------------------------------------------------------------


def print_rounds(steps: list[Step]) -> None:
    header = (
        f"{'rnd':>3} {'step':<8} {'prompt':>6} {'eval':>5} {'gen':>4} {'stopped':>8} "
        f"{'phi-lsp ms':>10} {'srv total':>9} {'srv eng':>9} {'others':>6} | "
        f"{'direct ms':>10} {'d.eval':>6} {'d.gen':>5} {'1st tok':>8} {'others':>6} | "
        f"{'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for s in steps:
        direct = s.direct_ms or float("nan")
        print(
            f"{s.round:>3} {s.label:<8} {s.server.get('prompt_tokens', '?'):>6} "
            f"{s.server.get('evaluated', '?'):>5} {s.server.get('generated', '?'):>4} "
            f"{s.server.get('stopped', '?'):>8} {s.client_ms:10.1f} "
            f"{s.server_ms('total'):9.0f} {s.server_ms('engine'):9.0f} {s.other_cpu:6.2f} | "
            f"{s.direct_ms:10.1f} {s.direct_evaluated:6d} {s.direct_generated:5d} "
            f"{s.direct_first_token_ms:8.1f} {s.direct_other_cpu:6.2f} | "
            f"{s.client_ms / direct:6.2f}"
        )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_summary(steps: list[Step], quiet: float) -> None:
    """Medians and minimums over rounds; "quiet" keeps the samples where others < `quiet`."""
    labels = list(dict.fromkeys(s.label for s in steps))
    header = (
        f"{'step':<8} {'eval':>9} {'gen':>5} | {'phi-lsp ms':>10} {'direct ms':>10} "
        f"{'ratio':>6} | {'min':>9} {'min':>9} {'ratio':>6} | "
        f"{'n':>2} {'quiet':>9} {'n':>2} {'quiet':>9} {'ratio':>6}"
    )
    print(
        f"{'':<24} | {'median over rounds':^28} | {'minimum over rounds':^26} | "
        f"{'median of quiet samples':^33}"
    )
    print(header)
    print("-" * len(header))
    for label in labels:
        group = [s for s in steps if s.label == label]
        client = _median([s.client_ms for s in group])
        direct = _median([s.direct_ms for s in group if s.direct_ms])
        c_min = min(s.client_ms for s in group)
        d_min = min((s.direct_ms for s in group if s.direct_ms), default=float("nan"))
        c_quiet = [s.client_ms for s in group if s.other_cpu < quiet]
        d_quiet = [s.direct_ms for s in group if s.direct_ms and s.direct_other_cpu < quiet]
        cq, dq = _median(c_quiet), _median(d_quiet)
        evals = "/".join(sorted({s.server.get("evaluated", "?") for s in group}))
        gens = "/".join(sorted({s.server.get("generated", "?") for s in group}))
        print(
            f"{label:<8} {evals:>9} {gens:>5} | {client:10.1f} {direct:10.1f} "
            f"{client / direct:6.2f} | {c_min:9.1f} {d_min:9.1f} {c_min / d_min:6.2f} | "
            f"{len(c_quiet):>2} {cq:9.1f} {len(d_quiet):>2} {dq:9.1f} {cq / dq:6.2f}"
        )


def resolve_model(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model).resolve()
    shape = phi1_shape.TINY if args.tiny else phi1_shape.PHI1
    built = phi1_shape.build(shape)
    phi1_shape.print_stages(built)
    return built.gguf_q4_0


def count_tokens_with(model: Path) -> Callable[[str], int]:
    """The model's own tokenizer (the GGUF vocabulary, loaded without weights)."""
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    return lambda s: len(vocab.tokenize(s.encode("utf-8"), add_bos=False, special=False))


def server_command(model: Path, log_file: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "phi_lsp", "serve", "--model", str(model)),
        *("--backend", "llamacpp", "--log-file", str(log_file)),
    ]


async def run(args: argparse.Namespace, model: Path, work: Path) -> dict[str, Any]:
    count = count_tokens_with(model)
    source = stdlib_source(args.source)
    document, typed = build_document(source.read_text(), count, args.tokens, args.typed)
    rounds = [round_steps(r, document, typed) for r in range(1, args.rounds + 1)]
    buffers = llama_buffers.resolve(args.cpu_buffers)
    tail = document[document.rfind("\n") + 1 :]
    print(f"model: {model} ({model.stat().st_size / 1e9:.3f} GB)")
    print(f"work dir: {work}")
    print(
        f"document: {source.name}[:{len(document)}] + a 1-line header, "
        f"{count(rounds[0][0].document)} tokens, {document.count(chr(10)) + 2} lines, "
        f"ends {tail!r}; typing {typed!r}; {args.rounds} round(s)"
    )

    info = ServerInfo(server_command(model, work / "server.log"))
    info.log_file = str(work / "server.log")
    print(f"server: {' '.join(info.command)}", flush=True)
    settings = {
        "maxNewTokens": args.max_new_tokens,
        "nThreads": args.threads,
        "cpuBuffers": args.cpu_buffers,
        "debounceMs": args.debounce_ms,
    }
    print(f"settings: {settings}")
    editor = Editor(info, work, settings)
    direct: Direct | None = None
    direct_buffers = ""
    try:
        await editor.start()
        if not args.no_direct:
            direct = Direct(model, args.threads, args.cpu_buffers)
            direct_buffers = direct.buffers.description
            print(f"direct: loaded in {direct.load_s:.1f} s ({direct_buffers})", flush=True)
        quiet = (args.quiet, args.quiet_wait, args.quiet_window)
        pids = [os.getpid(), info.pid]
        for steps in rounds:
            await editor.run_round(steps, quiet)
            if direct is not None:
                await asyncio.to_thread(direct.run_round, steps, args.max_new_tokens, pids, quiet)
            done = [asdict(s) for st in rounds if st[0].round <= steps[0].round for s in st]
            (work / "results.partial.json").write_text(json.dumps({"steps": done}, indent=1))
    except RuntimeError as exc:  # pytest-lsp's "Server process N exited with return code: -11"
        stderr = work / "server.stderr"
        lines = stderr.read_text(errors="replace").splitlines()[-15:] if stderr.is_file() else []
        raise SystemExit(f"phi-lsp serve failed: {exc}\n" + "\n".join(lines)) from exc
    finally:
        await editor.stop()
        if direct is not None:
            direct.close()

    all_steps = [s for steps in rounds for s in steps]
    print()
    print(
        f"server load (initialize -> progress end): {info.load_s:.1f} s; direct load: "
        f"{direct.load_s if direct else float('nan'):.1f} s; cpu buffers: {buffers}"
    )
    print(
        f"server peak RSS (VmHWM before shutdown): {info.vm_hwm_kb / 1024**2:.2f} GiB "
        f"(VmRSS {info.vm_rss_kb / 1024**2:.2f} GiB)"
    )
    print()
    print_rounds(all_steps)
    print()
    print(
        "ms = wall time of the request; ratio = phi-lsp (client side) / llama-cpp-python "
        f"direct; quiet = other processes used < {args.quiet} cores during the request"
    )
    print_summary(all_steps, args.quiet)
    return {
        "model": str(model),
        "cpu_buffers": buffers,
        "direct_buffers": direct_buffers,
        "document_tokens": count(rounds[0][0].document),
        "typed": typed,
        "server": asdict(info),
        "direct_load_s": direct.load_s if direct else None,
        "steps": [asdict(s) for s in all_steps],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a GGUF file (default: build/reuse the phi-1 shape Q4_0)")
    parser.add_argument("--tiny", action="store_true", help="use the tiny 2-layer model")
    parser.add_argument("--tokens", type=int, default=1500, help="document size in tokens")
    parser.add_argument("--typed", type=int, default=5, help="characters typed after cold")
    parser.add_argument("--rounds", type=int, default=3, help="cold + typing sequences")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--source", default="textwrap.py", help="stdlib module to cut from")
    parser.add_argument(
        "--cpu-buffers",
        choices=llama_buffers.MODES,
        default="auto",
        help="phiLsp.cpuBuffers, also used for the direct run",
    )
    parser.add_argument("--debounce-ms", type=int, default=0, help="phiLsp.debounceMs")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.3,
        help="before each request, wait until other processes use fewer cores than this",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=120, help="longest wait for quiet, s (0: never)"
    )
    parser.add_argument(
        "--quiet-window", type=float, default=3.0, help="how long it must be quiet, s"
    )
    parser.add_argument("--work-dir", type=Path, help="logs and results (default: a temp dir)")
    parser.add_argument("--no-direct", action="store_true", help="skip llama-cpp-python direct")
    parser.add_argument(
        "--report", type=Path, help="only print the tables of a results(.partial).json"
    )
    args = parser.parse_args(argv)

    if args.report:
        steps = [Step(**s) for s in json.loads(args.report.read_text())["steps"]]
        print_rounds(steps)
        print()
        print_summary(steps, args.quiet)
        return 0
    model = resolve_model(args)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="phi-lsp-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args, model, work))
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {work / 'results.json'}; server log: {work / 'server.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
