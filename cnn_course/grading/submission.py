"""One submission as students really hand it in: find its notebooks, grade, record the audit.

:func:`grade_submission` is what ``cnn-course grade`` and ``cnn-course grade-class`` both call.
It finds the exercise notebooks of a submission folder (at its top or in an ``exercises/``
subfolder, as a clone of the student's repository has them), matches notebooks that a
learning-management system or Colab renamed ("Copy of 01_convolution.ipynb",
"01_convolution (1).ipynb") to their exercise by content (the functions their ``solution``
cells define), copies them under their manifest names into a private folder, grades that
folder with :func:`cnn_course.grading.runner.grade`, and adds to the report what is needed to
audit the score:

- ``student``: the student id (None for a single submission graded without one);
- ``variants``: the variant graded of each exercise that has variants (drawn from the
  student id with the course key, see :mod:`.variants`; the defaults without an id), and
  ``variant_key``: a fingerprint of the course key (not the key);
- ``course``: ``{"version": ..., "commit": ...}`` (``git rev-parse HEAD`` of the checkout the
  grader runs from, ``"unknown"`` without one);
- ``manifest_sha256``: the SHA-256 of the manifest file;
- ``seed`` (already there) and ``isolation`` (already there: the sandbox's verdict);
- ``files``: for each notebook of the manifest, the file graded and how it was found
  (``"name"`` or ``"content"``), with the SHA-256 of its bytes;
- ``report_sha256``: the SHA-256 of the report without its run-dependent fields (``seconds``,
  ``run``, and ``submission``, the folder's path): a regrade with the same seed gives the
  same value.

The submission is data: notebooks are read as JSON, never run here; links and files that are
not regular files are ignored, so a submission cannot make the grader read anything else.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cnn_course import __version__
from cnn_course.grading import notebooks
from cnn_course.grading.manifest import (
    DEFAULT_MANIFEST,
    REPOSITORY,
    Exercise,
    assignment_exercises,
    load_manifest,
)
from cnn_course.grading.report import MARKDOWN, clean
from cnn_course.grading.report import markdown as score_table
from cnn_course.grading.variants import course_key as course_key_of
from cnn_course.grading.variants import key_fingerprint
from cnn_course.grading.variants import resolve as resolve_variants

# Fields that depend on the run (time taken, when, where the folder was): left out of
# ``report_sha256``.
RUN_FIELDS = ("seconds", "run", "report_sha256", "submission")
# "Copy of X", "X (1)", "X - Copy", "X-1", "X copy 2": how LMSs, Colab and file managers rename.
_RENAMED = [
    re.compile(r"^copy of\s+", re.I),
    re.compile(r"\s*\(\d+\)$"),
    re.compile(r"\s*-\s*copy(\s*\(\d+\))?$", re.I),
    re.compile(r"\s+copy(\s+\d+)?$", re.I),
    re.compile(r"-\d+$"),
]


class SubmissionError(ValueError):
    """A submission that cannot be graded at all (no folder, no notebook)."""


@dataclass
class Found:
    """The notebooks of a submission, matched to the manifest's notebook names."""

    files: dict[str, Path] = field(default_factory=dict)  # manifest name -> file
    how: dict[str, str] = field(default_factory=dict)  # manifest name -> "name" | "content"
    notes: list[str] = field(default_factory=list)  # what the student should know


def _regular_notebooks(folder: Path) -> list[Path]:
    if folder.is_symlink() or not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() == ".ipynb" and not path.is_symlink() and path.is_file():
            found.append(path)
    return found


def candidate_notebooks(folder: Path) -> list[Path]:
    """The notebook files of a submission: in ``exercises/`` first, then at the top."""
    return _regular_notebooks(folder / "exercises") + _regular_notebooks(folder)


def normalised_stem(name: str) -> str:
    """A file name without the decorations that copying adds (``Copy of``, `` (1)``...)."""
    stem = Path(name).stem.strip()
    changed = True
    while changed:
        changed = False
        for pattern in _RENAMED:
            new = pattern.sub("", stem).strip()
            if new != stem and new:
                stem, changed = new, True
    return stem


