"""The grader end to end: full marks for the solutions, zero for the stubs, the report
format, the command line, the notebooks and the student workflow."""

from __future__ import annotations

import ast
import json
import re
import time
from pathlib import Path

import yaml

from cnn_course.grading import cli, notebooks, runner, sandbox
from cnn_course.grading.execute import resolve
from cnn_course.grading.manifest import DEFAULT_MANIFEST, load_manifest, notebook_names
from cnn_course.grading.runner import grade
from tests.grading.conftest import (
    EXERCISES,
    SANDBOX,
    SEED,
    SOLUTIONS,
    build_submission,
    checks,
)

REPOSITORY = DEFAULT_MANIFEST.parents[1]
MANIFEST = load_manifest()


def test_manifest_lists_at_least_twenty_exercises_with_working_references():
    assert len(MANIFEST) >= 20
    assert MANIFEST[0].id == "conv2d"
    for exercise in MANIFEST:
        assert callable(resolve(exercise.reference)), exercise.reference
        assert (EXERCISES / exercise.notebook).is_file()
        assert (SOLUTIONS / exercise.notebook).is_file()
        assert exercise.reference.startswith("cnn_course.")


def test_solutions_score_full_marks(tmp_path):
    report_file, table = tmp_path / "report.json", tmp_path / "report.md"
    argv = ["--solutions", "--seed", str(SEED), "--no-notebooks"]
    status = 0 if SANDBOX.isolated else cli.NOT_ISOLATED_EXIT  # where bwrap cannot start
    assert cli.main([*argv, "--json", str(report_file), "--markdown", str(table)]) == status
    report = json.loads(report_file.read_text())
    failed = [(r["id"], c["message"]) for r in report["exercises"] for c in r["cases"]]
    failed = [f for f in failed if f[1]]
    assert failed == []
    assert report["total"] == report["max_total"] == sum(e.points for e in MANIFEST) == 187
    assert "## Exercise score: 187 / 187" in table.read_text()


def test_untouched_stubs_score_zero(copy_of_exercises):
    report = grade(copy_of_exercises, seed=SEED, run_notebooks=False)
    assert report["total"] == 0
    assert report["max_total"] == 187
    for row in report["exercises"]:
        assert checks(report, row["id"]) == ["raised"] * len(row["cases"]), row
        assert "NotImplementedError" in row["cases"][0]["message"]


def test_report_layout(grade_with):
    report = grade_with({}, ["receptive_field"])
    assert set(report) >= {"total", "max_total", "seed", "seconds", "exercises", "notebooks"}
    (row,) = report["exercises"]
    assert set(row) >= {"id", "points", "max_points", "cases"}
    assert set(row["cases"][0]) >= {"case", "passed", "points", "max_points", "check", "message"}
    assert row["points"] == row["max_points"] == 3


def test_cases_depend_on_the_seed_only_through_values(grade_with, tmp_path):
    from cnn_course.grading.cases import make_case

    a = make_case("conv2d", 1, "conv2d", 1)
    b = make_case("conv2d", 2, "conv2d", 1)
    assert a.kwargs == b.kwargs  # the same situation (stride, padding) ...
    assert not (a.args[0].shape == b.args[0].shape and (a.args[0] == b.args[0]).all())


def test_notebooks_run_top_to_bottom_in_the_report(copy_of_exercises, tmp_path):
    broken = build_submission(tmp_path / "broken", {})
    nb = json.loads((broken / "05_receptive_field.ipynb").read_text())
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": "1 / 0", "outputs": []})
    (broken / "05_receptive_field.ipynb").write_text(json.dumps(nb))
    stub = grade(copy_of_exercises, exercise_ids=["receptive_field"], seed=SEED)
    bad = grade(broken, exercise_ids=["receptive_field"], seed=SEED)
    assert stub["notebooks"]["05_receptive_field.ipynb"]["runs"] is True
    assert stub["total"] == 0
    assert bad["notebooks"]["05_receptive_field.ipynb"]["runs"] is False
    assert bad["total"] == 3  # a notebook that fails later does not cost the graded cells


def test_without_the_sandbox_the_report_is_feedback_only(tmp_path, monkeypatch):
    """Where bubblewrap is missing (here: the grader is pointed at a program that does not
    exist), the grader still grades, marks the report and exits with its own status."""
    monkeypatch.setenv(sandbox.BWRAP_VARIABLE, str(tmp_path / "no-such-bwrap"))
    report_file, table = tmp_path / "report.json", tmp_path / "report.md"
    argv = ["--solutions", "--seed", str(SEED), "--exercise", "receptive_field"]
    argv += ["--json", str(report_file), "--markdown", str(table)]
    assert cli.main(argv) == cli.NOT_ISOLATED_EXIT == 3
    report = json.loads(report_file.read_text())
    assert report["isolation"]["isolated"] is False
    assert report["isolation"]["message"].startswith("not isolated: feedback only (")
    assert "no-such-bwrap" in report["isolation"]["message"]
    assert "**not isolated: feedback only (" in table.read_text()
    assert report["total"] == report["max_total"] == 3
    assert report["notebooks"]["05_receptive_field.ipynb"]["runs"] is True


