"""Grade a submission: copy, extract, check, run the grading suite and nbval, report.

The order matters for trust: the submission is copied (allowlisted notebooks only) into a
fresh work directory; its ``solution`` cells are extracted and checked on the syntax tree; the
grading suite runs in a trusted child process that calls the exercise code in sandboxed
grandchildren; nbval runs each notebook with an unprivileged kernel. Only when every process
started for the submission is gone does :func:`grade` return the report, built from the
grader's own records.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
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
KERNEL = Path(__file__).with_name("_kernel.py")
KERNEL_NAME = "cnn-course-grader"
NBVAL_CELL_TIMEOUT = 5  # seconds per notebook cell (the self-checks are tiny)
NBVAL_BUDGET = 45  # seconds for all notebooks together
# What running the notebooks takes beside pytest: nbval drives the kernel through
# jupyter_client, and the grader's kernel (_kernel.py) is ipykernel's.
NOTEBOOK_RUNNER = ("nbval", "jupyter_client", "ipykernel")


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
    budget = sum(e.cases * (e.timeout + 5) for e in exercises) + 60
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # the suite needs no plugin
    log = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, cwd=work, env=env)
    results_path = Path(settings["results"])
    # pytest ends with 0 or 1 (cases failed); anything else (killed by a signal, an internal
    # error) means the suite did not finish, and a results file may have come from elsewhere.
    if log.returncode not in (0, 1) or not results_path.exists():
        raise RuntimeError(f"the grading suite did not finish:\n{log.stdout[-3000:]}")
    return json.loads(results_path.read_text())


def _kernelspec(work: Path, home: Path, scratch: Path) -> Path:
    """A kernelspec whose kernel drops privileges before running notebook code. Its home is
    the grader's; only ``scratch`` (temporary files, matplotlib's cache) belongs to the
    unprivileged user, and the grader never writes there."""
    spec_dir = work / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-I", str(KERNEL), "-f", "{connection_file}",
                 "--HistoryManager.enabled=False"],
        "display_name": "cnn-course grader",
        "language": "python",
        "env": {"HOME": str(home), "TMPDIR": str(scratch), "MPLCONFIGDIR": str(scratch),
                "MPLBACKEND": "Agg", "IPYTHONDIR": str(home / ".ipython")},
    }  # fmt: skip
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return work / "jupyter"


def missing_notebook_runner() -> list[str]:
    """The packages of :data:`NOTEBOOK_RUNNER` that this interpreter cannot import."""
    return [name for name in NOTEBOOK_RUNNER if importlib.util.find_spec(name) is None]


def _run_notebooks(work: Path, names: list[str], spare: set[int]) -> dict[str, dict]:
    """nbval (lax) on each copied notebook: does it run top to bottom? ``runs`` is None
    (not checked) for every notebook when the notebook runner is not installed."""
    present = [n for n in names if (work / "submission" / n).exists()]
    result = {n: {"runs": False, "message": "notebook missing"} for n in names}
    missing = missing_notebook_runner()
    if present and missing:
        message = f"the notebook runner is not installed (missing {', '.join(missing)})"
        return {**result, **{n: {"runs": None, "message": message} for n in present}}
    if not present:
        return result
    home = work / "home"
    home.mkdir(mode=0o755)
    scratch = sandbox.private_dir(work / "scratch")
    sandbox.hand_over(scratch)
    env = sandbox.child_env(home)
    env.update(
        JUPYTER_PATH=str(_kernelspec(work, home, scratch)),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(home / ".ipython"),
    )
    cmd = [
        sys.executable, "-m", "pytest", "--nbval-lax", "-v", "-p", "no:cacheprovider",
        "-p", "no:randomly", "-c", str(work / "pytest.ini"), "--rootdir", str(work),
        f"--nbval-kernel-name={KERNEL_NAME}", f"--nbval-cell-timeout={NBVAL_CELL_TIMEOUT}",
        *present,
    ]  # fmt: skip
    timed_out = False
    try:
        log = subprocess.run(
            cmd,
            cwd=work / "submission",
            env=env,
            capture_output=True,
            text=True,
            timeout=NBVAL_BUDGET,
            start_new_session=True,
        ).stdout
    except subprocess.TimeoutExpired as exc:  # keep what was reported before the budget ran out
        log = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        timed_out = True
    sandbox.kill_descendants(spare=spare)
    return {**result, **_cell_results(log, present, timed_out)}


CELL_LINE = re.compile(r"^(\S+?\.ipynb)::Cell (\d+) (PASSED|FAILED|ERROR|SKIPPED)", re.M)


def _cell_results(log: str, present: list[str], timed_out: bool) -> dict[str, dict]:
    """Per notebook, whether every cell ran, from pytest's verbose log."""
    cells: dict[str, list[tuple[str, str]]] = {}
    for name, cell, outcome in CELL_LINE.findall(log):
        cells.setdefault(Path(name).name, []).append((cell, outcome))
    finished = "short test summary" in log or re.search(r"^=+ .* in [\d.]+s", log, re.M)
    result = {}
    for name in present:
        seen = cells.get(name, [])
        failed = [cell for cell, outcome in seen if outcome in ("FAILED", "ERROR")]
        if failed:
            result[name] = {"runs": False, "message": f"cell {failed[0]} failed"}
        elif seen and (finished or name != _last(cells)):
            result[name] = {"runs": True, "message": f"ran {len(seen)} cells"}
        elif timed_out:
            result[name] = {"runs": False, "message": "not run: the notebook time budget ran out"}
        else:  # pytest ended before this notebook's cells (an error of its own)
            result[name] = {"runs": False, "message": "not run: nbval ended before its cells"}
    return result


def _last(cells: dict) -> str | None:
    return list(cells)[-1] if cells else None


def grade(
    submission: Path,
    *,
    manifest: Path = DEFAULT_MANIFEST,
    exercise_ids: list[str] | None = None,
    seed: int | None = None,
    run_notebooks: bool = True,
) -> dict:
    """Grade ``submission`` (a directory of exercise notebooks) and return the report dict."""
    start = time.monotonic()
    exercises = select(load_manifest(manifest), exercise_ids)
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    sandbox.become_subreaper()
    before = set(sandbox.descendants(os.getpid()))  # not ours to kill
    work = Path(tempfile.mkdtemp(prefix="cnn-course-grade-"))
    try:
        work.chmod(0o711)  # the unprivileged child may pass through, not list
        cases = work / "cases"
        cases.mkdir(mode=0o711)
        code_files, refused = _prepare_code(Path(submission), work, exercises)
        settings = {
            "manifest": str(Path(manifest).resolve()),
            "exercises": [e.id for e in exercises],
            "seed": seed,
            "code": code_files,
            "refused": refused,
            "cases": str(cases),
            "results": str(work / "results.json"),
        }
        results = _run_suite(work, settings, exercises)
        names = list(dict.fromkeys(e.notebook for e in exercises))
        runs = _run_notebooks(work, names, before) if run_notebooks else {}
    finally:
        sandbox.kill_descendants(spare=before)
        shutil.rmtree(work, ignore_errors=True)
    report = build_report(exercises, results, runs, seed)
    report["seconds"] = round(time.monotonic() - start, 1)
    report["submission"] = os.fspath(submission)
    return report
