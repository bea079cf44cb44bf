"""Adaptive debounce: wait a moment before starting the model only while the user types fast.

During a burst the next keystroke usually arrives before a generation could finish, so starting
one is wasted work; after a pause there is nothing to wait for. The wait follows the typing
rhythm (an exponential moving average of the intervals between edits), like Tabby's debouncer.
"""

from __future__ import annotations

# Intervals longer than this are pauses, not typing.
PAUSE_S = 1.0
# Only a rhythm faster than this counts as a burst worth waiting out.
BURST_S = 0.25


class TypingRhythm:
    def __init__(self, smoothing: float = 0.3) -> None:
        self.smoothing = smoothing
        self.interval: float | None = None
        self.last: float | None = None

    def keystroke(self, now: float) -> None:
        if self.last is not None and now - self.last < PAUSE_S:
            gap = now - self.last
            self.interval = (
                gap
                if self.interval is None
                else ((1 - self.smoothing) * self.interval + self.smoothing * gap)
            )
        self.last = now

    def delay(self, now: float, max_s: float) -> float:
        """Seconds to wait before generating (0 when the user is not in a fast burst)."""
        if self.interval is None or self.last is None or self.interval > BURST_S:
            return 0.0
        waited = now - self.last
        return max(0.0, min(max_s, 1.2 * self.interval) - waited)
