"""``cnn-course classroom-template``: write the repository students start from.

    cnn-course classroom-template OUT [--assignment NAME] [--requirement SPEC]
                                  [--student ID | --roster FILE] [--course-key KEY]
    cnn-course classroom-template --instructor OUT [--repository OWNER/NAME] [--ref REF]

The student repository holds the exercise notebooks (stubs only), the manifest (so that
``make grade`` grades them the way the instructor will), a README for students, the grade
workflow, a ``Makefile`` whose ``grade`` target installs only the grader, and a
``requirements.txt`` pinning this course's package. It holds no solutions, no tests, and no
book workflow.

With ``--student ID``, the notebooks are that student's: each exercise with variants (see
:mod:`.variants`) in the variant the id draws, with its wording, stub and self-check, and
the ``Makefile`` grades those variants; ``--roster FILE`` (one id per line, or a roster
folder) writes one such repository per student, in ``OUT/<id>/``. Without an id the
notebooks are the course's own (the default variants).

With ``--instructor``, OUT receives the workflow that grades a whole class on a GitHub
Actions matrix (``grade-class.yml``) instead.

The student notebooks are checked before they are written: each ``solution`` cell must hold
stubs only (``raise NotImplementedError``), so a checkout whose ``exercises/`` holds someone's
work refuses to produce a template.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from cnn_course import __version__
from cnn_course.grading import variants
from cnn_course.grading.classroom import STUDENT_ID
from cnn_course.grading.manifest import DEFAULT_MANIFEST, load_assignments, load_manifest

TEMPLATES = Path(__file__).with_name("templates")
EXERCISES = DEFAULT_MANIFEST.parent
DEFAULT_REPOSITORY = "cnn-course/cnn-course"


def requirement() -> str:
    """The pinned requirement of this course's package, with the grader's extra."""
    return f"cnn-course[grade]=={__version__}"


def student_readme(names: list[str], assignments: dict[str, list[str]], exercises) -> str:
    by_notebook: dict[str, list[str]] = {}
    for e in exercises:
        by_notebook.setdefault(e.notebook, []).append(e.function)
    lines = [
        "# CNN course: exercises",
        "",
        "Write your code in the cells tagged `solution` of each notebook in `exercises/` (keep",
        "each function's name and arguments; NumPy and the standard library only), run the",
        "self-check cell below it, and grade yourself:",
        "",
        "```bash",
        "make grade                      # every exercise",
        "make grade ASSIGNMENT=week1     # one assignment",
        "```",
        "",
        "`make grade` installs the grader (`requirements.txt`) into `.venv` and writes",
        "`grade-report.md` (a score table) and `grade-report.json`. Each push runs the same",
        "grader in GitHub Actions (`.github/workflows/grade.yml`) and writes the table to the",
        "job summary. Both are feedback: your instructor grades your notebooks from a",
        "checkout of the course they control, with new random cases.",
        "",
        "The grader finds your notebooks at the top of your repository or in `exercises/`;",
        "a notebook renamed by Colab or your learning platform (`Copy of 01_convolution.ipynb`)",
        "is recognised by the functions it defines, but keeping the names avoids surprises.",
        "",
        "| notebook | functions to write |",
        "|---|---|",
    ]
    lines += [f"| `{n}` | {', '.join(f'`{f}`' for f in by_notebook[n])} |" for n in names]
    if assignments:
        lines += ["", "## Assignments", "", "| assignment | exercises |", "|---|---|"]
        lines += [f"| `{a}` | {', '.join(ids)} |" for a, ids in assignments.items()]
    return "\n".join(lines) + "\n"


def _is_stub_notebook(path: Path) -> bool:
    from cnn_course.grading.cli import holds_work

    return not holds_work(path)


def write_student_template(
    out: Path,
    assignment: str | None = None,
    spec: str | None = None,
    student: str | None = None,
    key: str | None = None,
) -> list[Path]:
    """Write the student repository into ``out`` (which must be empty or absent): for
    ``student``'s variants when given, the course's notebooks otherwise."""
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: give a new folder")
    exercises = load_manifest(DEFAULT_MANIFEST)
    assignments = load_assignments(DEFAULT_MANIFEST)
    if assignment is not None:
        if assignment not in assignments:
            raise ValueError(f"unknown assignment {assignment!r} (known: {', '.join(assignments)})")
        exercises = [e for e in exercises if e.id in assignments[assignment]]
        assignments = {assignment: assignments[assignment]}
    names = list(dict.fromkeys(e.notebook for e in exercises if (EXERCISES / e.notebook).is_file()))
    for name in names:
        if not _is_stub_notebook(EXERCISES / name):
            raise ValueError(f"exercises/{name} holds more than stubs: not a student notebook")
    written = []
    (out / "exercises").mkdir(parents=True, exist_ok=True)
    (out / ".github" / "workflows").mkdir(parents=True, exist_ok=True)
    chosen = variants.student_variants(student, exercises, variants.course_key(key))
    written += variants.write_student_notebooks(
        EXERCISES, out / "exercises", names, exercises, chosen, student
    )
    shutil.copyfile(DEFAULT_MANIFEST, out / "exercises" / "manifest.toml")
    shutil.copyfile(TEMPLATES / "grade.yml", out / ".github" / "workflows" / "grade.yml")
    makefile = (TEMPLATES / "Makefile").read_text()
    if student is not None:
        flags = " ".join(f"--variant {k}={v}" for k, v in chosen.items())
        makefile = makefile.replace("VARIANTS ?=\n", f"VARIANTS ?= {flags}\n", 1)
    (out / "Makefile").write_text(makefile)
    (out / "requirements.txt").write_text((spec or requirement()) + "\n")
    readme = student_readme(names, assignments, exercises)
    if student is not None:
        readme += variant_section(student, exercises, chosen)
    (out / "README.md").write_text(readme)
    (out / ".gitignore").write_text(".venv/\ngrade-report.json\ngrade-report.md\n")
    written += [
        out / "exercises" / "manifest.toml",
        out / ".github" / "workflows" / "grade.yml",
        out / "Makefile",
        out / "requirements.txt",
        out / "README.md",
        out / ".gitignore",
    ]
    return written


def variant_section(student: str, exercises, chosen: dict[str, str]) -> str:
    """The README's section naming the student's variants."""
    lines = [
        "",
        f"## Your variants (student `{student}`)",
        "",
        "Some exercises come in variants, so that each student's specification differs. Yours",
        "are below; the notebooks already say what your variant asks (read each exercise's",
        "text: it is not the book's layout everywhere). Your instructor grades the variants",
        "drawn from your student id; `make grade` grades these.",
        "",
        "| exercise | your variant |",
        "|---|---|",
    ]
    by_id = {e.id: e for e in exercises}
    for exercise_id, name in chosen.items():
        summary = by_id[exercise_id].get_variant(name).summary
        lines.append(f"| `{exercise_id}` | `{name}`: {summary} |")
    return "\n".join(lines) + "\n"


def read_roster_ids(path: Path) -> list[str]:
    """Student ids from a roster file (one a line, or a CSV's first column) or folder."""
    return variants.read_ids([str(path)])


def write_instructor_template(out: Path, repository: str, ref: str) -> list[Path]:
    """Write the class-grading workflow (and a roster folder) into ``out``."""
    workflow = (TEMPLATES / "grade-class.yml").read_text()
    workflow = workflow.replace("@@VERSION@@", __version__)
    workflow = workflow.replace("@@REPOSITORY@@", repository).replace("@@REF@@", ref)
    target = out / ".github" / "workflows" / "grade-class.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(workflow)
    roster = out / "roster" / "README.md"
    roster.parent.mkdir(exist_ok=True)
    roster.write_text(
        "One folder per student, named by the student id, holding the student's notebooks\n"
        "(at its top or in exercises/). Run the grade-class workflow from the Actions tab.\n"
    )
    return [target, roster]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnn-course classroom-template", description=__doc__)
    p.add_argument("out", type=Path, help="the folder to write (new or empty)")
    p.add_argument("--assignment", help="only the notebooks of this assignment")
    p.add_argument("--requirement", help=f"the requirement line (default: {requirement()})")
    p.add_argument("--instructor", action="store_true", help="write the class-grading workflow")
    p.add_argument("--student", help="write this student's notebooks (their variants)")
    p.add_argument("--roster", type=Path, help="one repository per student id, in OUT/<id>/")
    p.add_argument("--course-key", help="the course key of the variant drawing")
    p.add_argument("--repository", default=DEFAULT_REPOSITORY, help="the course's repository")
    p.add_argument("--ref", default=f"v{__version__}", help="the course's tag or commit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.instructor:
            written = write_instructor_template(args.out, args.repository, args.ref)
        elif args.roster is not None:
            if args.student:
                raise ValueError("give --student or --roster, not both")
            if args.out.exists() and any(args.out.iterdir()):
                raise ValueError(f"{args.out} is not empty: give a new folder")
            written = []
            for student in read_roster_ids(args.roster):
                written += write_student_template(
                    args.out / student, args.assignment, args.requirement, student,
                    args.course_key,
                )  # fmt: skip
        else:
            if args.student is not None and not STUDENT_ID.match(args.student):
                raise ValueError(f"--student {args.student!r}: letters, digits and ._@+- only")
            written = write_student_template(
                args.out, args.assignment, args.requirement, args.student, args.course_key
            )
    except ValueError as exc:
        print(f"cnn-course classroom-template: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0
