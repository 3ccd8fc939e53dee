"""Exercise variants: the specification differs per student, drawn from the student id.

An exercise of the manifest may declare variants (``[[exercise.variant]]`` tables, see
:mod:`.manifest`): ``conv2d`` on channels-last arrays or with reflection padding, ``nms`` on
boxes given by centre and size... The first variant is the exercise as written, the one
self-study uses. A student's variant of an exercise is drawn with a keyed hash::

    index = HMAC-SHA256(course key, "<exercise id>\\x00<student id>") mod (number of variants)

so the same student always gets the same variant of an exercise, whatever assignment or
subset of exercises is graded, and the instructor can list who got what
(``cnn-course variants``). The course key is, in this order: ``--course-key``, the
``CNN_COURSE_KEY`` environment variable, ``key`` in the manifest's ``[variants]`` table, or
the public default :data:`PUBLIC_KEY`. With the public key anyone can work out anyone's
variant, which is harmless (a variant is not a secret: it is a specification that the
library's code and a classmate's answer do not meet); a private key only stops students from
knowing the others' variants in advance.

The grader never trusts a notebook's metadata: it recomputes each variant from the student id
it is given (``cnn-course grade --student ID``; ``grade-class`` uses each folder's name), or
takes the variants an instructor names explicitly (``--variant ID=NAME``, which the student's
own ``make grade`` uses for feedback). The reference of a variant is an adapter over the
library (:mod:`.adapters`), never a copy of it.

:func:`variant_notebook` writes a student's notebook: for each exercise whose variant is not
the default, the exercise's text, the stub (signature and docstring) and the self-check are
replaced, the self-check's expected value computed by the variant's reference when the
notebook is generated. Exercises on their default variant keep today's cells.

    cnn-course variants ROSTER_OR_ID... [--assignment NAME] [--course-key KEY] [--out FILE]

prints (or writes) ``student,<exercise id>...`` with each student's variant of each varied
exercise; ROSTER_OR_ID is a student id, a roster folder (its subfolders are the ids), or a
text file with one id per line (a CSV's first column; a ``student`` header is skipped).
"""

from __future__ import annotations

import argparse
import ast
import copy
import csv
import hashlib
import hmac
import io
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from cnn_course.backend import np
from cnn_course.grading.manifest import DEFAULT_MANIFEST, Exercise, load_manifest

PUBLIC_KEY = "cnn-course public variants"  # the documented default: self-study, open courses
KEY_VARIABLE = "CNN_COURSE_KEY"
METADATA = "cnn_course"  # the notebook metadata entry naming the student and the variants


# ---- the course key and the drawing -------------------------------------------------------
def course_key(explicit: str | None = None, manifest: Path = DEFAULT_MANIFEST) -> str:
    """The course key: ``explicit``, else ``$CNN_COURSE_KEY``, else the manifest's
    ``[variants] key``, else :data:`PUBLIC_KEY`."""
    if explicit:
        return explicit
    if os.environ.get(KEY_VARIABLE):
        return os.environ[KEY_VARIABLE]
    try:
        table = tomllib.loads(Path(manifest).read_text()).get("variants", {})
    except (OSError, tomllib.TOMLDecodeError):
        table = {}
    key = table.get("key") if isinstance(table, dict) else None
    return key if isinstance(key, str) and key else PUBLIC_KEY


def key_fingerprint(key: str) -> str:
    """A short public fingerprint of the key (recorded in reports; the key is not)."""
    return hashlib.sha256(("fingerprint\x00" + key).encode()).hexdigest()[:12]


def draw(student: str, exercise: Exercise, key: str) -> str | None:
    """The variant of ``exercise`` that ``student`` gets (None if it has no variants)."""
    if not exercise.variants:
        return None
    message = f"{exercise.id}\x00{student}".encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return exercise.variants[int.from_bytes(digest, "big") % len(exercise.variants)].name


def student_variants(student: str | None, exercises: list[Exercise], key: str) -> dict[str, str]:
    """``{exercise id: variant}`` for every exercise with variants; the default variants when
    ``student`` is None (self-study)."""
    chosen = {}
    for e in exercises:
        if e.variants:
            chosen[e.id] = e.default_variant if student is None else draw(student, e, key)
    return chosen


