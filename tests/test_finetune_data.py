"""Fine-tuning data: sources, mining, quality rules, dedupe, decontamination, split.

The fixture repository (tests/fixtures/finetune_repo, plus the files `make_fixture_repo` adds
because they cannot be checked in) has planted cases with exact expected counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from phi_lsp.evaluation.contamination import NGramIndex
from phi_lsp.finetune.dataset import (
    DataConfig,
    build_dataset,
    load_dataset,
    save_dataset,
    split_by_file,
)
from phi_lsp.finetune.filters import FilterConfig, informative_docstring, is_trivial_body
from phi_lsp.finetune.mining import load_user_exercises, mine_source
from phi_lsp.finetune.sources import SourceConfig, parse_gitignore, walk_respecting_gitignore

FIXTURE = Path(__file__).parent / "fixtures" / "finetune_repo"
SOURCES = SourceConfig(max_file_bytes=20_000)
CONFIG = DataConfig(sources=SOURCES, val_fraction=0.25)

# Counts for the fixture repository, stage by stage (see the files for the planted cases).
EXPECTED_SKIPPED = {
    "vendored": 1,  # third_party/tinyjson.py
    "symlink": 0,
    "huge": 1,  # textkit/huge_table.py (added)
    "binary": 1,  # textkit/blob.py (added, a NUL byte)
    "generated": 2,  # textkit/generated_tables.py (header), textkit/messages_pb2.py (added)
    "minified": 1,  # textkit/minified.py (added)
}
EXPECTED_REJECTED = {
    "nested_function": 1,  # word_lengths.clean
    "test_function": 2,  # checks.test_mean_of_three, tests/helpers.make_points
    # Shape.area (raise NotImplementedError), Circle.radius (return attribute),
    # Square.__init__ (super call), Square.describe (return super call)
    "trivial_body": 4,
    "body_too_short": 1,  # title_case (one line)
    "body_too_long": 0,
    "docstring_uninformative": 1,  # slugify: "Slugify."
    "non_ascii": 1,  # grüße
    "binary_like": 0,
}
EXPECTED_COUNTS = {
    "exercises_found": 38,  # 36 in the checked-in files + 2 user exercises (JSONL)
    "rejected": EXPECTED_REJECTED,
    "after_filters": 28,
    "exact_duplicates": 1,  # stats.median == compat.median
    "near_duplicates": 1,  # compat.spread ~ stats.variance
    # nearby.any_pair_within is HumanEval/0 renamed; numbers.gcd is HumanEval/13
    "humaneval_overlap": 2,
    "kept": 24,
    "train": 17,
    "val": 7,
    "train_files": 5,  # 4 repository files + 1 JSONL line (each line is a unit of its own)
    "val_files": 2,
}
USER_JSONL = [
    {
        "prompt": 'def double(x):\n    """Twice x, for any number x."""\n',
        "completion": "    y = x\n    return x + y\n",
    },  # noqa: E501
    {"prompt": "def bad(x):\n", "completion": ""},  # no completion: a bad line
    {"prompt": 'def triple(x):\n    """Three times x."""\n', "completion": "    return 3 * x\n"},
]


def make_fixture_repo(root: Path, git: bool = False) -> Path:
    """Copy the fixture to root/repo and add the files that cannot be checked in."""
    repo = root / "repo"
    shutil.copytree(FIXTURE, repo)
    text = repo / "textkit"
    (text / "broken.py").write_text('def unfinished(text):\n    """Reverse the words.\n')
    (text / "blob.py").write_bytes(b'def f():\n    """Binary."""\n    return "\0"\n')
    (text / "messages_pb2.py").write_text('def parse(data):\n    """Parse it."""\n    return 1\n')
    line = "TABLE = [" + ", ".join(str(i) for i in range(400)) + "]\n"
    (text / "minified.py").write_text(line + 'def first():\n    """First row."""\n    return 0\n')
    funcs = "".join(
        f'def f{i}(x):\n    """Add {i} to the number x and return it."""\n    y = x + {i}\n'
        f"    return y\n\n\n"
        for i in range(300)
    )
    (text / "huge_table.py").write_text(funcs)
    (repo / ".gitignore").write_text("scratch/\n*.log\n")
    (repo / "scratch").mkdir()
    (repo / "scratch" / "notes.py").write_text(funcs[:200])
    if git:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
        env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fixture"]):
            subprocess.run(["git", *args], cwd=repo, env=env, check=True)
        # Untracked: git lists tracked files only.
        (repo / "wip.py").write_text(
            'def wip(x):\n    """Work in progress on x."""\n' + "    a = x\n    return a\n"
        )  # noqa: E501
    return repo


