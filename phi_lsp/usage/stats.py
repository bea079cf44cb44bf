"""`phi-lsp stats`: acceptance, retention and latency from the journal, by mode and by model."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DAY = 24 * 3600


@dataclass
class Figures:
    shown: int = 0
    accepted: int = 0
    accepted_chars: int = 0
    kept_chars: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.shown if self.shown else None

    @property
    def retained(self) -> float | None:
        return self.kept_chars / self.accepted_chars if self.accepted_chars else None

    def latency(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(events: Iterable[dict[str, Any]], by: str | None = None) -> dict[str, Figures]:
    """Figures over all events (key "all"), or per value of the shown event's `by` field."""
    out: dict[str, Figures] = defaultdict(Figures)
    keys: dict[str, str] = {}
    for e in events:
        kind = e.get("event")
        if kind == "shown":
            keys[str(e.get("id"))] = str(e.get(by, "?")) if by else "all"
        key = keys.get(str(e.get("id")))
        if key is None:
            continue
        f = out[key]
        if kind == "shown":
            f.shown += 1
            if isinstance(e.get("latency_ms"), (int, float)) and e.get("mode") != "cache":
                f.latencies.append(float(e["latency_ms"]))
        elif kind == "accepted":
            f.accepted += 1
        elif kind == "retained":
            f.accepted_chars += int(e.get("chars", 0))
            f.kept_chars += int(e.get("kept_chars", 0))
    return dict(out)


def render(events: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines = []
    for label, days in (("last day", 1), ("last week", 7)):
        recent = [e for e in events if e.get("t", 0) >= now - days * DAY]
        lines.append(f"{label}:")
        lines.append(
            f"  {'':<28} {'shown':>6} {'accepted':>9} {'rate':>6} {'kept':>6}"
            f" {'p50 ms':>7} {'p95 ms':>7}"
        )
        for by, title in ((None, ""), ("mode", "mode "), ("model", "model ")):
            for key, f in sorted(figures(recent, by).items()):
                lines.append(
                    f"  {(title + key)[:28]:<28} {f.shown:>6} {f.accepted:>9}"
                    f" {pct(f.acceptance):>6} {pct(f.retained):>6}"
                    f" {ms(f.latency(0.5)):>7} {ms(f.latency(0.95)):>7}"
                )
    return "\n".join(lines)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"