def parse_explicit(items: list[str] | None, exercises: list[Exercise]) -> dict[str, str]:
    """``["conv2d=nhwc", ...]`` -> ``{"conv2d": "nhwc"}``, checked against the manifest."""
    by_id = {e.id: e for e in exercises}
    chosen: dict[str, str] = {}
    for item in items or []:
        exercise, sep, name = item.partition("=")
        if not sep or exercise not in by_id:
            raise ValueError(f"--variant {item!r}: expected EXERCISE=VARIANT with a known exercise")
        by_id[exercise].get_variant(name)  # ValueError naming the known variants
        chosen[exercise] = name
    return chosen


def resolve(
    exercises: list[Exercise],
    *,
    student: str | None = None,
    explicit: dict[str, str] | None = None,
    key: str | None = None,
    manifest: Path = DEFAULT_MANIFEST,
    draw_variants: bool = True,
) -> dict[str, str]:
    """The variant of each varied exercise for a grading: drawn from ``student`` (when given
    and ``draw_variants``), else the defaults; ``explicit`` overrides either."""
    who = student if draw_variants else None
    chosen = student_variants(who, exercises, course_key(key, manifest))
    known = {e.id for e in exercises}
    chosen.update({k: v for k, v in (explicit or {}).items() if k in known})
    return chosen


def apply(exercises: list[Exercise], chosen: dict[str, str] | None) -> list[Exercise]:
    """The exercises as their chosen variants grade them (reference and cases)."""
    chosen = chosen or {}
    return [e.with_variant(chosen.get(e.id)) for e in exercises]


# ---- per-student notebooks ----------------------------------------------------------------
def literal(value: Any) -> str:
    """Python source for ``value`` (an array, a number, a tuple of them) as a self-check cell
    writes it: floats to 6 significant digits, arrays with their dtype."""
    if isinstance(value, np.ndarray):
        items = _round(value.tolist()) if value.dtype.kind == "f" else value.tolist()
        name = {"b": "bool_"}.get(value.dtype.kind, str(value.dtype))
        return f"np.array({items!r}, dtype=np.{name})"
    if isinstance(value, tuple | list):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, bool | np.bool_):
        return repr(bool(value))
    if isinstance(value, int | np.integer):
        return repr(int(value))
    if isinstance(value, float | np.floating):
        return repr(_round(float(value)))
    return repr(value)


def _round(value: Any) -> Any:
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}") + 0.0  # no -0.0
    return value


def self_check_source(exercise: Exercise, variant_name: str) -> str:
    """The self-check cell of ``variant_name``: its call, and the expected value computed now
    by the variant's reference."""
    from cnn_course.grading.execute import resolve as resolve_reference

    v = exercise.get_variant(variant_name)
    scope = {"np": np, "__builtins__": {}}
    args = eval(v.check_args, scope)  # the manifest is the instructor's, trusted
    kwargs = eval(v.check_kwargs, scope) if v.check_kwargs else {}
    reference = resolve_reference(exercise.with_variant(variant_name).reference)
    expected = reference(*copy.deepcopy(args), **copy.deepcopy(kwargs))
    extra = "".join(f", {k}={literal(val)}" for k, val in kwargs.items())
    return (
        f"# Self-check (variant {variant_name}): a small case you can verify by hand.\n"
        "check(\n"
        f'    "{exercise.function}",\n'
        f"    {exercise.function},\n"
        f"    {literal(tuple(args))},\n"
        f"    expected={literal(expected)}{extra},\n"
        ")"
    )


