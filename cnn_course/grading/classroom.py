"""``cnn-course grade-class``: grade a whole class, in parallel, in shards, with a gradebook.

    cnn-course grade-class ROSTER --out DIR [--jobs N] [--seed S] [--shard K/N] [--force]
                           [--student ID ...] [--canvas FILE] [--assignment NAME]
                           [--no-notebooks] [--student-timeout SECONDS]
                           [--course-key KEY] [--no-variants] [--list-variants]
    cnn-course grade-class --merge DIR1 DIR2 ... --out DIR [--canvas FILE]

ROSTER holds one folder per student, named by the student id (letters, digits and ``._@+-``);
the notebooks sit at its top or in an ``exercises/`` subfolder. DIR receives

- ``gradebook.csv``: ``student,total,max_total,<exercise id>...``, one row per student, by id;
- ``<student>/report.json`` and ``report.md``: the report of ``cnn-course grade`` with its audit
  record (student id, course version and commit, manifest hash, seed, isolation);
- ``similarity.csv``: ``student,other,exercise,score``, one row per pair at or above the
  threshold of :mod:`.similarity` (``other`` is a student or ``reference``);
- ``summary.md`` and ``summary.png`` (score histogram, pass rate per exercise);
- ``class.json``: the seed, the manifest hash, the exercises and the students of the run;
- with ``--canvas FILE``, the gradebook in the layout of Canvas's gradebook import.

Each student is graded by :func:`.submission.grade_submission` (the function ``cnn-course
grade`` calls) in a process of its own, in a new session, with a wall-clock budget
(``--student-timeout``): a student whose grading hangs, crashes or is killed gets 0 points and
a verdict saying so; nobody else is affected (inside, every case runs in the sandbox of
:mod:`.sandbox`). Each student's cases come from a seed derived from the class seed and the
student id, so a student's report does not depend on the shard or on the other students.
``--seed`` omitted reuses the seed of the last run in DIR (or draws one), so that a re-run
grades only the students whose notebooks changed: the cache is keyed by the bytes of the
student's notebooks, the manifest, the seed, the exercises and the course version.
``--force`` regrades everyone; ``--student ID`` regrades only that student.

Exercises with variants (:mod:`.variants`) are graded as the variant each student id draws
with the course key (``--course-key``, ``$CNN_COURSE_KEY``, the manifest's, or the public
one); the reports record it, the gradebook gains a last column ``variants`` and
``similarity.csv`` a column ``variant`` (students are compared only within a variant).
``--no-variants`` grades everyone on the default variants (a class handed the course's own
notebooks); ``--list-variants`` prints who gets which variant and stops.

Exit status: 0 when grading completed (whatever the scores), 3 when it completed but student
code could not be isolated (feedback only), 2 for a usage error (no roster, an empty roster,
inconsistent shards).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from cnn_course import __version__
from cnn_course.grading import notebooks, similarity, variants
from cnn_course.grading.manifest import DEFAULT_MANIFEST, Exercise, load_manifest
from cnn_course.grading.report import clean
from cnn_course.grading.submission import (
    Found,
    SubmissionError,
    audit,
    candidate_notebooks,
    file_sha256,
    find_notebooks,
    manifest_sha256,
    md_inline,
    select_ids,
    write,
)

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
STUDENT_TIMEOUT = 600.0  # seconds of wall clock for one student's whole grading
NOT_ISOLATED_EXIT = 3
CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
SOLUTIONS = DEFAULT_MANIFEST.parent / "solutions"


# ---- the roster ---------------------------------------------------------------------------
@dataclass
class Roster:
    students: dict[str, Path]  # id -> folder, in id order
    problems: dict[str, str]  # id (or folder name) -> why it is not graded


def read_roster(roster: Path) -> Roster:
    """The student folders of ``roster``; folders that cannot be graded are in ``problems``.

    Raises ValueError for a missing roster or one without any student folder."""
    if not roster.is_dir():
        raise ValueError(f"roster {roster} is not a directory")
    folders = [p for p in sorted(roster.iterdir()) if not p.name.startswith(".")]
    folders = [p for p in folders if p.is_dir() or p.is_symlink()]
    if not folders:
        raise ValueError(f"roster {roster} holds no student folder (one folder per student)")
    students: dict[str, Path] = {}
    problems: dict[str, str] = {}
    by_key: dict[str, list[str]] = {}
    for folder in folders:
        name = folder.name
        if folder.is_symlink():
            problems[name] = "the student folder is a link, not a folder: not graded"
        elif not STUDENT_ID.match(name):
            problems[name] = (
                "the folder name is not a valid student id (letters, digits and ._@+- only): "
                "not graded"
            )
        else:
            by_key.setdefault(name.casefold(), []).append(name)
            students[name] = folder
    for names in by_key.values():
        if len(names) > 1:
            for name in names:
                others = ", ".join(n for n in names if n != name)
                problems[name] = (
                    f"duplicate student id: folders {name} and {others} differ only in case "
                    "(one student, two submissions?): neither is graded; rename or remove one"
                )
                students.pop(name)
    return Roster(dict(sorted(students.items())), problems)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N (``None`` -> ``(1, 1)``)."""
    if text is None:
        return 1, 1
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(match[1]), int(match[2])