def make_user_exercises(root: Path) -> Path:
    path = root / "exercises.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in USER_JSONL) + "not json\n")
    return path


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (.git included), and every folder's listing."""
    out = {}
    for folder, dirs, files in os.walk(root):
        out[folder] = ",".join(sorted(dirs + files))
        for name in files:
            path = Path(folder) / name
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def index() -> NGramIndex:
    return NGramIndex.from_humaneval()


@pytest.mark.parametrize("git", [False, True], ids=["walk", "git"])
def test_fixture_repo_counts(tmp_path: Path, index: NGramIndex, git: bool) -> None:
    repo = make_fixture_repo(tmp_path, git=git)
    exercises = make_user_exercises(tmp_path)
    before = tree_hashes(repo)
    dataset = build_dataset([repo], [exercises], CONFIG, contamination_index=index)
    assert tree_hashes(repo) == before  # read only, .git included

    report = dataset.report
    (scan,) = report["repos"]
    assert scan["listing"] == ("git" if git else "walk")
    assert (scan["commit"] is not None) == git and scan["dirty"] is (False if git else None)
    # 12 checked-in .py files + 5 added; scratch/ is ignored, wip.py untracked.
    assert scan["python_files"] == 17
    assert scan["skipped"] == EXPECTED_SKIPPED
    assert scan["unparsable"] == 1  # textkit/broken.py
    assert scan["read"] == 11 and scan["exercises_found"] == 36
    assert report["user_exercises"]["exercises"] == 2
    assert report["user_exercises"]["bad_lines"] == 2
    assert report["counts"] == EXPECTED_COUNTS
    assert report["duplicates"]["exact"] == [
        ["repo/geometry/stats.py:15:median", "repo/geometry/compat.py:4:median"]
    ]
    ((dropped, kept, score),) = report["duplicates"]["near"]
    assert (dropped, kept) == (
        "repo/geometry/stats.py:30:variance",
        "repo/geometry/compat.py:19:spread",
    )  # noqa: E501
    assert score >= 0.8
    assert {(c["id"], c["task_id"]) for c in report["contaminated"]} == {
        ("repo/geometry/nearby.py:4:any_pair_within", "HumanEval/0"),
        ("repo/textkit/numbers.py:59:gcd", "HumanEval/13"),
    }
    # The split: whole files, deterministic.
    assert {e.unit for e in dataset.val} == {
        "repo/textkit/numbers.py",
        "exercises/exercises.jsonl#3",
    }  # noqa: E501
    assert not {e.unit for e in dataset.train} & {e.unit for e in dataset.val}
    assert [e.name for e in dataset.val] == [
        "line3",
        "ordinal",
        "to_roman",
        "digit_sum",
        "human_size",
        "is_prime",
        "fizzbuzz_line",
    ]
    assert {e.source for e in dataset.train} == {"repo", "exercises"}


def test_exercise_prompt_matches_the_stub_prompt() -> None:
    source = (FIXTURE / "geometry" / "shapes.py").read_text()
    exercises = {e.name: e for e in mine_source(source, "repo", "geometry/shapes.py")}
    area = exercises["Circle.area"]
    assert area.prompt.startswith("import math\n\n\nclass Circle(Shape):\n    def area(self)")
    assert area.prompt.endswith('        3.1416\n        """\n')
    assert area.completion == "        r = self._radius\n        return math.pi * r * r\n"
    assert area.stub().prompt == area.prompt and area.stub().name == "area"
    radius = exercises["Circle.radius"]
    assert radius.prompt.split("\n\n\n")[1].startswith("class Circle(Shape):\n    @property\n")
    assert radius.trivial and not exercises["bounding_box"].trivial


def test_quality_rule_helpers() -> None:
    import ast

    def body(code: str) -> list[ast.stmt]:
        return ast.parse(code).body

    assert is_trivial_body(body("pass")) and is_trivial_body(body("..."))
    assert is_trivial_body(body("return self.x")) and is_trivial_body(body("return None"))
    assert is_trivial_body(body("super().__init__(a)")) and is_trivial_body(
        body("return super().f()")
    )  # noqa: E501
    assert is_trivial_body(body("raise NotImplementedError('x')"))
    assert not is_trivial_body(body("return a + b")) and not is_trivial_body(
        body("x = 1\nreturn x")
    )
    assert not informative_docstring("Get name.", "get_name", 3)
    assert not informative_docstring("Get the name.", "get_name", 3)
    assert informative_docstring("Name of the user, lowercased.", "get_name", 3)
    assert not informative_docstring("", "f", 1)


