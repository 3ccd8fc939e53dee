"""The grading report: JSON for machines, a Markdown table for people.

JSON layout::

    {"total": 38.0, "max_total": 40, "seed": 1234, "seconds": 12.3,
     "exercises": [{"id": "conv2d", "notebook": "01_conv2d.ipynb", "points": 8.0,
                    "max_points": 10, "cases": [{"case": 0, "passed": true, "points": 2.0,
                    "max_points": 2.0, "check": null, "message": ""}, ...]}, ...],
     "notebooks": {"01_conv2d.ipynb": {"runs": true, "message": "ran 6 cells"}}}

``runs`` is null (and the message says why) where the notebooks could not be checked: the
notebook runner (nbval, ipykernel) is not installed. ``check`` names the first check a
failed case did not pass. Messages give shapes, dtypes and counts, never the expected
values.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from cnn_course.grading.manifest import Exercise


def build_report(exercises: list[Exercise], results: list[dict], runs: dict, seed: int) -> dict:
    """Assemble the report from the suite's records (cases missing from them score 0)."""
    by_case = {(r["exercise"], r["case"]): r for r in results}
    rows = []
    for e in exercises:
        cases = []
        for i in range(e.cases):
            r = by_case.get(
                (e.id, i), {"passed": False, "check": "crashed", "message": "no record"}
            )
            cases.append(
                {
                    "case": i,
                    "passed": bool(r["passed"]),
                    "points": e.points_per_case if r["passed"] else 0.0,
                    "max_points": e.points_per_case,
                    "check": r["check"],
                    "message": r["message"],
                }
            )
        points = sum(c["points"] for c in cases)
        rows.append(
            {
                "id": e.id,
                "notebook": e.notebook,
                "function": e.function,
                "points": points,
                "max_points": e.points,
                "cases": cases,
            }
        )
    return {
        "total": sum(r["points"] for r in rows),
        "max_total": sum(e.points for e in exercises),
        "seed": seed,
        "exercises": rows,
        "notebooks": runs,
    }


def _first_failure(row: dict) -> str:
    failed = [c for c in row["cases"] if not c["passed"]]
    if not failed:
        return ""
    checks = sorted({c["check"] for c in failed})
    return f"{len(failed)} failed ({', '.join(checks)}): {failed[0]['message'][:160]}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _verdict(run: dict) -> str:
    """A notebook's row: yes, or no / not checked (``runs`` null) with the reason."""
    if run["runs"]:
        return "yes"
    verdict = "not checked" if run["runs"] is None else "no"
    return f"{verdict}: {_cell(run['message'][:160])}"


def markdown(report: dict) -> str:
    """A Markdown score table (for a terminal, a pull request or a CI job summary)."""
    lines = [
        f"## Exercise score: {report['total']:g} / {report['max_total']:g}",
        "",
        "| exercise | notebook | points | notes |",
        "|---|---|---:|---|",
    ]
    for row in report["exercises"]:
        lines.append(
            f"| `{row['id']}` | {row['notebook']} | {row['points']:g} / {row['max_points']:g} "
            f"| {_cell(_first_failure(row))} |"
        )
    if report["notebooks"]:
        lines += ["", "| notebook | runs top to bottom |", "|---|---|"]
        for name, run in report["notebooks"].items():
            lines.append(f"| {name} | {_verdict(run)} |")
    lines += ["", f"Cases drawn from seed {report['seed']}; graded in {report['seconds']} s."]
    return "\n".join(lines) + "\n"


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a new file and rename it over ``path``: whatever was at ``path``
    (a file or a link planted there) is replaced, never written through."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write(report: dict, json_path: Path | None, markdown_path: Path | None) -> None:
    """Write the report files (after every process of the submission is gone)."""
    if json_path is not None:
        _replace(json_path, json.dumps(report, indent=2) + "\n")
    if markdown_path is not None:
        _replace(markdown_path, markdown(report))
