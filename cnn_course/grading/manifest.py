"""The exercise manifest (``exercises/manifest.toml``): what is graded, and how.

One ``[[exercise]]`` table per exercise::

    [[exercise]]
    id = "conv2d"                       # stable name, used on the command line and in reports
    notebook = "01_conv2d.ipynb"        # relative to the submission directory
    functions = ["conv2d"]              # names the student defines; the first is graded
    points = 10                         # split evenly over the cases
    cases = 5                           # how many cases (drawn from the grading seed)
    reference = "cnn_course.functional.conv2d"
    generator = "conv2d"                # the case generator in cnn_course.grading.cases
    banned_calls = ["convolve"]         # routines the exercise may not call
    tolerance = { float64 = [1e-7, 1e-9], float32 = [1e-4, 1e-5] }  # (rtol, atol)

A ``[defaults]`` table gives ``timeout`` (seconds per case) and ``memory_mb`` (address
space of the child), which an exercise may override.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPOSITORY / "exercises" / "manifest.toml"
DEFAULT_TOLERANCE = {"float64": (1e-7, 1e-9), "float32": (1e-4, 1e-5)}


@dataclass(frozen=True)
class Exercise:
    """One graded exercise (a table of the manifest)."""

    id: str
    notebook: str
    functions: tuple[str, ...]
    points: int
    cases: int
    reference: str
    generator: str
    banned_calls: frozenset[str] = frozenset()
    tolerance: dict = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    timeout: float = 3.0
    memory_mb: int = 512

    @property
    def function(self) -> str:
        """The graded function (the first of ``functions``)."""
        return self.functions[0]

    @property
    def points_per_case(self) -> float:
        return self.points / self.cases


REQUIRED = ("id", "notebook", "functions", "points", "cases", "reference", "generator")


def _exercise(table: dict, defaults: dict) -> Exercise:
    missing = [k for k in REQUIRED if k not in table]
    if missing:
        raise ValueError(f"manifest: exercise {table.get('id', '?')} lacks {missing}")
    if table["points"] % table["cases"]:
        raise ValueError(f"manifest: {table['id']}: points must split evenly over the cases")
    tolerance = dict(DEFAULT_TOLERANCE)
    tolerance.update({k: tuple(v) for k, v in table.get("tolerance", {}).items()})
    return Exercise(
        id=table["id"],
        notebook=table["notebook"],
        functions=tuple(table["functions"]),
        points=int(table["points"]),
        cases=int(table["cases"]),
        reference=table["reference"],
        generator=table["generator"],
        banned_calls=frozenset(table.get("banned_calls", ())),
        tolerance=tolerance,
        timeout=float(table.get("timeout", defaults.get("timeout", 3.0))),
        memory_mb=int(table.get("memory_mb", defaults.get("memory_mb", 512))),
    )


def load_manifest(path: Path = DEFAULT_MANIFEST) -> list[Exercise]:
    """The exercises of the manifest at ``path``, in file order."""
    data = tomllib.loads(Path(path).read_text())
    defaults = data.get("defaults", {})
    exercises = [_exercise(t, defaults) for t in data.get("exercise", [])]
    ids = [e.id for e in exercises]
    if len(set(ids)) != len(ids):
        raise ValueError("manifest: exercise ids must be unique")
    return exercises


def notebook_names(exercises: list[Exercise]) -> list[str]:
    """The allowlist: the notebook files the exercises live in, in manifest order."""
    return list(dict.fromkeys(e.notebook for e in exercises))
