"""Repositories + user exercises → a deduplicated, decontaminated train / validation split.

Stages, each counted in the report: list and read files (`sources`), mine docstring functions
(`mining`), textbook-quality rules (`filters`), exact and near duplicates, HumanEval overlap
(`dedupe`), then the split. The split keeps every file on one side: files (JSONL lines for
user exercises) are ordered by a seeded hash of their name and go to validation until it holds
`val_fraction` of the exercises (at least one file on each side when there are two or more),
so a file's side does not depend on which other files exist.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phi_lsp.finetune.dedupe import decontaminate, deduplicate
from phi_lsp.finetune.exercise import Exercise
from phi_lsp.finetune.filters import RULES, FilterConfig, rejection
from phi_lsp.finetune.mining import load_user_exercises, mine_source
from phi_lsp.finetune.sources import RepoScan, SourceConfig, scan_repo
from phi_lsp.finetune.usage_exercises import USAGE_KIND, UsageExercises
from phi_lsp.fs import atomic_write_bytes


@dataclass(frozen=True)
class DataConfig:
    sources: SourceConfig = field(default_factory=SourceConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    near_dup_threshold: float = 0.8
    contamination_threshold: float = 0.5
    val_fraction: float = 0.1
    split_seed: int = 0


@dataclass
class Dataset:
    train: list[Exercise]
    val: list[Exercise]
    report: dict[str, Any]


def build_dataset(
    repos: Sequence[Path],
    exercise_files: Sequence[Path] = (),
    config: DataConfig | None = None,
    contamination_index: Any | None = None,
    usage: UsageExercises | None = None,
) -> Dataset:
    """Run every stage; the report counts what each one kept and dropped."""
    config = config or DataConfig()
    scans: list[RepoScan] = []
    labels: Counter[str] = Counter()
    for root in repos:
        name = Path(root).resolve().name
        labels[name] += 1
        label = name if labels[name] == 1 else f"{name}-{labels[name]}"
        scans.append(scan_repo(Path(root), label, config.sources))

    # Mining.
    mined: list[Exercise] = []
    repo_reports = []
    for scan in scans:
        found: list[Exercise] = []
        unparsable = 0
        for f in scan.files:
            try:
                found.extend(mine_source(f.text, f.source, f.path))
            except (SyntaxError, ValueError, RecursionError):
                unparsable += 1
        mined.extend(found)
        summary = scan.summary()
        summary["unparsable"] = unparsable
        summary["exercises_found"] = len(found)
        repo_reports.append(summary)
    user = load_user_exercises(exercise_files)
    mined.extend(user.exercises)
    if usage is not None:
        mined.extend(usage.exercises)
    mined.sort(key=lambda e: (e.source, e.path, e.line, e.name))

    # Textbook-quality rules.
    rejected: Counter[str] = Counter()
    usage_rejected: Counter[str] = Counter()
    good: list[Exercise] = []
    for ex in mined:
        reason = rejection(ex, config.filters)
        if reason is None:
            good.append(ex)
        else:
            rejected[reason] += 1
            usage_rejected[reason] += ex.kind == USAGE_KIND

    # Duplicates, then HumanEval.
    dedup = deduplicate(good, config.near_dup_threshold)
    if contamination_index is None:
        from phi_lsp.evaluation.contamination import NGramIndex

        contamination_index = NGramIndex.from_humaneval()
    clean, contaminated = decontaminate(
        dedup.kept, contamination_index, config.contamination_threshold
    )

    train, val = split_by_file(clean, config.val_fraction, config.split_seed)
    per_source: dict[str, dict[str, int]] = {}
    for name, exs in (("mined", mined), ("kept", clean), ("train", train), ("val", val)):
        for ex in exs:
            per_source.setdefault(ex.source, {}).setdefault(name, 0)
            per_source[ex.source][name] += 1
    report: dict[str, Any] = {
        "repos": repo_reports,
        "user_exercises": {
            "files": user.files,
            "exercises": len(user.exercises),
            "bad_lines": user.bad_lines,
            "unparsable_files": user.unparsable_files,
        },
        "counts": {
            "exercises_found": len(mined),
            "rejected": {rule: rejected.get(rule, 0) for rule in RULES},
            "after_filters": len(good),
            "exact_duplicates": len(dedup.exact),
            "near_duplicates": len(dedup.near),
            "humaneval_overlap": len(contaminated),
            "kept": len(clean),
            "train": len(train),
            "val": len(val),
            "train_files": len({e.unit for e in train}),
            "val_files": len({e.unit for e in val}),
        },
        "per_source": per_source,
        "usage": None
        if usage is None
        else usage_counts(usage, usage_rejected, dedup, contaminated, train, val),
        "duplicates": {
            "exact": [list(pair) for pair in dedup.exact],
            "near": [list(t) for t in dedup.near],
        },
        "contaminated": [vars(c) for c in contaminated],
        "config": {
            "near_dup_threshold": config.near_dup_threshold,
            "contamination_threshold": config.contamination_threshold,
            "val_fraction": config.val_fraction,
            "split_seed": config.split_seed,
            "sources": vars(config.sources),
            "filters": vars(config.filters),
        },
    }
    return Dataset(train, val, report)


def usage_counts(
    usage: UsageExercises,
    rejected: Counter[str],
    dedup: Any,
    contaminated: Sequence[Any],
    train: Sequence[Exercise],
    val: Sequence[Exercise],
) -> dict[str, Any]:
    """How many exercises came from the usage journal, and what each stage dropped of them."""
    ids = {ex.id for ex in usage.exercises}
    return {
        **usage.summary(),
        "rejected": {rule: rejected.get(rule, 0) for rule in RULES},
        "exact_duplicates": sum(pair[0] in ids for pair in dedup.exact),
        "near_duplicates": sum(item[0] in ids for item in dedup.near),
        "humaneval_overlap": sum(c.id in ids for c in contaminated),
        "train": sum(ex.kind == USAGE_KIND for ex in train),
        "val": sum(ex.kind == USAGE_KIND for ex in val),
    }


def split_by_file(
    exercises: Sequence[Exercise], val_fraction: float, seed: int
) -> tuple[list[Exercise], list[Exercise]]:
    """(train, val): whole files on one side, chosen by a seeded hash of the file's name."""
    by_unit: dict[str, list[Exercise]] = {}
    for ex in exercises:
        by_unit.setdefault(ex.unit, []).append(ex)

    def rank(unit: str) -> str:
        return hashlib.sha256(f"{seed}\0{unit}".encode()).hexdigest()

    units = sorted(by_unit, key=rank)
    target = round(val_fraction * len(exercises))
    if len(units) >= 2 and val_fraction > 0:
        target = max(target, 1)
    val_units: set[str] = set()
    count = 0
    for unit in units[:-1]:  # the last one always trains
        if count >= target:
            break
        val_units.add(unit)
        count += len(by_unit[unit])
    train = [e for e in exercises if e.unit not in val_units]
    val = [e for e in exercises if e.unit in val_units]
    return train, val


