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
    case_dir = Path(settings["cases"]) / f"{exercise.id}-{index}"
    try:
        code = Path(settings["code"][exercise.id])
        grade_case(grading["server"], exercise, index, settings["seed"], code, case_dir)
    except CaseFailed as failure:
        if failure.check == "timeout":
            grading["timed_out"].add(exercise.id)
        raise
