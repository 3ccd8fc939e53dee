"""Helpers for the grader's tests: build a submission from the instructor solutions with
some functions replaced, grade it, and read the report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cnn_course.grading import notebooks, sandbox
from cnn_course.grading.manifest import DEFAULT_MANIFEST
from cnn_course.grading.runner import grade

EXERCISES = DEFAULT_MANIFEST.parent
SOLUTIONS = EXERCISES / "solutions"
SEED = 20240601

# The sandbox needs bubblewrap and user namespaces. Where they are missing, the tests that
# need the sandbox are skipped, except in CI (CI is set), where they must run and fail.
SANDBOX = sandbox.detect()
needs_sandbox = pytest.mark.skipif(
    not SANDBOX.isolated and not os.environ.get("CI"),
    reason=f"the sandbox cannot start here: {SANDBOX.reason}",
)


def solution_source(function: str) -> str:
    """The source of the solution cell that defines ``function``."""
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        nb = notebooks.read_notebook(path)
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            if "solution" in cell["metadata"].get("tags", []) and f"def {function}(" in source:
                return source
    raise LookupError(function)


def variant(function: str, *edits: tuple[str, str]) -> str:
    """The solution of ``function`` with each ``(old, new)`` edit applied (each must apply)."""
    source = solution_source(function)
    for old, new in edits:
        assert old in source, f"edit {old!r} does not apply to the solution of {function}"
        source = source.replace(old, new)
    return source


def build_submission(root: Path, replacements: dict[str, str]) -> Path:
    """A submission directory: the solution notebooks, where the solution cell defining each
    function in ``replacements`` holds the given code instead."""
    root.mkdir(parents=True, exist_ok=True)
    for path in SOLUTIONS.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            source = "".join(cell["source"])
            for function, code in replacements.items():
                if "solution" in cell["metadata"].get("tags", []) and f"def {function}(" in source:
                    cell["source"] = code.splitlines(keepends=True)
        (root / path.name).write_text(json.dumps(nb))
    return root


def by_id(report: dict) -> dict[str, dict]:
    return {row["id"]: row for row in report["exercises"]}


def checks(report: dict, exercise: str) -> list[str | None]:
    """The failed check of each case of ``exercise`` (None where the case passed)."""
    return [case["check"] for case in by_id(report)[exercise]["cases"]]


@pytest.fixture
def grade_with(tmp_path: Path):
    """Grade the solutions with some functions replaced, on the named exercises only."""

    def run(replacements: dict[str, str], exercises: list[str], **options) -> dict:
        submission = build_submission(tmp_path / "submission", replacements)
        options.setdefault("run_notebooks", False)
        return grade(submission, exercise_ids=exercises, seed=SEED, **options)

    return run


@pytest.fixture
def copy_of_exercises(tmp_path: Path) -> Path:
    """A copy of the student notebooks (untouched stubs)."""
    target = tmp_path / "stubs"
    shutil.copytree(EXERCISES, target, ignore=shutil.ignore_patterns("solutions"))
    return target