def test_keep_tests_and_bounds_are_configurable(tmp_path: Path, index: NGramIndex) -> None:
    repo = make_fixture_repo(tmp_path)
    config = DataConfig(
        sources=SOURCES, filters=FilterConfig(keep_tests=True, min_body_lines=1), val_fraction=0
    )
    report = build_dataset([repo], [], config, contamination_index=index).report
    assert report["counts"]["rejected"]["test_function"] == 0
    assert report["counts"]["rejected"]["body_too_short"] == 0
    assert report["counts"]["val"] == 0 and report["counts"]["train"] == report["counts"]["kept"]


def test_gitignore_walk(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for rel in [
        "a.py",
        "b.log",
        "keep.log",
        "sub/c.py",
        "sub/gen/d.py",
        "build2/e.py",
        "sub/.gitignore",
        "docs/x/f.py",
        ".hidden/g.py",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / ".gitignore").write_text("# comment\n*.log\n!keep.log\n/build2/\ndocs/**/f.py\n")
    (root / "sub" / ".gitignore").write_text("gen/\n")
    assert sorted(walk_respecting_gitignore(root)) == [
        ".gitignore",
        "a.py",
        "keep.log",
        "sub/.gitignore",
        "sub/c.py",
    ]
    (rule,) = parse_gitignore("/only/here.py")
    assert rule.regex.match("only/here.py") and not rule.regex.match("x/only/here.py")


def test_split_is_by_file_and_seeded(tmp_path: Path, index: NGramIndex) -> None:
    repo = make_fixture_repo(tmp_path)
    exercises = build_dataset(
        [repo], [], DataConfig(sources=SOURCES, val_fraction=0), contamination_index=index
    ).train
    seen = set()
    for seed in range(6):
        train, val = split_by_file(exercises, 0.3, seed)
        assert len(train) + len(val) == len(exercises) and val and train
        assert not {e.unit for e in train} & {e.unit for e in val}
        assert split_by_file(exercises, 0.3, seed) == (train, val)
        seen.add(frozenset(e.unit for e in val))
    assert len(seen) > 1


def test_dataset_files_round_trip_and_detect_changes(tmp_path: Path, index: NGramIndex) -> None:
    repo = make_fixture_repo(tmp_path)
    dataset = build_dataset([repo], [], CONFIG, contamination_index=index)
    hashes = save_dataset(dataset, tmp_path / "data")
    assert set(hashes) == {"train.jsonl", "val.jsonl"}
    again = load_dataset(tmp_path / "data")
    assert again.train == dataset.train and again.val == dataset.val
    assert "| − HumanEval overlap | 2 |" in (tmp_path / "data" / "report.md").read_text()
    with (tmp_path / "data" / "val.jsonl").open("a") as f:
        f.write("\n")
    with pytest.raises(ValueError, match="changed"):
        load_dataset(tmp_path / "data")


@pytest.mark.parametrize(
    "char",
    ["\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_mining_maps_ast_lines_the_lsp_way(char: str) -> None:
    """A character str.splitlines breaks at (no line break to ast) must not shift the lines."""
    head = 'def double(x):\n    """Twice x."""'
    source = f"import os\n# a{char}b\n\n{head}\n    return 2 * x\n"
    (exercise,) = mine_source(source, "repo", "m.py")
    assert exercise.head == head and exercise.docstring == "Twice x."
    assert exercise.prompt == "import os\n\n\n" + head + "\n"
    assert exercise.completion == "    return 2 * x\n"


def test_user_jsonl_rows_may_hold_unicode_line_separators(tmp_path: Path) -> None:
    """JSON strings may hold U+2028 or NEL unescaped; only \\n ends a JSONL row."""
    rows = [{"prompt": "def f():\n    '''a\u2028b\x85c'''\n", "completion": "    return 1\n"}]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    loaded = load_user_exercises([path])
    assert loaded.bad_lines == 0
    assert [e.prompt for e in loaded.exercises] == [rows[0]["prompt"]]
