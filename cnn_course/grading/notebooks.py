"""Exercise notebooks: extract the graded cells, and make student notebooks from solutions.

A notebook is read as plain JSON (nbformat 4): a submission is data, never executed here.
The graded code is the concatenation of the code cells tagged ``solution``. A student
notebook is its solution notebook with every function in a ``solution`` cell reduced to its
signature, its docstring and ``raise NotImplementedError``, and with outputs cleared.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

SOLUTION_TAG = "solution"
STUB = 'raise NotImplementedError("write your solution here")'
MAX_NOTEBOOK_BYTES = 16 * 2**20


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: dict) -> list:
    tags = cell.get("metadata", {}).get("tags", [])
    return tags if isinstance(tags, list) else []


def read_notebook(path: Path) -> dict:
    """The notebook's JSON, refusing anything that is not a reasonable regular file holding a
    well-formed notebook (every cell a table with a text source and a metadata table)."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"{path.name}: not a regular notebook file of a reasonable size")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # nesting deep enough to exhaust the JSON decoder's stack
        raise ValueError(f"{path.name}: not a notebook (nested too deeply)") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path.name}: not a notebook (no cells)")
    for i, cell in enumerate(nb["cells"]):
        if not _well_formed(cell):
            raise ValueError(f"{path.name}: cell {i} is not a well-formed notebook cell")
    try:  # JSON escapes can spell lone surrogates, which no UTF-8 file can hold
        dumps(nb).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{path.name}: not valid Unicode text") from None
    return nb


def _well_formed(cell: object) -> bool:
    if not isinstance(cell, dict) or not isinstance(cell.get("metadata", {}), dict):
        return False
    src = cell.get("source", "")
    return isinstance(src, str) or (isinstance(src, list) and all(isinstance(s, str) for s in src))


def solution_code(nb: dict) -> str:
    """The code of the ``solution`` cells, in order, one cell after the other."""
    cells = [
        _source(c)
        for c in nb["cells"]
        if isinstance(c, dict) and c.get("cell_type") == "code" and SOLUTION_TAG in _tags(c)
    ]
    return "\n\n".join(cells) + "\n"


def code_cells(nb: dict) -> list[str]:
    """The source of every code cell, in order (what a top-to-bottom run executes)."""
    return [_source(c) for c in nb["cells"] if isinstance(c, dict) and c.get("cell_type") == "code"]


def without_test_markers(nb: dict) -> dict:
    """``nb`` without the tags and comments that tell nbval to skip a cell or to accept its
    exception (a new dict): in a submission they would hide a cell that does not run."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        tags = _tags(cell)
        if tags:
            cell["metadata"]["tags"] = [t for t in tags if not _is_marker_tag(t)]
        lines = _source(cell).splitlines(keepends=True)
        cell["source"] = ["#\n" if _is_marker_comment(line) else line for line in lines]
    return nb


def _is_marker_tag(tag: object) -> bool:
    return isinstance(tag, str) and (tag.startswith("nbval-") or tag == "raises-exception")


def _is_marker_comment(line: str) -> bool:
    line = line.strip()
    return line.startswith("#") and line.lstrip("#").strip().startswith(("NBVAL_", "PYTEST_"))


def stub_source(source: str) -> str:
    """``source`` with each top-level function body replaced by ``raise NotImplementedError``.

    Imports are kept; other top-level statements (helpers' bodies, constants) are the
    student's to write and are dropped."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append("\n".join(lines[node.lineno - 1 : node.end_lineno]))
        elif isinstance(node, ast.FunctionDef):
            out.append(_stub_function(node, lines))
    return "\n\n\n".join(out) + "\n"


def _stub_function(node: ast.FunctionDef, lines: list[str]) -> str:
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    body = node.body
    has_doc = (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )
    keep_until = body[0].end_lineno if has_doc else body[0].lineno - 1
    indent = " " * body[0].col_offset
    return "\n".join(lines[first - 1 : keep_until] + [indent + STUB])


def student_notebook(solution: dict) -> dict:
    """The student version of a solution notebook (a new dict; ``solution`` is unchanged)."""
    nb = json.loads(json.dumps(solution))
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        cell["outputs"] = []
        cell["execution_count"] = None
        if SOLUTION_TAG in _tags(cell):
            cell["source"] = _split_lines(stub_source(_source(cell)).rstrip("\n"))
    return nb


def _split_lines(text: str) -> list[str]:
    """Jupyter's on-disk form of a cell source: lines that keep their newline."""
    return text.splitlines(keepends=True)


def dumps(nb: dict) -> str:
    """Serialise a notebook the way Jupyter does (indent 1, sorted keys, trailing newline)."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def make_student_notebooks(solutions_dir: Path, out_dir: Path, names: list[str]) -> list[Path]:
    """Write the student version of each solution notebook in ``names`` into ``out_dir``."""
    written = []
    for name in names:
        nb = student_notebook(read_notebook(solutions_dir / name))
        target = out_dir / name
        target.write_text(dumps(nb), encoding="utf-8")
        written.append(target)
    return written
