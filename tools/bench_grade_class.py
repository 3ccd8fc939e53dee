"""Benchmark ``cnn-course grade-class``: grade N synthetic students and report the cost.

    python tools/bench_grade_class.py [--students N] [--jobs J] [--no-notebooks]

The synthetic class cycles through three kinds of submission (the instructor's solutions,
the untouched stubs, and the solutions with every second notebook replaced by its stub), so
that it holds fast failures as well as full runs. Every exercise of the manifest is graded,
with the notebook check unless ``--no-notebooks``. Prints the wall time, the time per
student, and the extrapolation to 100 students with the same number of workers (the cost is
linear in the number of students: each is graded on its own; similarity is quadratic but
takes milliseconds per pair).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from cnn_course.grading import classroom  # noqa: E402
from cnn_course.grading.manifest import DEFAULT_MANIFEST  # noqa: E402

EXERCISES = DEFAULT_MANIFEST.parent
SOLUTIONS = EXERCISES / "solutions"


def make_class(roster: Path, count: int) -> None:
    names = sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))
    for i in range(count):
        folder = roster / f"student{i:03d}"
        folder.mkdir(parents=True)
        kind = i % 3
        for j, name in enumerate(names):
            stub = kind == 1 or (kind == 2 and j % 2) or not (EXERCISES / name).exists()
            source = EXERCISES / name if stub and (EXERCISES / name).exists() else SOLUTIONS / name
            shutil.copyfile(source, folder / name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--students", type=int, default=6)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--no-notebooks", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-grade-class-") as tmp:
        roster = Path(tmp) / "roster"
        make_class(roster, args.students)
        command = [str(roster), "--out", str(Path(tmp) / "out"), "--jobs", str(args.jobs),
                   "--seed", "1", "--force"]  # fmt: skip
        command += ["--no-notebooks"] if args.no_notebooks else []
        start = time.perf_counter()
        status = classroom.main(command)
        seconds = time.perf_counter() - start
    per_student = seconds / args.students
    print(
        f"{args.students} students, {args.jobs} workers, notebook check "
        f"{'off' if args.no_notebooks else 'on'}: {seconds:.1f} s wall, "
        f"{per_student:.2f} s per student (wall / students); "
        f"100 students with {args.jobs} workers: about {100 * per_student / 60:.1f} min"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
