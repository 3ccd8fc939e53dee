"""Trusted conftest of the grading suite: parametrizes the cases and records the results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnn_course.grading.compare import CaseFailed
from cnn_course.grading.manifest import load_manifest
from cnn_course.grading.sandbox import Sandbox, become_subreaper, kill_descendants


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--grading-config", required=True, help="config.json written by the grader")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "points(n): points a case is worth")
    path = Path(config.getoption("--grading-config"))
    settings = json.loads(path.read_text())
    chosen = set(settings["exercises"])
    config.grading = settings
    variants = settings.get("variants") or {}  # exercise id -> the variant graded
    config.grading_exercises = [
        e.with_variant(variants.get(e.id))
        for e in load_manifest(Path(settings["manifest"]))
        if e.id in chosen
    ]
    config.grading_results = []
    config.grading_timed_out = set()
    config.grading_sandbox = Sandbox.from_settings(settings["sandbox"])
    become_subreaper()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "exercise" not in metafunc.fixturenames:
        return
    params = [
        pytest.param(e, i, marks=pytest.mark.points(e.points_per_case), id=f"{e.id}-{i}")
        for e in metafunc.config.grading_exercises
        for i in range(e.cases)
    ]
    metafunc.parametrize(("exercise", "index"), params)


@pytest.fixture
def grading(request: pytest.FixtureRequest) -> dict:
    """The grading settings, the sandbox, and the exercises whose time budget is spent."""
    config = request.config
    return {
        "settings": config.grading,
        "timed_out": config.grading_timed_out,
        "sandbox": config.grading_sandbox,
    }


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or "exercise" not in getattr(item, "callspec", {}).params:
        return
    params = item.callspec.params
    error = call.excinfo.value if call.excinfo else None
    if isinstance(error, CaseFailed):
        check, message = error.check, error.message
    elif error is not None:
        check, message = "grader error", f"{type(error).__name__}: {error}"[:300]
    else:
        check, message = None, ""
    item.config.grading_results.append(
        {
            "exercise": params["exercise"].id,
            "case": params["index"],
            "points": item.get_closest_marker("points").args[0],
            "passed": error is None,
            "check": check,
            "message": message,
        }
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    kill_descendants()
    results = getattr(session.config, "grading_results", None)
    if results is not None:
        Path(session.config.grading["results"]).write_text(json.dumps(results))