# --- files ---------------------------------------------------------------------------------------


def write_jsonl(path: Path, exercises: Sequence[Exercise]) -> str:
    """Write atomically; return the sha256 of the bytes written."""
    data = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in exercises).encode()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def read_jsonl(path: Path) -> list[Exercise]:
    with path.open(encoding="utf-8") as f:
        return [Exercise.from_json(json.loads(line)) for line in f if line.strip()]


def save_dataset(dataset: Dataset, folder: Path) -> dict[str, str]:
    """train.jsonl, val.jsonl, report.json and report.md under `folder`; return the hashes."""
    hashes = {
        "train.jsonl": write_jsonl(folder / "train.jsonl", dataset.train),
        "val.jsonl": write_jsonl(folder / "val.jsonl", dataset.val),
    }
    dataset.report["hashes"] = hashes
    atomic_write_bytes(folder / "report.json", json.dumps(dataset.report, indent=2).encode())
    atomic_write_bytes(folder / "report.md", render_report(dataset.report).encode())
    return hashes


def load_dataset(folder: Path) -> Dataset:
    report = json.loads((folder / "report.json").read_text())
    for name, digest in report.get("hashes", {}).items():
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if actual != digest:
            raise ValueError(f"{folder / name} changed since it was written (sha256 mismatch)")
    return Dataset(read_jsonl(folder / "train.jsonl"), read_jsonl(folder / "val.jsonl"), report)


def render_report(report: dict[str, Any]) -> str:
    """The dataset report as markdown."""
    c = report["counts"]
    out = ["# Fine-tuning dataset", ""]
    out += ["| repository | listing | commit | .py files | read | skipped | exercises found |"]
    out += ["|---|---|---|---|---|---|---|"]
    for r in report["repos"]:
        skipped = ", ".join(f"{k} {v}" for k, v in r["skipped"].items() if v) or "-"
        if r.get("unparsable"):
            skipped += f", unparsable {r['unparsable']}"
        commit = (r["commit"] or "-")[:12] + (" (dirty)" if r.get("dirty") else "")
        out.append(
            f"| {r['label']} | {r['listing']} | {commit} | {r['python_files']} | {r['read']} "
            f"| {skipped} | {r['exercises_found']} |"
        )
    u = report["user_exercises"]
    if u["files"]:
        out += [
            "",
            f"User exercises: {u['exercises']} from {len(u['files'])} file(s)"
            f" ({u['bad_lines']} bad JSONL lines, {u['unparsable_files']} unparsable).",
        ]
    g = report.get("usage")
    if g:
        dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in g["rejected"].items() if v)
        out += [
            "",
            f"Usage exercises: {g['exercises']} of {g['retained_events']} retained suggestions"
            f" kept at least {g['min_share']:.0%} ({g['below_share']} below,"
            f" {g['malformed']} malformed; journal `{g['journal']}`). Dropped: quality rules"
            f" {sum(g['rejected'].values())}{f' ({dropped})' if dropped else ''},"
            f" exact duplicates {g['exact_duplicates']}, near duplicates"
            f" {g['near_duplicates']}, HumanEval overlap {g['humaneval_overlap']};"
            f" {g['train']} train / {g['val']} validation.",
        ]
    out += ["", "| stage | exercises |", "|---|---|", f"| found | {c['exercises_found']} |"]
    for rule, n in c["rejected"].items():
        out.append(f"| − {rule.replace('_', ' ')} | {n} |")
    out.append(f"| after the quality rules | {c['after_filters']} |")
    out.append(f"| − exact duplicates | {c['exact_duplicates']} |")
    out.append(f"| − near duplicates | {c['near_duplicates']} |")
    out.append(f"| − HumanEval overlap | {c['humaneval_overlap']} |")
    if "loss_filter" in report:
        lf = report["loss_filter"]
        out.append(f"| − base-model loss outliers (> {lf['threshold']:.2f}) | {lf['dropped']} |")
    out.append(f"| **kept** | **{c['kept'] - report.get('loss_filter', {}).get('dropped', 0)}** |")
    out.append(
        f"| train / validation | {c['train']} / {c['val']} "
        f"({c['train_files']} / {c['val_files']} files) |"
    )
    for item in report["contaminated"]:
        out.append(f"\nDropped {item['id']}: {item['overlap']:.0%} of {item['task_id']}.")
    return "\n".join(out) + "\n"
