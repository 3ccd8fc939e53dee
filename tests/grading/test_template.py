"""The student starter repository, the class-grading workflow, assignments, and the
regeneration of student notebooks that never overwrites a student's work."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnn_course import __version__
from cnn_course.grading import cli, template
from cnn_course.grading.manifest import (
    DEFAULT_MANIFEST,
    assignment_exercises,
    load_assignments,
    load_manifest,
)
from cnn_course.grading.submission import RUN_FIELDS, grade_submission
from tests.grading.conftest import EXERCISES, SOLUTIONS, build_submission, needs_sandbox


def test_student_template_has_stubs_and_no_solutions_tests_or_book(tmp_path):
    out = tmp_path / "repo"
    assert template.main([str(out)]) == 0
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"README.md", "requirements.txt", "Makefile", ".github/workflows/grade.yml",
            "exercises/manifest.toml"} <= files  # fmt: skip
    assert not any("solution" in f or f.startswith("tests") or "book" in f for f in files)
    names = sorted(f for f in files if f.endswith(".ipynb"))
    assert names and all(f.startswith("exercises/") for f in names)
    for name in names:  # every solution cell holds stubs only, as the course's exercises/
        assert not cli.holds_work(out / name), name
        assert (out / name).read_bytes() == (EXERCISES / Path(name).name).read_bytes()
    requirement = (out / "requirements.txt").read_text().strip()
    assert requirement == f"cnn-course[grade]=={__version__}"
    workflow = yaml.safe_load((out / ".github/workflows/grade.yml").read_text())
    runs = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    assert any(r.startswith("make grade") for r in runs)
    makefile = (out / "Makefile").read_text()
    assert "pip install" in makefile and "-r requirements.txt" in makefile
    assert "torch" not in makefile and "jupyter-book" not in makefile
    readme = (out / "README.md").read_text()
    assert "make grade ASSIGNMENT=week1" in readme and "`week1`" in readme
    assert template.main([str(out)]) == 2  # never writes into a folder that is not empty


def test_template_for_one_assignment_holds_its_notebooks_only(tmp_path):
    out = tmp_path / "week1"
    assert template.main([str(out), "--assignment", "week1"]) == 0
    ids = assignment_exercises("week1")
    wanted = {e.notebook for e in load_manifest() if e.id in ids}
    assert {p.name for p in (out / "exercises").glob("*.ipynb")} == wanted


def test_instructor_workflow_runs_shards_as_a_matrix_and_merges_them(tmp_path):
    assert template.main([str(tmp_path), "--instructor", "--ref", "main"]) == 0
    text = (tmp_path / ".github/workflows/grade-class.yml").read_text()
    workflow = yaml.safe_load(text)
    shard, merge = workflow["jobs"]["shard"], workflow["jobs"]["merge"]
    matrix = shard["strategy"]["matrix"]["shard"]
    assert len(matrix) == workflow["env"]["SHARDS"] and matrix == list(range(1, len(matrix) + 1))
    runs = " ".join(s.get("run", "") for s in shard["steps"])
    assert "--shard ${{ matrix.shard }}/${{ env.SHARDS }}" in runs and "--seed" in runs
    assert merge["needs"] == "shard"
    assert "grade-class --merge" in " ".join(s.get("run", "") for s in merge["steps"])
    assert workflow["env"]["COURSE_REF"] == "main" and "@@" not in text


def test_regenerating_student_notebooks_keeps_a_students_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "EXERCISES", tmp_path)
    names = [n for n in dict.fromkeys(e.notebook for e in load_manifest())
             if (SOLUTIONS / n).exists()]  # fmt: skip
    for name in names:
        shutil.copyfile(EXERCISES / name, tmp_path / name)
    work = tmp_path / "01_convolution.ipynb"
    shutil.copyfile(SOLUTIONS / "01_convolution.ipynb", work)  # a student's finished work
    mine = work.read_text()
    stub = tmp_path / "02_im2col.ipynb"
    stub.write_text(stub.read_text().replace('"outputs": []', '"outputs": [] ', 1))
    assert cli.main(["--make-student-notebooks"]) == 1
    assert work.read_text() == mine
    assert "kept exercises/01_convolution.ipynb" in capsys.readouterr().err
    assert stub.read_text() == (EXERCISES / "02_im2col.ipynb").read_text()  # stubs: rewritten
    assert cli.main(["--make-student-notebooks", "--force"]) == 0
    assert work.read_text() == (EXERCISES / "01_convolution.ipynb").read_text()


def test_assignments_are_read_and_checked(tmp_path):
    assignments = load_assignments()
    ids = {e.id for e in load_manifest()}
    assert assignments and all(set(v) <= ids for v in assignments.values())
    bad = tmp_path / "m.toml"
    bad.write_text(DEFAULT_MANIFEST.read_text() + '\n[[assignment]]\nname = "x"\n'
                   'exercises = ["no_such"]\n')  # fmt: skip
    with pytest.raises(ValueError, match="no_such"):
        load_assignments(bad)
    with pytest.raises(ValueError, match="week1"):
        assignment_exercises("week9")


def test_grade_names_an_assignment(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert cli.main(["--solutions", "--assignment", "nope", "--json", str(report)]) == 2
    assert "unknown assignment 'nope'" in capsys.readouterr().err


@needs_sandbox
def test_grade_matches_renamed_notebooks_and_regrades_identically(tmp_path):
    submission = build_submission(tmp_path / "s", {})
    (submission / "01_convolution.ipynb").rename(submission / "Copy of 01_convolution.ipynb")
    reports = [
        grade_submission(
            submission, exercise_ids=["conv_output_size"], seed=3, run_notebooks=False, student="s1"
        )
        for _ in range(2)
    ]
    first = reports[0]
    assert first["total"] == first["max_total"] > 0
    assert first["files"]["01_convolution.ipynb"]["matched"] == "content"
    assert first["student"] == "s1" and first["seed"] == 3
    assert re.fullmatch(r"[0-9a-f]{64}", first["manifest_sha256"])
    if reports[1]["course"] == first["course"]:  # (the checkout may gain a commit meanwhile)
        assert reports[1]["report_sha256"] == first["report_sha256"]
    drop = (*RUN_FIELDS, "course")
    assert {k: v for k, v in first.items() if k not in drop} == {
        k: v for k, v in reports[1].items() if k not in drop
    }
    assert json.dumps(first["files"]) == json.dumps(reports[1]["files"])


@pytest.mark.parametrize("command", ["grade-class", "classroom-template"])
def test_class_commands_have_their_own_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "cnn_course.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and command in result.stdout