def shard(ids: list[str], k: int, n: int) -> list[str]:
    """The K-th of N disjoint slices of ``ids``: every N-th id in sorted order, from the K-th."""
    return [s for i, s in enumerate(sorted(ids)) if i % n == k - 1]


def student_seed(class_seed: int, student: str) -> int:
    """The seed of a student's cases: depends on the class seed and the id only."""
    digest = hashlib.sha256(f"{class_seed}:{student}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


# ---- grading one student in a process of its own -------------------------------------------
@dataclass
class Job:
    student: str
    folder: Path
    seed: int
    key: str


def cache_key(folder: Path, context: dict) -> str:
    """The content hash a cached report is valid for."""
    files = []
    for path in candidate_notebooks(folder):
        try:
            files.append([str(path.relative_to(folder)), file_sha256(path)])
        except OSError:
            files.append([str(path.relative_to(folder)), "unreadable"])
    blob = json.dumps({"files": files, **context}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def student_fingerprints(folder: Path, exercises: list[Exercise]) -> dict[str, list[int]]:
    """Per exercise, the winnowed fingerprints of the student's function (stubs: none)."""
    found = find_notebooks(folder, exercises)
    codes: dict[str, str] = {}
    prints: dict[str, list[int]] = {}
    for e in exercises:
        path = found.files.get(e.notebook)
        if path is None:
            continue
        if e.notebook not in codes:
            try:
                codes[e.notebook] = notebooks.solution_code(notebooks.read_notebook(path))
            except (OSError, ValueError, UnicodeDecodeError):
                codes[e.notebook] = ""
        fp = similarity.fingerprints(similarity.extract(codes[e.notebook], e.function))
        if fp:
            prints[e.id] = sorted(fp)
    return prints


def _worker(job_file: str) -> int:
    """Grade one student (run as ``python -m cnn_course.grading.classroom JOB.json``)."""
    from cnn_course.grading.submission import grade_submission

    job = json.loads(Path(job_file).read_text())
    folder = Path(job["folder"])
    manifest = Path(job["manifest"])
    result: dict = {}
    try:
        result["report"] = grade_submission(
            folder,
            manifest=manifest,
            exercise_ids=job["exercises"],
            seed=job["seed"],
            run_notebooks=job["run_notebooks"],
            student=job["student"],
            assignment=job["assignment"],
            class_seed=job["class_seed"],
            course_key=job.get("course_key"),
            draw_variants=job.get("draw_variants", True),
        )
    except SubmissionError as exc:
        result["error"] = str(exc)
    except Exception as exc:  # the verdict names what went wrong; the class goes on
        result["error"] = f"grading failed: {type(exc).__name__}: {str(exc)[-1500:]}"
    chosen = [e for e in load_manifest(manifest) if e.id in job["exercises"]]
    try:
        result["fingerprints"] = student_fingerprints(folder, chosen)
    except (RecursionError, MemoryError, ValueError):
        result["fingerprints"] = {}
    tmp = job["result"] + ".tmp"
    Path(tmp).write_text(json.dumps(result))
    os.replace(tmp, job["result"])
    return 0


def _run_worker(job: Job, context: dict, work: Path, timeout: float) -> dict:
    """Grade ``job`` in a child process (its own session); never raises."""
    spec = work / f"{job.student}.job.json"
    result_path = work / f"{job.student}.result.json"
    spec.write_text(
        json.dumps({**context, "student": job.student, "folder": str(job.folder),
                    "seed": job.seed, "result": str(result_path)})
    )  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log = work / f"{job.student}.log"
    start = time.monotonic()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cnn_course.grading.classroom", str(spec)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            env=env,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return {"error": f"grading did not finish within {timeout:g} s: stopped, 0 points"}
        finally:
            _kill_group(proc)  # anything the grading left in its session
    seconds = time.monotonic() - start
    if result_path.exists():
        try:
            result = json.loads(result_path.read_text())
            result["seconds"] = seconds
            return result
        except ValueError:
            pass
    tail = log.read_bytes()[-600:].decode("utf-8", "replace").strip()
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"status {proc.returncode}"
    return {"error": f"the grading process ended with {how} before writing a report: {tail}"}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def failed_report(
    exercises: list[Exercise],
    student: str,
    seed: int,
    message: str,
    status: str,
    isolation: dict,
) -> dict:
    """A report giving 0 points to every case, with ``message`` as the verdict."""
    from cnn_course.grading.report import build_report

    results = [
        {"exercise": e.id, "case": i, "passed": False, "check": status, "message": message}
        for e in exercises
        for i in range(e.cases)
    ]
    report = build_report(exercises, results, {}, seed, isolation)
    report["seconds"] = 0.0
    return report


# ---- the class outputs ----------------------------------------------------------------------
def _points(value: float) -> str:
    return f"{value:g}"


def write_gradebook(
    path: Path, reports: dict[str, dict], ids: list[str], with_variants: bool = False
) -> None:
    """``gradebook.csv``; with ``with_variants``, a last column ``variants`` names each
    student's variants (``conv2d=nhwc;nms=xyxy``)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["student", "total", "max_total", *ids] + ["variants"] * with_variants)
        for student in sorted(reports):
            r = reports[student]
            points = {row["id"]: row["points"] for row in r["exercises"]}
            chosen = ";".join(f"{k}={v}" for k, v in (r.get("variants") or {}).items())
            out.writerow(
                [student, _points(r["total"]), _points(r["max_total"])]
                + [_points(points.get(i, 0.0)) for i in ids]
                + [chosen] * with_variants
            )


def write_canvas(
    path: Path, reports: dict[str, dict], exercises: list[Exercise], assignment: str | None
) -> None:
    """The gradebook in the column layout of Canvas's gradebook import (Grades > Import):
    ``Student, ID, SIS User ID, SIS Login ID, Section``, then one column per assignment (or
    per exercise), and a ``Points Possible`` row as in Canvas's own export. The student id
    (the folder name) goes in ``Student``, ``SIS User ID`` and ``SIS Login ID``; ``ID`` (the
    Canvas-internal number) and ``Section`` are left empty."""
    if assignment:
        columns = [(assignment, [e.id for e in exercises])]
    else:
        columns = [(e.id, [e.id]) for e in exercises]
    maxima = {e.id: e.points for e in exercises}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(CANVAS_COLUMNS + [name for name, _ in columns])
        out.writerow(
            ["Points Possible", "", "", "", ""]
            + [_points(sum(maxima[i] for i in ids)) for _, ids in columns]
        )
        for student in sorted(reports):
            points = {row["id"]: row["points"] for row in reports[student]["exercises"]}
            out.writerow(
                [student, "", student, student, ""]
                + [_points(sum(points.get(i, 0.0) for i in ids)) for _, ids in columns]
            )


def reference_fingerprints(exercises: list[Exercise]) -> dict[str, list[list[int]]]:
    """Per exercise, the fingerprints of the instructor's solution (where the checkout has
    it) and of the library's reference function; per non-default variant
    (``"<exercise>@<variant>"``), those of the variant's adapter and of the library function."""
    from cnn_course.grading.execute import resolve

    refs: dict[str, list[list[int]]] = {}
    for e in exercises:
        prints = []
        path = SOLUTIONS / e.notebook
        if path.is_file():
            code = notebooks.solution_code(notebooks.read_notebook(path))
            prints.append(similarity.fingerprints(similarity.extract(code, e.function)))
        library = _function_prints(resolve, e.reference)
        prints.append(library)
        refs[e.id] = [sorted(p) for p in prints if p]
        for v in e.variants[1:]:  # the variant's adapter, and the library function it adapts
            own = _function_prints(resolve, e.with_variant(v.name).reference)
            refs[f"{e.id}@{v.name}"] = [sorted(p) for p in (own, library) if p]
    return refs


def _function_prints(resolve, dotted: str) -> frozenset[int]:
    """The fingerprints of the source of the function at ``dotted`` (empty without one)."""
    import inspect

    try:
        source = inspect.getsource(resolve(dotted))
    except (ImportError, AttributeError, OSError, TypeError):
        return frozenset()
    return similarity.fingerprints(similarity.extract(source, source_name(source)))


def source_name(source: str) -> str:
    """The name of the first function defined in ``source``."""
    match = re.search(r"^\s*def\s+(\w+)", source, flags=re.M)
    return match[1] if match else ""


def base_prints(exercises: list[Exercise]) -> dict[str, frozenset[int]]:
    """Per exercise, the k-grams of the stub every student starts from."""
    base = {}
    for e in exercises:
        path = SOLUTIONS / e.notebook
        if not path.is_file():
            base[e.id] = frozenset()
            continue
        code = notebooks.solution_code(notebooks.read_notebook(path))
        try:
            stub = notebooks.stub_source(code)
        except SyntaxError:
            stub = ""
        base[e.id] = similarity.base_fingerprints(stub, e.function)
        for v in e.variants[1:]:  # every variant's stub is given too
            base[e.id] |= similarity.base_fingerprints(notebooks.stub_source(v.stub), e.function)
    return base


def class_similarity(
    prints: dict[str, dict[str, list[int]]],
    exercises: list[Exercise],
    variants: dict[str, dict[str, str]] | None = None,
) -> list[dict]:
    """Pairs of students (given the same variant) and students against the reference code
    of their variant, at or above the threshold."""
    base = base_prints(exercises)
    ids = {e.id for e in exercises}

    def strip(values: list[int], exercise: str) -> list[int]:
        return sorted(set(values) - base.get(exercise, frozenset()))

    students = {s: {e: strip(v, e) for e, v in p.items() if e in ids} for s, p in prints.items()}
    refs = {e: [strip(v, e) for v in vs] for e, vs in reference_fingerprints(exercises).items()}
    return similarity.compare_class(students, refs, variants=variants)


def write_similarity(path: Path, rows: list[dict], with_variants: bool = False) -> None:
    """``similarity.csv``; with ``with_variants``, a last column names the variant compared."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["student", "other", "exercise", "score"] + ["variant"] * with_variants)
        for r in rows:
            out.writerow(
                [r["student"], r["other"], r["exercise"], f"{r['score']:.3f}"]
                + [r.get("variant") or ""] * with_variants
            )


def write_summary(
    out: Path,
    reports: dict[str, dict],
    exercises: list[Exercise],
    rows: list[dict],
    problems: dict[str, str],
) -> None:
    """``summary.md`` and ``summary.png`` (score histogram, pass rate per exercise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    totals = [reports[s]["total"] for s in sorted(reports)]
    max_total = max((r["max_total"] for r in reports.values()), default=0)
    pass_rate = {}
    for e in exercises:
        graded = [row for r in reports.values() for row in r["exercises"] if row["id"] == e.id]
        full = sum(1 for row in graded if row["points"] >= row["max_points"])
        pass_rate[e.id] = full / len(graded) if graded else 0.0
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, max(3.5, 0.22 * len(exercises))), layout="constrained"
    )
    left.hist(totals, bins=min(20, max(5, len(totals))), range=(0, max(max_total, 1)))
    left.set(title="Score histogram", xlabel=f"total points (of {max_total:g})",
             ylabel="students")  # fmt: skip
    left.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    names = list(pass_rate)
    right.barh(names, [100 * pass_rate[n] for n in names])
    right.invert_yaxis()
    right.set(title="Pass rate per exercise", xlabel="students with full points (%)", xlim=(0, 100))
    right.tick_params(axis="y", labelsize=7)
    fig.savefig(out / "summary.png", dpi=90, metadata={"Software": None})
    plt.close(fig)

    isolated = sum(1 for r in reports.values() if r.get("isolation", {}).get("isolated"))
    mean = sum(totals) / len(totals) if totals else 0.0
    median = sorted(totals)[len(totals) // 2] if totals else 0.0
    lines = [
        "# Class summary",
        "",
        f"- students graded: {len(reports)}; not graded: {len(problems)}",
        f"- isolated in the sandbox: {isolated} of {len(reports)}",
        f"- total points: mean {mean:.1f}, median {median:g}, "
        f"min {min(totals, default=0):g}, max {max(totals, default=0):g} (of {max_total:g})",
        f"- pairs at or above the similarity threshold ({similarity.THRESHOLD}): {len(rows)} "
        "(see similarity.csv)",
        "",
        "![Score histogram and pass rate per exercise](summary.png)",
        "",
        "| exercise | students with full points |",
        "|---|---:|",
    ]
    lines += [f"| `{n}` | {100 * pass_rate[n]:.0f}% |" for n in names]
    failed = {
        s: r.get("status_message", "")
        for s, r in sorted(reports.items())
        if r.get("status", "graded") != "graded"
    }
    if failed or problems:
        lines += ["", "## Students needing attention", ""]
        lines += [f"- {md_inline(s)}: {md_inline(m)}" for s, m in failed.items()]
        lines += [f"- {md_inline(s)}: {md_inline(m)}" for s, m in sorted(problems.items())]
    notes = {s: r.get("notes") for s, r in sorted(reports.items()) if r.get("notes")}
    if notes:
        lines += ["", "## Notebooks found under another name", ""]
        lines += [f"- {md_inline(s)}: " + "; ".join(map(md_inline, n)) for s, n in notes.items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def finalize(
    out: Path,
    students: list[str],
    exercises: list[Exercise],
    problems: dict[str, str],
    canvas: Path | None,
    assignment: str | None,
    with_variants: bool = False,
) -> dict[str, dict]:
    """Write the gradebook, the similarity table, the summary (and the Canvas file) from the
    reports in ``out`` of ``students``; ``with_variants``: the class was given variants."""
    reports, prints = {}, {}
    for s in students:
        path = out / s / "report.json"
        if path.exists():
            reports[s] = json.loads(path.read_text())
            fp = out / s / "fingerprints.json"
            prints[s] = json.loads(fp.read_text()) if fp.exists() else {}
    ids = [e.id for e in exercises]
    write_gradebook(out / "gradebook.csv", reports, ids, with_variants)
    given = {s: r.get("variants") or {} for s, r in reports.items()}
    rows = class_similarity(prints, exercises, given)
    write_similarity(out / "similarity.csv", rows, with_variants)
    write_summary(out, reports, exercises, rows, problems)
    if canvas is not None:
        write_canvas(canvas, reports, exercises, assignment)
    return reports


# ---- the command --------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnn-course grade-class",
        description="grade a class: one folder per student in ROSTER",
    )
    p.add_argument("roster", nargs="?", type=Path, help="folder with one folder per student")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="students at a time")
    p.add_argument("--seed", type=int, help="class seed (default: the last run's, or random)")
    p.add_argument("--shard", help="grade the K-th of N slices of the roster (K/N)")
    p.add_argument("--force", action="store_true", help="regrade every student")
    p.add_argument("--student", action="append", help="regrade only this student (repeatable)")
    p.add_argument("--canvas", type=Path, help="also write the Canvas gradebook import here")
    p.add_argument("--assignment", help="grade only this assignment of the manifest")
    p.add_argument("--no-notebooks", action="store_true", help="skip the top-to-bottom check")
    p.add_argument(
        "--student-timeout", type=float, default=STUDENT_TIMEOUT, help="seconds per student"
    )
    p.add_argument("--merge", nargs="+", type=Path, metavar="DIR", help="merge shard outputs")
    p.add_argument(
        "--course-key", help="the course key of the variant drawing (default: $CNN_COURSE_KEY, "
        "the manifest's [variants] key, or the public key)",
    )  # fmt: skip
    p.add_argument(
        "--no-variants",
        action="store_true",
        help="grade every student on the default variants (the course's own notebooks)",
    )
    p.add_argument(
        "--list-variants", action="store_true", help="print who gets which variant and stop"
    )
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=argparse.SUPPRESS)
    return p