def signature(code: str, function: str) -> tuple[str, str] | None:
    """``("name(arguments)", docstring)`` of ``function`` as defined in ``code`` (None if it
    is not defined there)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return f"{function}({ast.unparse(node.args)})", ast.get_docstring(node) or ""
    return None


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _defines(cell: dict, function: str) -> bool:
    try:
        tree = ast.parse(_source(cell))
    except SyntaxError:
        return False
    return any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def variant_notebook(
    nb: dict, exercises: list[Exercise], chosen: dict[str, str], student: str | None
) -> dict:
    """``nb`` (a student notebook, stubs only) for ``chosen`` variants (a new dict).

    For each exercise of ``exercises`` whose chosen variant is not its default, the markdown
    cell before the ``solution`` cell defining its function takes the variant's wording, that
    cell the variant's stub, and the self-check cell after it the variant's self-check. The
    notebook's metadata records the student and the variants (for the student's eyes: the
    grader does not read it)."""
    from cnn_course.grading import notebooks

    nb = copy.deepcopy(nb)
    cells = nb["cells"]
    for e in exercises:
        name = chosen.get(e.id)
        if not e.variants or name is None or name == e.default_variant:
            continue
        v = e.get_variant(name)
        at = [
            i
            for i, c in enumerate(cells)
            if c.get("cell_type") == "code"
            and notebooks.SOLUTION_TAG in c.get("metadata", {}).get("tags", [])
            and _defines(c, e.function)
        ]
        if len(at) != 1:
            raise ValueError(f"{e.notebook}: no single solution cell defines {e.function}")
        i = at[0]
        imports = "import numpy as np\n\n\n"
        cells[i]["source"] = _lines((imports + notebooks.stub_source(v.stub)).rstrip("\n"))
        if i > 0 and cells[i - 1].get("cell_type") == "markdown":
            cells[i - 1]["source"] = _lines(v.wording.rstrip("\n"))
        after = cells[i + 1] if i + 1 < len(cells) else None
        if after is not None and after.get("cell_type") == "code" and "check(" in _source(after):
            after["source"] = _lines(self_check_source(e, name))
            after["outputs"], after["execution_count"] = [], None
    ids = {e.id for e in exercises}
    mine = {k: v for k, v in sorted(chosen.items()) if k in ids}
    if student is not None or any(mine[e.id] != e.default_variant for e in exercises
                                  if e.id in mine):  # fmt: skip
        nb.setdefault("metadata", {})[METADATA] = {"student": student, "variants": mine}
    return nb


def write_student_notebooks(
    source_dir: Path,
    out_dir: Path,
    names: list[str],
    exercises: list[Exercise],
    chosen: dict[str, str],
    student: str | None,
) -> list[Path]:
    """Write each notebook of ``names`` (from ``source_dir``, the stubs) for ``chosen``."""
    from cnn_course.grading import notebooks

    written = []
    for name in names:
        nb = notebooks.read_notebook(source_dir / name)
        mine = [e for e in exercises if e.notebook == name]
        target = out_dir / name
        if student is None and not any(chosen.get(e.id, e.default_variant) != e.default_variant
                                       for e in mine):  # fmt: skip
            target.write_bytes((source_dir / name).read_bytes())  # self-study: today's file
        else:
            nb = variant_notebook(nb, mine, chosen, student)
            target.write_text(notebooks.dumps(nb), encoding="utf-8")
        written.append(target)
    return written


# ---- listing who got what -------------------------------------------------------------------
def read_ids(items: list[str]) -> list[str]:
    """Student ids from ids, roster folders (their subfolders) and id files."""
    from cnn_course.grading.classroom import STUDENT_ID

    ids: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            ids += [p.name for p in sorted(path.iterdir()) if p.is_dir() and p.name[0] != "."]
        elif path.is_file():
            for row in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))):
                value = row[0].strip() if row else ""
                if value and not value.startswith("#") and value.lower() != "student":
                    ids.append(value)
        else:
            ids.append(item)
    bad = [i for i in ids if not STUDENT_ID.match(i)]
    if bad:
        raise ValueError(f"not a student id (letters, digits and ._@+- only): {bad[:5]}")
    return list(dict.fromkeys(ids))


def table(ids: list[str], exercises: list[Exercise], key: str) -> list[list[str]]:
    """``[header, row...]``: each student's variant of each varied exercise."""
    varied = [e for e in exercises if e.variants]
    rows = [["student", *[e.id for e in varied]]]
    for s in sorted(ids):
        rows.append([s, *[draw(s, e, key) or "" for e in varied]])
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnn-course variants", description="list each student's variant of each exercise"
    )
    p.add_argument("students", nargs="+", help="student ids, roster folders or id files")
    p.add_argument("--assignment", help="only the exercises of this assignment")
    p.add_argument("--course-key", help=f"the course key (default: ${KEY_VARIABLE}, the "
                   "manifest's [variants] key, or the public key)")  # fmt: skip
    p.add_argument("--out", type=Path, help="write the CSV here (default: standard output)")
    p.add_argument("--json", action="store_true", help="JSON instead of CSV")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    from cnn_course.grading.submission import select_ids

    args = parser().parse_args(argv)
    try:
        ids = read_ids(args.students)
        chosen = select_ids(args.manifest, None, args.assignment)
    except ValueError as exc:
        print(f"cnn-course variants: {exc}", file=sys.stderr)
        return 2
    exercises = [e for e in load_manifest(args.manifest) if not chosen or e.id in chosen]
    rows = table(ids, exercises, course_key(args.course_key, args.manifest))
    if args.json:
        text = json.dumps({r[0]: dict(zip(rows[0][1:], r[1:], strict=True)) for r in rows[1:]},
                          indent=2) + "\n"  # fmt: skip
    else:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        text = buffer.getvalue()
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