def test_notebook_verdicts_come_from_the_cells_that_ran():
    def run(lines, exit=0):
        result = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return sandbox.Run(exit, result, "", 0, 1.0)

    ok = [{"cell": 0, "status": "ok"}, {"cell": 1, "status": "ok"}]
    verdict = runner._notebook_verdict
    assert verdict(run([*ok, {"done": True}]), 2, True) == {"runs": True, "message": "ran 2 cells"}
    failed = verdict(run([ok[0], {"cell": 1, "status": "error", "message": "E: x"}]), 2, True)
    assert failed == {"runs": False, "message": "cell 1 failed: E: x"}
    assert verdict(run(ok[:1], exit=None), 2, True)["message"] == "cell 1 did not finish in time"
    late = verdict(run(ok[:1], exit=None), 2, False)["message"]
    assert late == "not run to the end: the notebook time budget ran out"
    assert verdict(run(ok[:1], exit=1), 2, True)["message"] == "the run ended after 1 of 2 cells"
    forged = verdict(run([*ok, {"done": True}]), 3, True)  # fewer lines than cells
    assert forged["runs"] is False


def test_every_hanging_function_costs_one_timeout(tmp_path):
    manifest = tmp_path / "manifest.toml"
    text = DEFAULT_MANIFEST.read_text().replace("timeout = 3.0", "timeout = 0.5")
    manifest.write_text(text)
    hang = {
        e.function: f"def {e.function}(*args, **kwargs):\n    while True:\n        pass\n"
        for e in MANIFEST
    }
    chosen = ["conv2d", "im2col", "max_pool2d", "nms"]
    start = time.monotonic()
    report = grade(
        build_submission(tmp_path / "sub", hang),
        manifest=manifest,
        exercise_ids=chosen,
        seed=SEED,
        run_notebooks=False,
    )
    elapsed = time.monotonic() - start
    assert report["total"] == 0
    for exercise in chosen:
        cases = [c for row in report["exercises"] if row["id"] == exercise for c in row["cases"]]
        assert [c["check"] for c in cases] == ["timeout"] * len(cases)
        assert all("not run" in c["message"] for c in cases[1:])
    assert elapsed < 4 * 0.5 + 20


def test_missing_notebook_loses_only_its_exercises(tmp_path):
    submission = build_submission(tmp_path / "sub", {})
    (submission / "10_activations.ipynb").unlink()
    report = grade(submission, exercise_ids=["relu_backward", "dropout"], seed=SEED,
                   run_notebooks=False)  # fmt: skip
    assert checks(report, "relu_backward") == ["missing", "missing"]
    assert report["total"] == 3


def test_command_line_errors_exit_two(tmp_path, capsys):
    assert cli.main([str(tmp_path / "nowhere"), "--json", str(tmp_path / "r.json")]) == 2
    assert cli.main(["--solutions", "--exercise", "no_such_exercise"]) == 2
    assert "no_such_exercise" in capsys.readouterr().err


def test_student_notebooks_are_in_sync_with_the_solutions():
    assert cli.main(["--make-student-notebooks", "--check"]) == 0


def _stub_body(node: ast.FunctionDef) -> list[str]:
    body = node.body[1:] if isinstance(node.body[0].value, ast.Constant) else node.body
    return [ast.unparse(statement) for statement in body]


def test_student_notebooks_hold_only_stubs_and_never_import_the_library():
    for name in notebook_names(MANIFEST):
        code = notebooks.solution_code(notebooks.read_notebook(EXERCISES / name))
        functions = [n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)]
        assert functions
        for function in functions:
            assert _stub_body(function) == [ast.unparse(ast.parse(notebooks.STUB))], (
                f"{name}: {function.name}"
            )
        for nb_dir in (EXERCISES, SOLUTIONS):
            cells = notebooks.read_notebook(nb_dir / name)["cells"]
            sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
            assert not any("cnn_course" in s for s in sources), f"{nb_dir.name}/{name}"


def test_stub_keeps_signature_docstring_and_imports():
    source = 'import numpy as np\n\nHELPER = 3\n\n\ndef f(x, y=1):\n    """Doc."""\n    return x\n'
    assert notebooks.stub_source(source) == (
        'import numpy as np\n\n\ndef f(x, y=1):\n    """Doc."""\n    ' + notebooks.STUB + "\n"
    )


def test_make_student_notebooks_writes_what_check_compares(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "EXERCISES", tmp_path)
    assert cli.main(["--make-student-notebooks"]) == 0
    for name in notebook_names(MANIFEST):
        assert (tmp_path / name).read_text() == (EXERCISES / name).read_text()


def test_student_workflow_runs_make_grade_and_writes_the_summary():
    workflow = yaml.safe_load((REPOSITORY / ".github" / "workflows" / "grade.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = [s.get("run", "") for s in steps]
    assert any(r.startswith("make grade") for r in runs)
    assert any("grade-report.md" in r and "$GITHUB_STEP_SUMMARY" in r for r in runs)
    makefile = (REPOSITORY / "Makefile").read_text()
    command = re.search(r"^grade:.*\n\t(.*)$", makefile, flags=re.M).group(1)
    assert "cnn-course grade exercises --json grade-report.json --markdown grade-report.md" in (
        command
    )
    # A grade without the sandbox (exit status 3) is still feedback for the student.
    command, _, fallback = command.partition(" || ")
    assert fallback == f"test $$? -eq {cli.NOT_ISOLATED_EXIT}"
    args = cli.parser().parse_args(command.split("cnn-course grade ")[1].split())
    assert args.submission == Path("exercises") and args.json and args.markdown