def _error(message: str) -> int:
    print(f"cnn-course grade-class: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.merge:
        if args.roster is not None:
            return _error("give either ROSTER or --merge DIR..., not both")
        return merge(args.merge, args.out, args.canvas, args.manifest)
    if args.roster is None:
        return _error("no roster given (cnn-course grade-class ROSTER --out DIR)")
    if args.jobs < 1:
        return _error("--jobs must be at least 1")
    try:
        k, n = parse_shard(args.shard)
        ids = select_ids(args.manifest, None, args.assignment)
        roster = read_roster(args.roster)
    except ValueError as exc:
        return _error(str(exc))
    exercises = [e for e in load_manifest(args.manifest) if not ids or e.id in ids]
    ids = [e.id for e in exercises]
    course_key = variants.course_key(args.course_key, args.manifest)
    draw_variants = not args.no_variants and any(e.variants for e in exercises)
    if args.list_variants:
        rows = variants.table(list(roster.students), exercises, course_key)
        csv.writer(sys.stdout, lineterminator="\n").writerows(rows)
        return 0
    students = shard(list(roster.students), k, n)
    problems = roster.problems if k == 1 else {}  # reported once, by the first shard
    if args.student:
        unknown = sorted(set(args.student) - set(students))
        if unknown:
            return _error(f"--student {', '.join(unknown)}: not in the roster (or this shard)")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    class_file = out / "class.json"
    previous = json.loads(class_file.read_text()) if class_file.exists() else {}
    class_seed = args.seed
    if class_seed is None:
        class_seed = previous.get("class_seed", secrets.randbelow(2**31))
    manifest_hash = manifest_sha256(args.manifest)
    context = {
        "manifest": str(Path(args.manifest).resolve()),
        "manifest_sha256": manifest_hash,
        "class_seed": class_seed,
        "exercises": ids,
        "assignment": args.assignment,
        "run_notebooks": not args.no_notebooks,
        "version": __version__,
        "draw_variants": draw_variants,
        "variant_key": variants.key_fingerprint(course_key),
        "course_key": course_key,  # to the graders (a private folder), never written out
    }
    keyed = {k_: v for k_, v in context.items() if k_ not in ("manifest", "course_key")}
    jobs, cached = [], []
    for s in students:
        key = cache_key(roster.students[s], keyed)
        cache = out / s / "cache.json"
        fresh = (
            cache.exists()
            and (out / s / "report.json").exists()
            and json.loads(cache.read_text()).get("key") == key
        )
        if args.student:
            if s in args.student:
                jobs.append(Job(s, roster.students[s], student_seed(class_seed, s), key))
            continue
        if fresh and not args.force:
            cached.append(s)
        else:
            jobs.append(Job(s, roster.students[s], student_seed(class_seed, s), key))
    from cnn_course.grading import runner, sandbox

    isolation = runner.isolation(sandbox.detect())
    start = time.monotonic()
    graded = grade_jobs(jobs, exercises, context, out, args.jobs, args.student_timeout, isolation)
    class_file.write_text(
        json.dumps(
            {"class_seed": class_seed, "manifest_sha256": manifest_hash, "exercises": ids,
             "assignment": args.assignment, "shard": [k, n], "students": students,
             "not_graded": problems, "version": __version__, "draw_variants": draw_variants,
             "variant_key": context["variant_key"]},
            indent=2,
        ) + "\n"
    )  # fmt: skip
    reports = finalize(
        out, students, exercises, problems, args.canvas, args.assignment, draw_variants
    )
    seconds = time.monotonic() - start
    for s in sorted(problems):
        print(f"cnn-course grade-class: {s}: {problems[s]}", file=sys.stderr)
    for s in sorted(graded):
        r = reports.get(s, {})
        if r.get("status", "graded") != "graded":
            print(f"cnn-course grade-class: {s}: {r.get('status_message')}", file=sys.stderr)
        for note in r.get("notes", []):
            print(f"cnn-course grade-class: {s}: {note}", file=sys.stderr)
    print(
        f"graded {len(graded)} student(s), {len(cached)} unchanged (cached), "
        f"{len(problems)} not graded, in {seconds:.1f} s "
        f"({seconds / max(len(graded), 1):.1f} s per graded student, {args.jobs} at a time); "
        f"class seed {class_seed}; gradebook: {out / 'gradebook.csv'}"
    )
    if not all(r.get("isolation", {}).get("isolated") for r in reports.values()):
        print(f"cnn-course grade-class: {isolation['message']}", file=sys.stderr)
        return NOT_ISOLATED_EXIT
    return 0


def grade_jobs(
    jobs: list[Job],
    exercises: list[Exercise],
    context: dict,
    out: Path,
    workers: int,
    timeout: float,
    isolation: dict,
) -> list[str]:
    """Grade ``jobs`` with ``workers`` processes at a time; write each student's files."""
    from tqdm import tqdm

    if not jobs:
        return []
    lock = threading.Lock()
    done: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cnn-course-class-") as tmp:
        work = Path(tmp)
        bar = tqdm(total=len(jobs), unit="student", file=sys.stderr, dynamic_ncols=True)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(_grade_and_store, job, exercises, context, out, work, timeout,
                            isolation): job
                for job in jobs
            }  # fmt: skip
            for future in as_completed(futures):
                job = futures[future]
                future.result()
                with lock:
                    done.append(job.student)
                    bar.set_postfix_str(job.student, refresh=False)
                    bar.update(1)
        bar.close()
    return sorted(done)


