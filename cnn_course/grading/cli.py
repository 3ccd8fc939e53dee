"""``cnn-course grade``: grade exercise submissions, or regenerate the student notebooks.

    cnn-course grade [SUBMISSION_DIR] --json FILE [--markdown FILE] [--solutions] [--seed N]
                     [--exercise ID ...] [--no-notebooks]
    cnn-course grade --make-student-notebooks [--check]

Exit status 0 whenever grading completed, whatever the score; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cnn_course.grading import notebooks
from cnn_course.grading.manifest import DEFAULT_MANIFEST, load_manifest, notebook_names
from cnn_course.grading.report import markdown, write
from cnn_course.grading.runner import grade

EXERCISES = DEFAULT_MANIFEST.parent
SOLUTIONS = EXERCISES / "solutions"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnn-course grade", description=__doc__.splitlines()[0])
    p.add_argument("submission", nargs="?", type=Path, default=Path("exercises"))
    p.add_argument("--json", type=Path, help="write the JSON report here")
    p.add_argument("--markdown", type=Path, help="write the Markdown score table here")
    p.add_argument("--solutions", action="store_true", help="grade the instructor solutions")
    p.add_argument("--seed", type=int, help="seed of the cases (default: drawn at random)")
    p.add_argument("--exercise", action="append", help="grade only this exercise (repeatable)")
    p.add_argument("--no-notebooks", action="store_true", help="skip the nbval run")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=argparse.SUPPRESS)
    p.add_argument(
        "--make-student-notebooks",
        action="store_true",
        help="regenerate exercises/*.ipynb from exercises/solutions/*.ipynb",
    )
    p.add_argument(
        "--check", action="store_true", help="with --make-student-notebooks: only compare"
    )
    return p


def make_student_notebooks(check: bool) -> int:
    """Regenerate the student notebooks (or, with ``check``, report any that are stale)."""
    names = notebook_names(load_manifest(DEFAULT_MANIFEST))
    if not check:
        for path in notebooks.make_student_notebooks(SOLUTIONS, EXERCISES, names):
            print(f"wrote {path}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = notebooks.make_student_notebooks(SOLUTIONS, Path(tmp), names)
        stale = [p.name for p in fresh if p.read_text() != (EXERCISES / p.name).read_text()]
    for name in stale:
        print(f"stale: exercises/{name} (run cnn-course grade --make-student-notebooks)")
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.make_student_notebooks:
        return make_student_notebooks(args.check)
    submission = SOLUTIONS if args.solutions else args.submission
    if not submission.is_dir():
        print(f"cnn-course grade: {submission} is not a directory", file=sys.stderr)
        return 2
    try:
        report = grade(
            submission,
            manifest=args.manifest,
            exercise_ids=args.exercise,
            seed=args.seed,
            run_notebooks=not args.no_notebooks,
        )
    except ValueError as exc:
        print(f"cnn-course grade: {exc}", file=sys.stderr)
        return 2
    write(report, args.json, args.markdown)
    print(markdown(report))
    return 0
