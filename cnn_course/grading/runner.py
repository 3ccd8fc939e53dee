"""Grade a submission: copy, extract, check, run the grading suite and the notebooks, report.

The order matters for trust: the submission is copied (allowlisted notebooks only) into a
fresh work directory; its ``solution`` cells are extracted and checked on the syntax tree; the
grading suite runs in a trusted child process that calls the exercise code in a fresh sandbox
per case (:mod:`.sandbox`); each notebook then runs top to bottom in a sandbox of its own.
Only when every process started for the submission is gone does :func:`grade` return the
report, built from the grader's own records. Where the sandbox cannot start, the report is
marked "not isolated: feedback only".
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnn_course.grading import notebooks, policy, sandbox
from cnn_course.grading.manifest import DEFAULT_MANIFEST, Exercise, load_manifest
from cnn_course.grading.report import build_report

SUITE = Path(__file__).with_name("suite")
NOTEBOOK_CELL_TIMEOUT = 5  # seconds per notebook cell (the self-checks are tiny)
NOTEBOOK_BUDGET = 45  # seconds for all notebooks together
NOTEBOOK_MEMORY = 2 * 2**30  # address space of a notebook's run


def select(exercises: list[Exercise], ids: list[str] | None) -> list[Exercise]:
    """The exercises named in ``ids`` (all when None), in manifest order."""
    if not ids:
        return exercises
    unknown = set(ids) - {e.id for e in exercises}
    if unknown:
        raise ValueError(f"unknown exercise id(s): {sorted(unknown)}")
    return [e for e in exercises if e.id in ids]


def _prepare_code(
    submission: Path, work: Path, exercises: list[Exercise]
) -> tuple[dict[str, str], dict[str, dict]]:
    """Copy the notebooks, extract their code, apply the policy.

    Returns the code file of each exercise and, per refused exercise, the check and message
    every case of it fails with."""
    code_dir = work / "code"
    code_dir.mkdir(mode=0o755)
    copies = work / "submission"
    copies.mkdir(mode=0o755)
    code_files: dict[str, str] = {}
    refused: dict[str, dict] = {}
    for exercise in exercises:
        source = submission / exercise.notebook
        target = code_dir / (Path(exercise.notebook).stem + ".py")
        code_files[exercise.id] = str(target)
        try:
            nb = notebooks.read_notebook(source)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            refused[exercise.id] = {"check": "missing", "message": f"{exercise.notebook}: {exc}"}
            continue
        if not (copies / exercise.notebook).exists():
            copy = notebooks.dumps(notebooks.without_test_markers(nb))
            (copies / exercise.notebook).write_text(copy, encoding="utf-8")
            code = notebooks.solution_code(nb)
            target.write_text(code, encoding="utf-8")
            target.chmod(0o644)
        violations = policy.check_source(target.read_text(), exercise.banned_calls)
        if violations:
            v = violations[0]
            more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
            refused[exercise.id] = {"check": v.kind, "message": f"{exercise.notebook} {v}{more}"}
    return code_files, refused


def _run_suite(work: Path, settings: dict, exercises: list[Exercise]) -> list[dict]:
    config = work / "config.json"
    config.touch(mode=0o600)  # its path is in the suite's command line, which anyone can read
    config.write_text(json.dumps(settings))
    (work / "pytest.ini").write_text("[pytest]\n")
    cmd = [
        sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
        "-c", str(work / "pytest.ini"), "--rootdir", str(work), "--import-mode=importlib",
        "--grading-config", str(config),
    ]  # fmt: skip
    budget = sum(e.cases * (e.timeout + sandbox.STARTUP_SECONDS + 5) for e in exercises) + 60
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # the suite needs no plugin
    log = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, cwd=work, env=env)
    results_path = Path(settings["results"])
    # pytest ends with 0 or 1 (cases failed); anything else (killed by a signal, an internal
    # error) means the suite did not finish, and a results file may have come from elsewhere.
    if log.returncode not in (0, 1) or not results_path.exists():
        raise RuntimeError(f"the grading suite did not finish:\n{log.stdout[-3000:]}")
    return json.loads(results_path.read_text())


def _run_notebooks(work: Path, names: list[str], box: sandbox.Sandbox) -> dict[str, dict]:
    """Run the code cells of each copied notebook top to bottom, in a sandbox of its own."""
    result = {n: {"runs": False, "message": "notebook missing"} for n in names}
    deadline = time.monotonic() + NOTEBOOK_BUDGET
    for name in names:
        path = work / "submission" / name
        if not path.exists():
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            result[name] = {"runs": False, "message": "not run: the notebook time budget ran out"}
            continue
        cells = notebooks.code_cells(notebooks.read_notebook(path))
        limit = min(remaining, NOTEBOOK_CELL_TIMEOUT * max(len(cells), 1) + 5)
        run = box.run(
            "notebook",
            {"cell_seconds": NOTEBOOK_CELL_TIMEOUT},
            json.dumps(cells).encode(),
            timeout=limit,
            memory_bytes=NOTEBOOK_MEMORY,
            cpu_seconds=int(limit) + 1,
        )
        result[name] = _notebook_verdict(run, len(cells), limit < remaining)
    return result


def _notebook_verdict(run: sandbox.Run, count: int, own_limit: bool) -> dict:
    """Whether every cell ran, from the result lines the harness wrote."""
    lines = []
    for line in run.result.decode("utf-8", "replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            break
    cells = [r for r in lines if isinstance(r, dict) and "cell" in r]
    done = any(isinstance(r, dict) and r.get("done") for r in lines)
    failed = [r for r in cells if r.get("status") != "ok"]
    if failed:
        message = str(failed[0].get("message", ""))[-300:]
        return {"runs": False, "message": f"cell {failed[0]['cell']} failed: {message}"}
    if done and len(cells) == count:
        return {"runs": True, "message": f"ran {count} cells"}
    if run.timed_out:
        why = (
            f"cell {len(cells)} did not finish in time"
            if own_limit
            else "not run to the end: the notebook time budget ran out"
        )
        return {"runs": False, "message": why}
    return {"runs": False, "message": f"the run ended after {len(cells)} of {count} cells"}


def isolation(box: sandbox.Sandbox) -> dict:
    """The report's ``isolation`` entry: whether student code ran in the sandbox."""
    if box.isolated:
        return {"isolated": True, "message": "each case and notebook ran in a bubblewrap sandbox"}
    return {"isolated": False, "message": f"{sandbox.NOT_ISOLATED} ({box.reason})"}


