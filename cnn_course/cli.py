"""The ``cnn-course`` command: ``info``, ``grade``, ``bench``, ``train``.

Each subcommand lives in its own module and is imported only when used, so ``cnn-course
info`` stays fast and needs none of the heavier dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys

from cnn_course import __version__

# subcommand -> (module with a ``main(argv) -> int``, one-line help)
SUBCOMMANDS = {
    "grade": ("cnn_course.grading.cli", "grade exercise submissions (JSON and Markdown report)"),
    "grade-class": (
        "cnn_course.grading.classroom",
        "grade a class: gradebook, reports, similarity",
    ),
    "classroom-template": ("cnn_course.grading.template", "write the student starter repository"),
    "variants": ("cnn_course.grading.variants", "list each student's exercise variants"),
    "bench": ("cnn_course.bench", "time the operations against GEMM, PyTorch and naive loops"),
    "train": ("cnn_course.training", "train a model from the zoo on real handwritten digits"),
}


def info() -> int:
    """Print the version, Python, and which backends work here."""
    from cnn_course.backend import cupy_problem, get_backend, np

    print(f"cnn-course {__version__}")
    print(f"python     {platform.python_version()} ({platform.machine()})")
    print(f"numpy      {np.__version__}")
    problem = cupy_problem()
    print(f"cupy       {'available' if problem is None else 'unavailable: ' + problem}")
    print(f"backend    {get_backend()} (set CNN_COURSE_BACKEND to change)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="cnn-course",
        description="CNN interview questions answered with tested code.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n  info               which backends work on this machine\n"
        + "".join(f"  {name:<18} {text}\n" for name, (_, text) in SUBCOMMANDS.items())
        + "\nRun 'cnn-course COMMAND --help' for a command's options.",
    )
    parser.add_argument("command", choices=["info", *SUBCOMMANDS], help="what to do")
    parser.add_argument("--version", action="version", version=f"cnn-course {__version__}")
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv or ["--help"])
    args, rest = parser.parse_known_args(argv[:1])
    if args.command == "info":
        return info()
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
