"""One test per grading case (parametrized by the conftest from the manifest)."""

from __future__ import annotations

from pathlib import Path

from cnn_course.grading.compare import CaseFailed
from cnn_course.grading.execute import grade_case


def test_case(exercise, index, grading):
    settings = grading["settings"]
    refused = settings["refused"].get(exercise.id)
    if refused:
        raise CaseFailed(refused["check"], refused["message"])
    if exercise.id in grading["timed_out"]:
        raise CaseFailed("timeout", "not run: an earlier case of this function timed out")
    try:
        source = Path(settings["code"][exercise.id]).read_text(encoding="utf-8")
        grade_case(grading["sandbox"], exercise, index, settings["seed"], source)
    except CaseFailed as failure:
        if failure.check == "timeout":
            grading["timed_out"].add(exercise.id)
        raise
