"""One completion, start to end: context → prompt → engine → postprocess.

Runs on the engine's worker thread (the engine and its tokenizer are not thread-safe). Knows
nothing about LSP: text and an offset in, the text to insert out.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field

from phi_lsp.completion.context import CursorContext, cursor_context, should_complete
from phi_lsp.completion.postprocess import is_complete, postprocess
from phi_lsp.completion.prompt import build_prompt
from phi_lsp.runtime.engines.base import Engine, Generation, GenerationRequest
from phi_lsp.settings import Settings


@dataclass
class Suggestion:
    text: str  # what to insert at the cursor; "" means nothing to show
    mode: str = ""
    prompt: str = ""
    generation: Generation | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    cached: bool = False  # served from the typed-ahead cache, no model call
    # The end of the prefix the model wrote again (token healing), and whether healing had
    # to overrule the model's own first choice to get it (see engines/healing.py).
    healed: str = ""
    forced: bool = False


def prompt_budget(engine: Engine, settings: Settings) -> int:
    """Tokens the prompt may use: the context minus room for the completion."""
    n_ctx = min(engine.n_ctx, settings.context_tokens)
    return max(0, n_ctx - settings.max_new_tokens)


def engine_prompt(engine: Engine, prefix: str, settings: Settings) -> str:
    """What the model sees for the text before the cursor (`suggest` and `warm` share it).

    Line breaks are "\\n" whatever the document uses: phi-1 learned code from "\\n" files, and
    in a CRLF file it would otherwise continue as if it had never seen one (`finish` gives the
    suggestion the document's line breaks back).
    """
    prefix = prefix.replace("\r\n", "\n")
    return build_prompt(prefix, prompt_budget(engine, settings), lambda s: len(engine.tokenize(s)))


def suggest(
    engine: Engine, text: str, offset: int, settings: Settings, stop: threading.Event
) -> Suggestion:
    """The post-processed suggestion at `offset` in `text` ("" when there is nothing to offer)."""
    t0 = time.perf_counter()
    ctx = cursor_context(text, offset)
    if not should_complete(ctx):
        return Suggestion("", ctx.mode)
    prompt = engine_prompt(engine, ctx.prefix, settings)
    t_prompt = time.perf_counter()
    budget = settings.max_latency_ms
    request = GenerationRequest(
        prompt=prompt,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        is_done=lambda partial: is_complete(partial, ctx),
        fresh=not settings.prefix_cache,
        heal=settings.token_healing,
        shorten=lambda budget, count: build_prompt(ctx.prefix.replace("\r\n", "\n"), budget, count),
        deadline=None
        if budget is None
        else time.monotonic() - (time.perf_counter() - t0) + budget / 1000,
    )
    generation = engine.generate(request, stop)
    t_gen = time.perf_counter()
    raw = generation.text
    if generation.stopped == "deadline":
        raw = clean_cut(raw, ctx)
    out = "" if generation.stopped == "cancelled" else finish(raw, ctx, text)
    t_end = time.perf_counter()
    timings = {
        "prompt": (t_prompt - t0) * 1000,
        "engine": (t_gen - t_prompt) * 1000,
        "postprocess": (t_end - t_gen) * 1000,
    }
    healed = generation.healed.replace("\n", "\r\n") if "\r\n" in text else generation.healed
    healed = healed if ctx.prefix.endswith(healed) else ""
    return Suggestion(
        out, ctx.mode, prompt, generation, timings, healed=healed, forced=generation.forced
    )


def clean_cut(raw: str, ctx: CursorContext) -> str:
    """A generation stopped by the latency budget, cut back to where it is not mid-way.

    Block mode keeps whole lines; line mode drops a trailing word that may be unfinished.
    """
    if ctx.mode == "block":
        return raw[: raw.rfind("\n") + 1] if "\n" in raw else ""
    return re.sub(r"\w+$", "", raw)


def finish(raw: str, ctx: CursorContext, text: str) -> str:
    """Post-process, then give the text the document's line endings back."""
    out = postprocess(raw, ctx)
    if "\r\n" in text:
        out = out.replace("\n", "\r\n")
    return out