def grade(
    submission: Path,
    *,
    manifest: Path = DEFAULT_MANIFEST,
    exercise_ids: list[str] | None = None,
    seed: int | None = None,
    run_notebooks: bool = True,
    variants: dict[str, str] | None = None,
) -> dict:
    """Grade ``submission`` (a directory of exercise notebooks) and return the report dict."""
    start = time.monotonic()
    exercises = select(load_manifest(manifest), exercise_ids)
    variants = {e.id: variants[e.id] for e in exercises if e.id in (variants or {})}
    exercises = [e.with_variant(variants.get(e.id)) for e in exercises]  # checks the names
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    sandbox.become_subreaper()
    before = set(sandbox.descendants(os.getpid()))  # not ours to kill
    sandbox.spare(before)
    box = sandbox.detect()
    work = Path(tempfile.mkdtemp(prefix="cnn-course-grade-"))
    try:
        code_files, refused = _prepare_code(Path(submission), work, exercises)
        settings = {
            "manifest": str(Path(manifest).resolve()),
            "exercises": [e.id for e in exercises],
            "variants": variants,
            "seed": seed,
            "code": code_files,
            "refused": refused,
            "sandbox": box.settings(),
            "results": str(work / "results.json"),
        }
        results = _run_suite(work, settings, exercises)
        names = list(dict.fromkeys(e.notebook for e in exercises))
        runs = _run_notebooks(work, names, box) if run_notebooks else {}
    finally:
        sandbox.kill_descendants(spare=before)
        shutil.rmtree(work, ignore_errors=True)
    report = build_report(exercises, results, runs, seed, isolation(box))
    for row, e in zip(report["exercises"], exercises, strict=True):
        if e.variant is not None:
            row["variant"] = e.variant  # the specification these cases graded
    report["seconds"] = round(time.monotonic() - start, 1)
    report["submission"] = os.fspath(submission)
    return report