def defined_functions(path: Path) -> set[str] | None:
    """Names of the top-level functions the ``solution`` cells of ``path`` define (None when
    the file is not a readable notebook). Code that does not parse is scanned line by line."""
    try:
        code = notebooks.solution_code(notebooks.read_notebook(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set(re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", code, flags=re.M))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def find_notebooks(folder: Path, exercises: list[Exercise]) -> Found:
    """Match the notebooks in ``folder`` to the manifest's notebooks.

    A file with the manifest's name is taken as it is. For each notebook still missing, a
    remaining file whose ``solution`` cells define every function of that notebook's
    exercises is taken ("by content"); among several, one whose name, once ``Copy of`` and
    `` (1)`` are stripped, is the manifest's name wins, then the first by name."""
    found = Found()
    wanted: dict[str, set[str]] = {}
    for e in exercises:
        wanted.setdefault(e.notebook, set()).update(e.functions)
    candidates = candidate_notebooks(folder)
    taken: set[Path] = set()
    for name in wanted:
        for path in candidates:
            if path.name == name and path not in taken:
                found.files[name], found.how[name] = path, "name"
                taken.add(path)
                break
    missing = [n for n in wanted if n not in found.files]
    if not missing:
        return found
    defines = {p: defined_functions(p) for p in candidates if p not in taken}
    for path, names in defines.items():
        if names is None:
            found.notes.append(f"{_shown(folder, path)}: not a readable notebook (ignored)")
    for name in missing:
        stem = Path(name).stem
        matches = [
            p
            for p, names in defines.items()
            if p not in taken and names is not None and wanted[name] <= names
        ]
        matches.sort(key=lambda p: (normalised_stem(p.name) != stem, p.name))
        if matches:
            path = matches[0]
            found.files[name], found.how[name] = path, "content"
            taken.add(path)
            functions = ", ".join(sorted(wanted[name]))
            found.notes.append(
                f"{_shown(folder, path)} graded as {name} (matched by content: defines {functions})"
            )
            for other in matches[1:]:
                found.notes.append(f"{_shown(folder, other)} also defines {functions} (ignored)")
    return found


def _shown(folder: Path, path: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return path.name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_found(found: Found, target: Path) -> None:
    """Copy the matched notebooks under their manifest names (regular files, bounded size)."""
    for name, path in found.files.items():
        if path.stat().st_size > notebooks.MAX_NOTEBOOK_BYTES:
            continue  # the grader reports it as not a notebook of a reasonable size
        shutil.copyfile(path, target / name, follow_symlinks=False)


def course_commit() -> str:
    """``git rev-parse HEAD`` of the checkout the grader runs from, or ``"unknown"``."""
    if not (REPOSITORY / ".git").exists() or shutil.which("git") is None:
        return "unknown"
    try:
        out = subprocess.run(
            ["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else "unknown"


def manifest_sha256(manifest: Path) -> str:
    return file_sha256(Path(manifest))


def report_sha256(report: dict) -> str:
    """The hash of everything in ``report`` but its run-dependent fields."""
    stable = {k: v for k, v in report.items() if k not in RUN_FIELDS}
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def needs_pytest() -> None:
    """The grading suite runs under pytest; say so plainly where it is not installed."""
    if importlib.util.find_spec("pytest") is None:
        raise SubmissionError(
            "the grader needs pytest, which is not installed here: "
            "pip install 'cnn-course[grade]' (or pip install pytest)"
        )


def select_ids(manifest: Path, ids: list[str] | None, assignment: str | None) -> list[str] | None:
    """The exercise ids to grade: those of ``assignment`` (restricted to ``ids`` if given)."""
    if assignment is None:
        return ids
    chosen = assignment_exercises(assignment, manifest)
    if ids:
        outside = sorted(set(ids) - set(chosen))
        if outside:
            raise ValueError(f"exercise(s) {outside} are not in assignment {assignment!r}")
        chosen = [i for i in chosen if i in ids]
    return chosen


def audit(
    report: dict,
    *,
    student: str | None,
    manifest: Path,
    found: Found,
    folder: Path,
    assignment: str | None,
    class_seed: int | None = None,
    commit: str | None = None,
) -> dict:
    """Add the audit fields to ``report`` (in place) and return it."""
    report["student"] = student
    report.setdefault("isolation", {"isolated": False, "message": "isolation unknown"})
    report["assignment"] = assignment
    report["course"] = {"version": __version__, "commit": commit or course_commit()}
    report["manifest_sha256"] = manifest_sha256(manifest)
    if class_seed is not None:
        report["class_seed"] = class_seed
    report["submission"] = os.fspath(folder)
    report["files"] = {
        name: {
            "file": clean(_shown(folder, path)),
            "matched": found.how[name],
            "sha256": file_sha256(path),
        }
        for name, path in sorted(found.files.items())
    }
    report["notes"] = [clean(n) for n in found.notes]
    report.setdefault("run", {})
    report["run"]["graded_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    report["report_sha256"] = report_sha256(report)
    return report


def grade_submission(
    folder: Path,
    *,
    manifest: Path = DEFAULT_MANIFEST,
    exercise_ids: list[str] | None = None,
    seed: int | None = None,
    run_notebooks: bool = True,
    student: str | None = None,
    assignment: str | None = None,
    class_seed: int | None = None,
    variants: dict[str, str] | None = None,
    course_key: str | None = None,
    draw_variants: bool = True,
) -> dict:
    """Grade the submission in ``folder`` and return the audited report.

    Each exercise with variants is graded as the variant ``student`` draws (with
    ``course_key``, see :mod:`.variants`; the default variant without a student or when
    ``draw_variants`` is false); ``variants`` (exercise id -> name) overrides the drawing.
    A notebook's own metadata is never read for this.

    Raises :class:`SubmissionError` when the folder is missing or holds no notebook of the
    manifest (not even renamed), ValueError for unknown exercise ids or assignment."""
    from cnn_course.grading.runner import grade  # imports the sandbox only when grading

    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        raise SubmissionError(f"{folder} is not a directory")
    ids = select_ids(manifest, exercise_ids, assignment)
    exercises = load_manifest(manifest)
    unknown = sorted(set(ids or ()) - {e.id for e in exercises})
    if unknown:
        raise ValueError(f"unknown exercise id(s): {unknown}")
    chosen = [e for e in exercises if not ids or e.id in ids]
    found = find_notebooks(folder, chosen)
    if not found.files:
        names = ", ".join(dict.fromkeys(e.notebook for e in chosen))
        raise SubmissionError(
            f"{folder}: no exercise notebook found (looked for {names} at its top and in "
            "exercises/, and for renamed copies of them)"
        )
    needs_pytest()
    key = course_key_of(course_key, manifest)
    chosen_variants = resolve_variants(
        chosen, student=student, explicit=variants, key=key, manifest=manifest,
        draw_variants=draw_variants,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cnn-course-submission-") as tmp:
        copy_found(found, Path(tmp))
        report = grade(
            Path(tmp),
            manifest=manifest,
            exercise_ids=ids,
            seed=seed,
            run_notebooks=run_notebooks,
            variants=chosen_variants,
        )
    report["run"] = {"seconds": report.get("seconds")}
    if chosen_variants:
        report["variants"] = chosen_variants
        report["variant_key"] = key_fingerprint(key)
    return audit(
        report,
        student=student,
        manifest=manifest,
        found=found,
        folder=folder,
        assignment=assignment,
        class_seed=class_seed,
    )


def md_inline(text: object) -> str:
    """Text a student controls, for one line of Markdown: inert as HTML and as Markdown."""
    return MARKDOWN.sub(r"\\\1", clean(str(text)).replace("\n", " "))


def markdown(report: dict) -> str:
    """The score table of ``cnn-course grade`` followed by the audit record."""
    lines = [score_table(report).rstrip("\n"), ""]
    notes = report.get("notes") or []
    if notes:
        lines += ["### Notes", ""] + [f"- {md_inline(n)}" for n in notes] + [""]
    course = report.get("course", {})
    isolation = report.get("isolation", {})
    lines += [
        "### Audit",
        "",
        f"- student: {md_inline(report.get('student') or 'not given')}",
        f"- assignment: {md_inline(report.get('assignment') or 'all exercises')}",
        f"- course: cnn-course {md_inline(course.get('version', '?'))}, "
        f"commit {md_inline(course.get('commit', 'unknown'))}",
        f"- manifest SHA-256: {report.get('manifest_sha256', '?')}",
        f"- seed: {report.get('seed')}",
        *variant_lines(report),
        f"- isolation: {md_inline(isolation.get('message', 'unknown'))}",
        f"- report SHA-256 (without run times): {report.get('report_sha256', '?')}",
    ]
    files = report.get("files") or {}
    if files:
        lines += ["", "| notebook | file graded | found by |", "|---|---|---|"]
        for name, entry in files.items():
            lines.append(f"| {name} | {md_inline(entry['file'])} | {entry['matched']} |")
    return "\n".join(lines) + "\n"


def variant_lines(report: dict) -> list[str]:
    """The audit lines naming the variants graded (none for a course without variants)."""
    chosen = report.get("variants") or {}
    if not chosen:
        return []
    listed = ", ".join(f"{k}: {md_inline(v)}" for k, v in chosen.items())
    return [f"- variants: {listed} (course key {md_inline(report.get('variant_key', '?'))})"]


def _replace(path: Path, text: str) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write(report: dict, json_path: Path | None, markdown_path: Path | None) -> None:
    """Write the JSON report and the Markdown table with its audit record."""
    if json_path is not None:
        _replace(json_path, json.dumps(report, indent=2, sort_keys=False) + "\n")
    if markdown_path is not None:
        _replace(markdown_path, markdown(report))