def _grade_and_store(
    job: Job,
    exercises: list[Exercise],
    context: dict,
    out: Path,
    work: Path,
    timeout: float,
    isolation: dict,
) -> None:
    folder = out / job.student
    folder.mkdir(exist_ok=True)
    if not candidate_notebooks(job.folder):
        result = {
            "error": f"no notebook in {job.student}/ (nor in {job.student}/exercises/)",
            "status": "no notebooks",
        }
    else:
        result = _run_worker(job, context, work, timeout)
    report = result.get("report")
    if report is None:
        message = result["error"]
        status = result.get("status") or (
            "no notebooks" if "no exercise notebook" in message else
            "timeout" if "did not finish within" in message else "not graded"
        )  # fmt: skip
        report = failed_report(exercises, job.student, job.seed, message, status, isolation)
        report["status"], report["status_message"] = status, clean(message)
        given = variants.resolve(
            exercises, student=job.student, key=context.get("course_key"),
            draw_variants=context.get("draw_variants", True),
        )  # fmt: skip
        if given:
            report["variants"] = given
            report["variant_key"] = context.get("variant_key")
        audit(
            report,
            student=job.student,
            manifest=Path(context["manifest"]),
            found=Found(),
            folder=job.folder,
            assignment=context["assignment"],
            class_seed=context["class_seed"],
        )
    else:
        report["status"], report["status_message"] = "graded", ""
    report.setdefault("run", {})["student_seconds"] = round(result.get("seconds", 0.0), 1)
    from cnn_course.grading.submission import report_sha256

    report["report_sha256"] = report_sha256(report)
    write(report, folder / "report.json", folder / "report.md")
    (folder / "fingerprints.json").write_text(json.dumps(result.get("fingerprints", {})))
    (folder / "cache.json").write_text(json.dumps({"key": job.key}) + "\n")


