"""Exercises from your own editing: the usage journal's `retained` events.

A suggestion you accepted and mostly kept (share of its characters still there when the file was
saved or closed, at least `min_share`) becomes an exercise: the prompt the model saw, and the
text as it stands now (your edits included). The file is the split unit, so a file's examples
stay on one side. They then go through the same quality rules, deduplication and HumanEval
decontamination as mined exercises (`dataset.build_dataset`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi_lsp.finetune.exercise import Exercise

USAGE_SOURCE = "usage"
USAGE_KIND = "usage"
DEFAULT_MIN_SHARE = 0.5


@dataclass
class UsageExercises:
    exercises: list[Exercise] = field(default_factory=list)
    journal: str = ""
    retained_events: int = 0  # `retained` events read
    below_share: int = 0  # kept less than min_share of the suggestion
    malformed: int = 0  # no prompt / kept text / file
    min_share: float = DEFAULT_MIN_SHARE

    def summary(self) -> dict[str, Any]:
        return {
            "journal": self.journal,
            "min_share": self.min_share,
            "retained_events": self.retained_events,
            "below_share": self.below_share,
            "malformed": self.malformed,
            "exercises": len(self.exercises),
        }


def usage_exercises(
    events: Iterable[dict[str, Any]], min_share: float = DEFAULT_MIN_SHARE, journal: str = ""
) -> UsageExercises:
    """Exercises from `retained` events whose share is at least `min_share`, in journal order."""
    out = UsageExercises(journal=journal, min_share=min_share)
    for event in events:
        if event.get("event") != "retained":
            continue
        out.retained_events += 1
        share, prompt, kept, file = (event.get(k) for k in ("share", "prompt", "kept", "file"))
        if (
            not isinstance(share, int | float)
            or not isinstance(prompt, str)
            or not isinstance(kept, str)
            or not isinstance(file, str)
            or not file
        ):
            out.malformed += 1
            continue
        if share < min_share:
            out.below_share += 1
            continue
        number = out.retained_events
        name = str(event.get("id") or f"event{number}")
        out.exercises.append(
            Exercise(
                id=f"{USAGE_SOURCE}/{file}:{number}:{name}",
                source=USAGE_SOURCE,
                path=file,
                unit=f"{USAGE_SOURCE}/{file}",
                kind=USAGE_KIND,
                name=name,
                line=number,
                prompt=prompt,
                completion=kept,
            )
        )
    return out


def read_usage(folder: Path, min_share: float = DEFAULT_MIN_SHARE) -> UsageExercises:
    """The exercises in the journal under `folder` (PHI_LSP_HOME/usage)."""
    from phi_lsp.usage.journal import Journal

    journal = Journal(folder)
    return usage_exercises(journal.read(), min_share, str(journal.path))
