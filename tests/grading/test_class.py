"""Grading a whole class: a roster with full, empty, partial, sabotaging, copied, renamed and
broken submissions, graded in parallel and in shards; the cache; the Canvas file. The class
here was handed the course's own notebooks (``--no-variants``); test_variants grades a class
on the variants drawn from the ids."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from cnn_course.grading import classroom, notebooks, similarity
from cnn_course.grading.manifest import DEFAULT_MANIFEST, load_manifest
from cnn_course.grading.submission import RUN_FIELDS, grade_submission, normalised_stem
from tests.grading.conftest import EXERCISES, build_submission, needs_sandbox, solution_source
from tests.grading.test_similarity import LOOPS, LOOPS_COPY

# A small assignment keeps the class quick: four exercises in two notebooks.
TEST_EXERCISES = ["conv2d", "conv_output_size", "max_pool2d", "avg_pool2d"]
POINTS = {e.id: e.points for e in load_manifest() if e.id in TEST_EXERCISES}
SEED = 7


def _manifest(tmp: Path) -> Path:
    path = tmp / "manifest.toml"
    text = DEFAULT_MANIFEST.read_text()
    ids = ", ".join(f'"{i}"' for i in TEST_EXERCISES)
    path.write_text(text + f'\n[[assignment]]\nname = "test"\nexercises = [{ids}]\n')
    return path


def _stub(function: str) -> str:
    return notebooks.stub_source(solution_source(function))


INFINITE = "import numpy as np\n\ndef max_pool2d(x, kernel_size, stride=None, padding=0):\n"
INFINITE += "    while True:\n        pass\n"
KILLER = "import os\nimport signal\n\ndef avg_pool2d(x, kernel_size, stride=None, padding=0):\n"
KILLER += "    os.kill(os.getppid(), signal.SIGKILL)\n    os.killpg(0, signal.SIGKILL)\n"
FORK_BOMB = "import os\n\ndef conv_output_size(size, kernel_size, stride=1, padding=0, "
FORK_BOMB += "dilation=1):\n    while True:\n        os.fork()\n"


def make_roster(root: Path) -> Path:
    """One folder per student, each a kind of submission the class grader must handle."""
    build_submission(root / "alice", {})  # the instructor's solutions: full marks
    stubs = root / "bob" / "exercises"  # untouched stubs, in exercises/ as in a clone
    stubs.mkdir(parents=True)
    for name in ("01_convolution.ipynb", "04_pooling.ipynb"):
        shutil.copyfile(EXERCISES / name, stubs / name)
    build_submission(root / "carol", {"max_pool2d": _stub("max_pool2d")})  # partial
    build_submission(  # sabotage: a hang, process killing and a fork bomb
        root / "dave",
        {"max_pool2d": INFINITE, "avg_pool2d": KILLER, "conv_output_size": FORK_BOMB},
    )
    build_submission(root / "erin", {"conv2d": LOOPS})  # independent, correct
    build_submission(root / "frank", {"conv2d": LOOPS_COPY})  # erin's, renamed + reformatted
    grace = build_submission(root / "grace", {})  # renamed by an LMS and by Colab
    (grace / "01_convolution.ipynb").rename(grace / "Copy of 01_convolution.ipynb")
    (grace / "04_pooling.ipynb").rename(grace / "04_pooling (1).ipynb")
    (root / "heidi" / "notes").mkdir(parents=True)  # no notebook at all
    judy = build_submission(root / "judy", {})  # one notebook is not JSON
    (judy / "01_convolution.ipynb").write_bytes(b"\x89PNG not a notebook")
    build_submission(root / "Ivan", {})  # the same id twice, differing in case
    build_submission(root / "ivan", {})
    return root


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The roster, graded once in parallel (two workers), and the command's exit status."""
    tmp = tmp_path_factory.mktemp("class")
    roster = make_roster(tmp / "roster")
    manifest = _manifest(tmp)
    out = tmp / "out"
    args = [str(roster), "--out", str(out), "--jobs", "2", "--seed", str(SEED),
            "--assignment", "test", "--no-notebooks", "--manifest", str(manifest),
            "--canvas", str(tmp / "canvas.csv"), "--no-variants"]  # fmt: skip
    status = classroom.main(args)
    return {"tmp": tmp, "roster": roster, "out": out, "manifest": manifest, "args": args,
            "status": status}  # fmt: skip


def gradebook(out: Path) -> dict[str, dict]:
    with open(out / "gradebook.csv", newline="") as fh:
        return {row["student"]: row for row in csv.DictReader(fh)}


