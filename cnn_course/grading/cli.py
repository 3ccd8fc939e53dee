"""``cnn-course grade``: grade exercise submissions, or regenerate the student notebooks.

    cnn-course grade [SUBMISSION_DIR] --json FILE [--markdown FILE] [--solutions] [--seed N]
                     [--exercise ID ...] [--assignment NAME] [--no-notebooks] [--manifest FILE]
                     [--student ID [--course-key KEY]] [--variant EXERCISE=NAME ...]
    cnn-course grade --make-student-notebooks [--check] [--force]

Notebooks renamed by an LMS or Colab ("Copy of 01_convolution.ipynb") are matched to their
exercise by content; the report says so. ``--make-student-notebooks`` refuses to overwrite a
student notebook whose ``solution`` cells hold more than stubs (``--force`` overwrites).

Exercises with variants are graded as the variant the student id draws (``--student``; see
:mod:`.variants`), as named (``--variant conv2d=nhwc``: what a student's own ``make grade``
passes), or as their default variant (self-study).

Exit status: 0 whenever grading completed in the sandbox, whatever the score; 3 when it
completed but student code could not be isolated (bubblewrap missing or unable to start:
the report says "not isolated: feedback only"); 2 for a usage error. ``CNN_COURSE_BWRAP``
names the ``bwrap`` program to use (default: the one on ``PATH``).
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
from pathlib import Path

from cnn_course.grading import notebooks
from cnn_course.grading.manifest import DEFAULT_MANIFEST, load_manifest, notebook_names
from cnn_course.grading.submission import SubmissionError, grade_submission, markdown, write
from cnn_course.grading.variants import parse_explicit

NOT_ISOLATED_EXIT = 3  # graded, but not in the sandbox: feedback only
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
    p.add_argument("--assignment", help="grade only the exercises of this assignment")
    p.add_argument("--no-notebooks", action="store_true", help="skip running the notebooks")
    p.add_argument("--student", help="the student id: grade the variants it draws")
    p.add_argument("--course-key", help="the course key of the variant drawing")
    p.add_argument("--variant", action="append", metavar="EXERCISE=NAME", help="grade this variant")
    p.add_argument(
        "--manifest", type=Path, default=DEFAULT_MANIFEST, help="the exercise manifest to use"
    )
    p.add_argument(
        "--make-student-notebooks",
        action="store_true",
        help="regenerate exercises/*.ipynb from exercises/solutions/*.ipynb",
    )
    p.add_argument(
        "--check", action="store_true", help="with --make-student-notebooks: only compare"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --make-student-notebooks: overwrite notebooks holding a student's work",
    )
    return p


def holds_work(path: Path) -> bool:
    """Whether the student notebook at ``path`` holds more than the stubs: a ``solution`` cell
    with anything but imports and functions whose body is a docstring and ``raise
    NotImplementedError``. (Outputs, and edits outside the ``solution`` cells, do not count.)
    A notebook that cannot be read counts as work: it is not overwritten either."""
    try:
        code = notebooks.solution_code(notebooks.read_notebook(path))
        return ast.dump(ast.parse(code)) != ast.dump(ast.parse(notebooks.stub_source(code)))
    except (OSError, ValueError, SyntaxError, UnicodeDecodeError):
        return True


def make_student_notebooks(check: bool, force: bool = False) -> int:
    """Regenerate the student notebooks (or, with ``check``, report any that are stale).

    A notebook that holds a student's work (see :func:`holds_work`) is not overwritten
    unless ``force``: the command says so and exits with status 1."""
    names = notebook_names(load_manifest(DEFAULT_MANIFEST))
    names = [n for n in names if (SOLUTIONS / n).is_file()]
    if not check:
        edited = [n for n in names if (EXERCISES / n).exists() and holds_work(EXERCISES / n)]
        keep = [] if force else edited
        for name in keep:
            print(
                f"kept exercises/{name}: its solution cells hold your work, not the stubs "
                "(rename or move it to regenerate it, or pass --force to overwrite it)",
                file=sys.stderr,
            )
        todo = [n for n in names if n not in keep]
        for path in notebooks.make_student_notebooks(SOLUTIONS, EXERCISES, todo):
            print(f"wrote {path}")
        return 1 if keep else 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = notebooks.make_student_notebooks(SOLUTIONS, Path(tmp), names)
        stale = [p.name for p in fresh if p.read_text() != (EXERCISES / p.name).read_text()]
    for name in stale:
        print(f"stale: exercises/{name} (run cnn-course grade --make-student-notebooks)")
    return 1 if stale else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.make_student_notebooks:
        return make_student_notebooks(args.check, args.force)
    submission = SOLUTIONS if args.solutions else args.submission
    if not submission.is_dir():
        print(f"cnn-course grade: {submission} is not a directory", file=sys.stderr)
        return 2
    try:
        report = grade_submission(
            submission,
            manifest=args.manifest,
            exercise_ids=args.exercise,
            seed=args.seed,
            run_notebooks=not args.no_notebooks,
            assignment=args.assignment,
            student=args.student,
            course_key=args.course_key,
            variants=parse_explicit(args.variant, load_manifest(args.manifest)),
        )
    except (ValueError, SubmissionError) as exc:
        print(f"cnn-course grade: {exc}", file=sys.stderr)
        return 2
    write(report, args.json, args.markdown)
    print(markdown(report))
    if not report["isolation"]["isolated"]:
        print(f"cnn-course grade: {report['isolation']['message']}", file=sys.stderr)
        return NOT_ISOLATED_EXIT
    return 0
