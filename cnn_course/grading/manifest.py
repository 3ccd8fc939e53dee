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

Assignments group exercises so that a course can hand them out and grade them in parts::

    [[assignment]]
    name = "week1"                      # used as --assignment week1
    exercises = ["conv2d", "conv_output_size", "im2col"]

An exercise may belong to several assignments, or to none.

Variants: an exercise may declare two or more ``[[exercise.variant]]`` tables (after its
own keys), so that students with different ids get different specifications (see
:mod:`.variants` for the drawing and the per-student notebooks)::

    [[exercise.variant]]
    name = "nchw"                       # the first variant is the exercise as written above:
    summary = "x (N, C, H, W)"          # it takes no other key
    [[exercise.variant]]
    name = "nhwc"
    summary = "x (N, H, W, C), weight (kh, kw, C_in, C_out)"
    reference = "cnn_course.grading.adapters.conv2d_nhwc"  # the library, adapted
    generator = "conv2d_nhwc"           # optional: the cases (default: the exercise's)
    wording = '''Markdown that replaces the exercise's text in the student notebook'''
    stub = '''
    def conv2d(x, weight, bias=None, stride=1, padding=0):
        "The docstring the student sees (its body becomes raise NotImplementedError)."
    '''
    check_args = "(np.arange(18.0).reshape(1, 3, 3, 2), np.ones((2, 2, 2, 1)))"
    check_kwargs = "{'stride': 1}"       # optional; both are evaluated with numpy as np

The self-check of a variant's notebook calls the function on ``check_args`` and compares with
the variant's reference computed on them when the notebook is generated.

A ``[variants]`` table may set ``key``, the course key of the drawing (an instructor sets
their own, or the ``CNN_COURSE_KEY`` environment variable, or ``--course-key``).
"""

from __future__ import annotations

import ast
import re
import textwrap
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_MANIFEST = REPOSITORY / "exercises" / "manifest.toml"
DEFAULT_TOLERANCE = {"float64": (1e-7, 1e-9), "float32": (1e-4, 1e-5)}


@dataclass(frozen=True)
class Variant:
    """One variant of an exercise (an ``[[exercise.variant]]`` table); empty fields mean "as
    the exercise"."""

    name: str
    summary: str = ""
    reference: str | None = None
    generator: str | None = None
    wording: str = ""
    stub: str = ""
    check_args: str = ""
    check_kwargs: str = ""


VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
VARIANT_KEYS = ("name", "summary", "reference", "generator", "wording", "stub", "check_args",
                "check_kwargs")  # fmt: skip


def _variants(table: dict) -> tuple[Variant, ...]:
    """The variants of an exercise table, checked (see the module docstring)."""
    tables = table.get("variant", [])
    where = f"manifest: exercise {table['id']}"
    if not tables:
        return ()
    if not isinstance(tables, list) or len(tables) < 2:
        raise ValueError(f"{where}: declare at least two [[exercise.variant]] tables, or none")
    out = []
    for i, t in enumerate(tables):
        unknown = sorted(set(t) - set(VARIANT_KEYS))
        name = t.get("name")
        if unknown:
            raise ValueError(f"{where}: variant {name!r} has unknown keys {unknown}")
        if not isinstance(name, str) or not VARIANT_NAME.match(name):
            raise ValueError(f"{where}: variant name {name!r} must match {VARIANT_NAME.pattern}")
        if i == 0 and set(t) - {"name", "summary"}:
            raise ValueError(
                f"{where}: the first variant ({name}) is the exercise as written: "
                "give it only a name and a summary"
            )
        t = dict(t, stub=textwrap.dedent(t.get("stub", "")).strip("\n"))
        t = dict(t, wording=textwrap.dedent(t.get("wording", "")).strip("\n"))
        if i == 0:
            t = {k: v for k, v in t.items() if v}
        if i > 0:
            missing = [k for k in ("reference", "wording", "stub", "check_args") if not t.get(k)]
            if missing:
                raise ValueError(f"{where}: variant {name} lacks {missing}")
            try:
                tree = ast.parse(t["stub"])
            except SyntaxError as exc:
                message = f"{where}: variant {name}: its stub does not parse: {exc}"
                raise ValueError(message) from None
            defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
            if defined != [table["functions"][0]]:
                raise ValueError(
                    f"{where}: variant {name}: the stub must define {table['functions'][0]} only"
                )
        out.append(Variant(**{k: t[k] for k in VARIANT_KEYS if k in t}))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: variant names must be unique")
    return tuple(out)


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
    variants: tuple[Variant, ...] = ()
    variant: str | None = None  # the variant this copy grades (None: the exercise as written)

    @property
    def variant_names(self) -> list[str]:
        """The names of the exercise's variants, the default first (empty: no variants)."""
        return [v.name for v in self.variants]

    @property
    def default_variant(self) -> str | None:
        return self.variants[0].name if self.variants else None

    def get_variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(self.variant_names) or "none"
        raise ValueError(f"exercise {self.id} has no variant {name!r} (its variants: {known})")

    def with_variant(self, name: str | None) -> Exercise:
        """This exercise as variant ``name`` grades it: the variant's reference and cases."""
        if name is None:
            return self
        v = self.get_variant(name)
        return replace(
            self,
            reference=v.reference or self.reference,
            generator=v.generator or self.generator,
            variant=name,
        )

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
        variants=_variants(table),
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


def load_assignments(path: Path = DEFAULT_MANIFEST) -> dict[str, list[str]]:
    """The assignments of the manifest at ``path``: name -> exercise ids (in manifest order).

    Raises ValueError for an assignment without a name or exercises, a repeated name, or an
    exercise id the manifest does not define."""
    data = tomllib.loads(Path(path).read_text())
    known = [t.get("id") for t in data.get("exercise", [])]
    assignments: dict[str, list[str]] = {}
    for table in data.get("assignment", []):
        name = table.get("name")
        ids = table.get("exercises")
        if not isinstance(name, str) or not name or not isinstance(ids, list) or not ids:
            raise ValueError(f"manifest: assignment {name!r} needs a name and a list of exercises")
        if name in assignments:
            raise ValueError(f"manifest: assignment {name!r} is defined twice")
        unknown = sorted(set(ids) - set(known))
        if unknown:
            raise ValueError(f"manifest: assignment {name!r} names unknown exercise(s) {unknown}")
        assignments[name] = [i for i in known if i in ids]
    return assignments


def assignment_exercises(name: str, path: Path = DEFAULT_MANIFEST) -> list[str]:
    """The exercise ids of assignment ``name``; ValueError naming the known ones otherwise."""
    assignments = load_assignments(path)
    if name not in assignments:
        known = ", ".join(assignments) or "none"
        raise ValueError(f"unknown assignment {name!r} (the manifest defines: {known})")
    return assignments[name]
