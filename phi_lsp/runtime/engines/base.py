"""The one small interface every engine implements, and the types it speaks.

Engines know nothing about LSP, documents or post-processing: text in, text out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol


def common_prefix(a: Iterable[int], b: Iterable[int]) -> int:
    """How many leading tokens `a` and `b` share: what a KV cache of `a` can serve for `b`."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    max_new_tokens: int = 64
    temperature: float = 0.0
    # Called with the text generated so far after each token; True ends generation early
    # (post-processing knows when a block is complete, the engine does not).
    is_done: Callable[[str], bool] | None = None
    # Record each generated token's log-probability (used to rank candidate function bodies).
    logprobs: bool = False
    # Start from an empty KV cache (measuring what the prefix cache saves).
    fresh: bool = False
    # time.monotonic() after which generation stops and returns what it has ("deadline").
    deadline: float | None = None
    # Token healing (engines/healing.py): back the prompt up over the tokens the cursor may
    # have split and have the model write them again; "off" for prompts that end cleanly.
    heal: Literal["word", "token", "off"] = "off"
    # How the caller cuts `prompt` to fewer tokens, (budget, count_tokens) -> prompt, for an
    # engine whose exact count arrives late (remote); None keeps the prompt's end.
    shorten: Callable[[int, Callable[[str], int]], str] | None = None

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    # Prompt tokens actually evaluated (the rest came from the engine's prefix cache).
    evaluated_tokens: int = 0
    generated_tokens: int = 0
    stopped: str = "length"  # "eos" | "length" | "cancelled" | "done" | "deadline"
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Log-probability of each generated token under the model (temperature 1), when asked for.
    token_logprobs: list[float] = field(default_factory=list)
    # The end of the prompt that healing gave back to the model, which wrote it again before
    # `text` (not part of `text`); `forced`: healing refused the model's own first choice.
    healed: str = ""
    forced: bool = False

    @property
    def mean_logprob(self) -> float:
        return sum(self.token_logprobs) / len(self.token_logprobs) if self.token_logprobs else 0.0


class Engine(Protocol):
    """A loaded model that turns a prompt into a continuation."""

    name: str
    n_ctx: int
    # Whether warm() does anything (a local KV cache it can fill ahead of a request).
    warms: bool

    def tokenize(self, text: str) -> list[int]: ...

    def generate(self, request: GenerationRequest, stop: threading.Event) -> Generation:
        """Generate until eos, max_new_tokens, request.is_done, or `stop` is set.

        `stop` is checked after every generated token, so a superseded request ends within one.
        """
        ...

    def warm(self, prompt: str, stop: threading.Event) -> int:
        """Evaluate `prompt` into the KV cache without generating: idle-time prefill.

        Works in short pieces and returns between them once `stop` is set; returns the tokens
        evaluated. An engine without a local cache (remote) returns 0 at once.
        """
        ...

    def close(self) -> None: ...