def report(out: Path, student: str) -> dict:
    return json.loads((out / student / "report.json").read_text())


def stable(out: Path, student: str) -> dict:
    """The report without its run-dependent fields, and without the course's commit (this
    checkout may gain commits while the tests run): what a regrade must reproduce."""
    r = report(out, student)
    return {k: v for k, v in r.items() if k not in (*RUN_FIELDS, "course")}


@needs_sandbox
@pytest.mark.slow
def test_class_is_graded_and_each_kind_of_submission_scores_what_it_should(graded):
    out = graded["out"]
    assert graded["status"] == 0
    book = gradebook(out)
    header = (out / "gradebook.csv").read_text().splitlines()[0]
    assert header == "student,total,max_total," + ",".join(TEST_EXERCISES)
    assert list(book) == sorted(book)
    full = sum(POINTS.values())
    assert {s: float(r["total"]) for s, r in book.items()} == {
        "alice": full,
        "bob": 0,
        "carol": full - POINTS["max_pool2d"],
        "dave": POINTS["conv2d"],  # every sabotaged function scores 0, the rest full marks
        "erin": full,
        "frank": full,
        "grace": full,
        "heidi": 0,
        "judy": POINTS["max_pool2d"] + POINTS["avg_pool2d"],
    }
    assert all(float(r["max_total"]) == full for r in book.values())
    checks = {row["id"]: row["cases"][0]["check"] for row in report(out, "dave")["exercises"]}
    assert checks["max_pool2d"] == "timeout"
    assert checks["conv2d"] is None


@needs_sandbox
@pytest.mark.slow
def test_reports_carry_the_audit_record(graded):
    out, manifest = graded["out"], graded["manifest"]
    r = report(out, "alice")
    assert r["student"] == "alice" and r["assignment"] == "test"
    assert r["course"]["version"] and r["course"]["commit"]
    assert r["manifest_sha256"] == classroom.manifest_sha256(manifest)
    assert r["seed"] == classroom.student_seed(SEED, "alice") and r["class_seed"] == SEED
    assert r["isolation"]["isolated"] is True
    md = (out / "alice" / "report.md").read_text()
    full = sum(POINTS.values())
    assert f"Exercise score: {full} / {full}" in md and "### Audit" in md
    assert r["report_sha256"] in md


@needs_sandbox
@pytest.mark.slow
def test_renamed_notebooks_are_matched_by_content_and_the_report_says_so(graded):
    r = report(graded["out"], "grace")
    assert r["files"]["01_convolution.ipynb"]["matched"] == "content"
    assert r["files"]["01_convolution.ipynb"]["file"] == "Copy of 01_convolution.ipynb"
    assert r["files"]["04_pooling.ipynb"]["file"] == "04_pooling (1).ipynb"
    assert any("matched by content" in n for n in r["notes"])


@needs_sandbox
@pytest.mark.slow
def test_bad_submissions_get_a_clear_verdict_naming_the_student(graded, capsys):
    out = graded["out"]
    heidi = report(out, "heidi")
    assert heidi["status"] == "no notebooks" and "heidi" in heidi["status_message"]
    judy = {row["id"]: row for row in report(out, "judy")["exercises"]}
    assert judy["conv2d"]["cases"][0]["check"] == "missing"
    assert "01_convolution.ipynb" in judy["conv2d"]["cases"][0]["message"]
    assert not (out / "Ivan").exists() and not (out / "ivan").exists()
    summary = (out / "summary.md").read_text()
    assert "- Ivan: duplicate student id" in summary and "- heidi: no notebook" in summary
    assert (out / "summary.png").stat().st_size > 1000


