"""The token loop on a `StaticDecoder`: choosing each token (greedy or top-p, under token
healing's mask), prompt lookup's drafts, and the stop rule asked after every token."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from phi_lsp.runtime.engines.healing import Constraint
from phi_lsp.runtime.engines.static_decoding import StaticDecoder

TOP_P = 0.95


@dataclass
class Decoded:
    """What one decoding run produced: the new tokens (eos included), their log-probs, why it
    ended ("": eos or length) and how many prompt tokens came from the cache."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reason: str = ""
    reused: int = 0


def heal_mask(scores: torch.Tensor, constraint: Constraint) -> torch.Tensor:
    """`scores` ([1, vocab]) with every token healing does not allow yet at -inf (as they are
    while it has nothing to say). Notes in `constraint.forced` when the model's own first
    choice was refused."""
    allowed = constraint.allowed()
    if allowed is None:
        return scores
    index = torch.from_numpy(allowed).to(scores.device)
    masked = torch.full_like(scores, -float("inf"))
    masked[:, index] = scores[:, index]
    if not torch.isfinite(masked[0, int(scores[0].argmax())]):
        constraint.forced = True
    return masked


def choose(logits: torch.Tensor, temperature: float, constraint: Constraint) -> tuple[int, float]:
    """The next token (greedy, or sampled with top-p 0.95) and its log-probability under the
    unconstrained distribution; `constraint` masks tokens while healing."""
    scores = heal_mask(logits, constraint)[0]
    if temperature > 0:
        probs = torch.softmax(scores / temperature, dim=-1)
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < TOP_P
        sorted_probs = sorted_probs * keep
        token = int(order[torch.multinomial(sorted_probs / sorted_probs.sum(), 1)])
    else:
        token = int(scores.argmax())
    logprob = float(torch.log_softmax(logits[0], dim=-1)[token])
    constraint.advance(token)
    return token, logprob


def lookup_draft(history: list[int], size: int, ngrams: tuple[int, ...] = (3, 2)) -> list[int]:
    """Prompt lookup: the `size` tokens that followed the latest earlier occurrence of the
    history's last 3 (else 2) tokens; [] when there is none. Searched as bytes (C speed)."""
    data = array("i", history).tobytes()
    for n in ngrams:
        if len(history) <= n:
            continue
        tail = data[-4 * n :]
        at = data.rfind(tail, 0, len(data) - 4)  # ends before the last token: not the tail
        while at > 0 and at % 4:  # a match must start on a token boundary
            at = data.rfind(tail, 0, at + len(tail) - 1)
        if at >= 0 and not at % 4:
            return history[at // 4 + n : at // 4 + n + size]
    return []


def decode(
    decoder: StaticDecoder,
    logits: torch.Tensor,
    max_new: int,
    temperature: float,
    constraint: Constraint,
    eos_id: int,
    should_stop: Callable[[list[int]], str],
    lookup: bool = False,
) -> Decoded:
    """Generate up to `max_new` tokens from `logits` (the prompt's last). `should_stop(tokens)`
    is asked after every token and returns a reason ("" to go on). With `lookup` (greedy), a
    step also checks up to `decoder.draft` tokens copied from earlier in the text and keeps
    those the model would have written itself."""
    out = Decoded()

    def take(token: int, logprob: float) -> bool:
        """Record a token; whether decoding is over."""
        out.tokens.append(token)
        out.logprobs.append(logprob)
        if token == eos_id:
            return True
        out.reason = should_stop(out.tokens)
        return bool(out.reason) or len(out.tokens) == max_new

    token, logprob = choose(logits, temperature, constraint)
    if take(token, logprob):
        return out
    while decoder.room() > 0:
        draft: list[int] = []
        if lookup and constraint.done and decoder.room() > decoder.draft > 0:
            draft = lookup_draft([*decoder.ids, token], decoder.draft)
        if not draft:
            token, logprob = choose(decoder.step(token), temperature, constraint)
            if take(token, logprob):
                return out
            continue
        start = len(decoder.ids)
        checked = decoder.verify([token, *draft, *[draft[-1]] * (decoder.draft - len(draft))])
        best = checked.argmax(-1)
        logprobs = torch.log_softmax(checked, dim=-1).gather(-1, best[:, None])[:, 0].tolist()
        best_ids = best.tolist()
        kept, over = 0, False
        while not over and kept < len(draft) and best_ids[kept] == draft[kept]:
            over = take(draft[kept], logprobs[kept])
            kept += 1
        decoder.drafted += len(draft)
        decoder.accepted += kept
        decoder.rewind(start + 1 + kept)  # the token and the drafts the model agreed with
        if over:
            return out
        token, logprob = best_ids[kept], logprobs[kept]
        if take(token, logprob):
            return out
    return out