def merge(
    dirs: list[Path], out: Path, canvas: Path | None, manifest: Path = DEFAULT_MANIFEST
) -> int:
    """Merge the outputs of shards into ``out``: reports, gradebook, similarity, summary."""
    classes = []
    for d in dirs:
        path = d / "class.json"
        if not path.exists():
            return _error(f"--merge {d}: not the output of grade-class (no class.json)")
        classes.append(json.loads(path.read_text()))
    for key in (
        "class_seed",
        "manifest_sha256",
        "exercises",
        "assignment",
        "draw_variants",
        "variant_key",
    ):
        values = {json.dumps(c.get(key)) for c in classes}
        if len(values) > 1:
            return _error(f"--merge: the shards differ in {key}; grade them with the same options")
    students: dict[str, Path] = {}
    problems: dict[str, str] = {}
    for d, c in zip(dirs, classes, strict=True):
        for s in c["students"]:
            if s in students:
                return _error(f"--merge: student {s} is in {students[s]} and in {d}")
            students[s] = d
        problems.update(c.get("not_graded", {}))
    out.mkdir(parents=True, exist_ok=True)
    for s, d in sorted(students.items()):
        if (d / s).resolve() != (out / s).resolve() and (d / s).is_dir():
            shutil.copytree(d / s, out / s, dirs_exist_ok=True)
    ids = classes[0]["exercises"]
    by_id = {e.id: e for e in load_manifest(manifest)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        return _error(f"--merge: exercises {missing} are not in this checkout's manifest")
    exercises = [by_id[i] for i in ids]
    merged = dict(classes[0], students=sorted(students), shard=[1, 1], not_graded=problems)
    (out / "class.json").write_text(json.dumps(merged, indent=2) + "\n")
    reports = finalize(
        out,
        sorted(students),
        exercises,
        problems,
        canvas,
        classes[0].get("assignment"),
        bool(classes[0].get("draw_variants")),
    )
    print(f"merged {len(dirs)} shard(s): {len(reports)} student(s); {out / 'gradebook.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