@needs_sandbox
@pytest.mark.slow
def test_similarity_flags_the_copy_and_not_independent_work(graded):
    with open(graded["out"] / "similarity.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    conv = {(r["student"], r["other"]) for r in rows if r["exercise"] == "conv2d"}
    assert ("erin", "frank") in conv  # the renamed, reformatted copy
    assert ("alice", "reference") in conv  # the instructor's solution itself
    assert not {("alice", "erin"), ("alice", "frank"), ("erin", "reference")} & conv
    assert all(float(r["score"]) >= similarity.THRESHOLD for r in rows)


@needs_sandbox
@pytest.mark.slow
def test_canvas_file_has_the_import_columns(graded):
    with open(graded["tmp"] / "canvas.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "test"]
    assert rows[1][0] == "Points Possible" and float(rows[1][5]) == sum(POINTS.values())
    alice = next(r for r in rows if r[0] == "alice")
    assert alice[2] == alice[3] == "alice" and float(alice[5]) == sum(POINTS.values())


@needs_sandbox
@pytest.mark.slow
def test_a_rerun_grades_only_changed_students(graded, capsys):
    capsys.readouterr()
    before = {s: stable(graded["out"], s) for s in ("alice", "carol")}
    carol = graded["roster"] / "carol" / "01_convolution.ipynb"
    original = carol.read_text()
    carol.write_text(original.replace('"cells"', '"cells"', 1) + "\n")  # a changed byte
    try:
        assert classroom.main(graded["args"]) == 0
        assert "graded 1 student(s), 8 unchanged" in capsys.readouterr().out
        assert classroom.main([*graded["args"], "--student", "alice"]) == 0
        assert "graded 1 student(s)" in capsys.readouterr().out
    finally:
        carol.write_text(original)
    assert classroom.main(graded["args"]) == 0  # carol's notebook is back as it was
    assert "graded 1 student(s), 8 unchanged" in capsys.readouterr().out
    after = {s: stable(graded["out"], s) for s in ("alice", "carol")}
    assert after == before  # regraded with the same seed and notebooks: the same report


@needs_sandbox
@pytest.mark.slow
def test_shards_merged_give_the_unsharded_gradebook(graded):
    tmp, out = graded["tmp"], graded["out"]
    roster = tmp / "small"
    for s in ("alice", "carol", "erin", "frank", "heidi"):
        shutil.copytree(graded["roster"] / s, roster / s)
    common = ["--jobs", "2", "--seed", str(SEED), "--assignment", "test", "--no-notebooks",
              "--manifest", str(graded["manifest"]), "--no-variants"]  # fmt: skip
    shards = [tmp / "shard1", tmp / "shard2"]
    for k, d in enumerate(shards, start=1):
        assert classroom.main([str(roster), "--out", str(d), "--shard", f"{k}/2", *common]) == 0
    first, second = (set(gradebook(d)) for d in shards)
    assert first and second and not first & second
    merged = tmp / "merged"
    assert classroom.main(["--merge", *map(str, shards), "--out", str(merged),
                           "--manifest", str(graded["manifest"])]) == 0  # fmt: skip
    whole = gradebook(out)
    assert gradebook(merged) == {s: whole[s] for s in sorted(first | second)}
    for s in first | second:  # each student's report is independent of the shard
        assert stable(merged, s) == stable(out, s)
    sim = (merged / "similarity.csv").read_text()
    assert "erin,frank,conv2d" in sim


@needs_sandbox
def test_a_student_over_the_time_budget_gets_a_verdict_and_the_class_goes_on(tmp_path):
    roster = tmp_path / "roster"
    build_submission(roster / "slow", {"max_pool2d": INFINITE})
    (roster / "empty").mkdir()
    out = tmp_path / "out"
    args = [str(roster), "--out", str(out), "--jobs", "2", "--seed", "1", "--no-notebooks",
            "--student-timeout", "2", "--manifest", str(_manifest(tmp_path)),
            "--assignment", "test"]  # fmt: skip
    assert classroom.main(args) == 0
    slow = report(out, "slow")
    assert slow["status"] == "timeout" and slow["total"] == 0
    assert "did not finish within 2 s" in slow["status_message"]
    assert set(gradebook(out)) == {"empty", "slow"}


def test_missing_and_empty_rosters_are_usage_errors(tmp_path, capsys):
    assert classroom.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert classroom.main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no student folder" in capsys.readouterr().err
    assert classroom.main([str(tmp_path), "--out", str(tmp_path / "o"), "--shard", "3/2"]) == 2


def test_shards_are_disjoint_deterministic_and_cover_the_class():
    ids = [f"s{i:03d}" for i in range(23)]
    slices = [classroom.shard(list(reversed(ids)), k, 4) for k in range(1, 5)]
    assert sorted(sum(slices, [])) == ids
    assert slices == [classroom.shard(ids, k, 4) for k in range(1, 5)]
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_renamed_names_are_normalised():
    for name in ["Copy of 01_convolution.ipynb", "01_convolution (1).ipynb",
                 "01_convolution - Copy.ipynb", "Copy of 01_convolution (2).ipynb"]:  # fmt: skip
        assert normalised_stem(name) == "01_convolution"


def test_a_plain_install_without_pytest_gets_a_clear_message(tmp_path, monkeypatch):
    import importlib.util

    submission = build_submission(tmp_path / "s", {})
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pytest" else real(name, *a)
    )
    with pytest.raises(ValueError, match="needs pytest"):
        grade_submission(submission, exercise_ids=["conv_output_size"], seed=1)
