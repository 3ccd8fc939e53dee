"""The grading report: JSON for machines, a Markdown table for people.

JSON layout::

    {"total": 38.0, "max_total": 40, "seed": 1234, "seconds": 12.3,
     "exercises": [{"id": "conv2d", "notebook": "01_conv2d.ipynb", "points": 8.0,
                    "max_points": 10, "cases": [{"case": 0, "passed": true, "points": 2.0,
                    "max_points": 2.0, "check": null, "message": ""}, ...]}, ...],
     "notebooks": {"01_conv2d.ipynb": {"runs": true, "message": "ran 6 cells"}}}

``isolation`` says whether student code ran in the sandbox: ``{"isolated": false,
"message": "not isolated: feedback only (...)"}`` where bubblewrap was missing or could not
start; such a report is feedback, not a grade. ``check`` names the first check a failed case
did not pass. Messages give shapes, dtypes and counts, never the expected values.

Everything a student controls (error messages, type names, notebook output) is escaped: in
the JSON, ``&``, ``<`` and ``>`` become HTML entities and control characters are dropped; the
Markdown table also backslash-escapes Markdown's inline punctuation, so neither can carry
markup. (Exercise ids and notebook names come from the manifest, not from the student.)
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from pathlib import Path

from cnn_course.grading.manifest import Exercise

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Markdown's inline punctuation (a table cell holds inline text only: no headings or lists).
MARKDOWN = re.compile(r"([\\`*_{}\[\]|~$])")


def clean(text: object) -> str:
    """Text a student controls, made inert for HTML: no markup, no control characters."""
    return html.escape(CONTROL.sub("", str(text)), quote=False)


def build_report(
    exercises: list[Exercise],
    results: list[dict],
    runs: dict,
    seed: int,
    isolation: dict | None = None,
) -> dict:
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
                    "check": clean(r["check"]) if r["check"] is not None else None,
                    "message": clean(r["message"]),
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
    runs = {
        name: {"runs": run["runs"], "message": clean(run["message"])} for name, run in runs.items()
    }
    if isolation is None:
        isolation = {"isolated": False, "message": "not isolated: feedback only"}
    return {
        "total": sum(r["points"] for r in rows),
        "max_total": sum(e.points for e in exercises),
        "seed": seed,
        "isolation": {"isolated": bool(isolation["isolated"]),
                      "message": clean(isolation["message"])},
        "exercises": rows,
        "notebooks": runs,
    }  # fmt: skip


def _first_failure(row: dict) -> str:
    failed = [c for c in row["cases"] if not c["passed"]]
    if not failed:
        return ""
    checks = sorted({c["check"] for c in failed})
    return f"{len(failed)} failed ({', '.join(checks)}): {failed[0]['message'][:160]}"


def _cell(text: str) -> str:
    """Text for a table cell: one line, HTML-escaped, Markdown's punctuation escaped (the
    report's text is escaped for HTML already; escaping again is harmless)."""
    text = clean(html.unescape(text)).replace("\n", " ").replace("\r", " ")
    return MARKDOWN.sub(r"\\\1", text)


def _verdict(run: dict) -> str:
    """A notebook's row: yes, or no with the reason."""
    if run["runs"]:
        return "yes"
    verdict = "not checked" if run["runs"] is None else "no"
    return f"{verdict}: {_cell(run['message'][:160])}"


def markdown(report: dict) -> str:
    """A Markdown score table (for a terminal, a pull request or a CI job summary)."""
    lines = [f"## Exercise score: {report['total']:g} / {report['max_total']:g}", ""]
    isolation = report.get("isolation", {})
    if not isolation.get("isolated"):
        lines += [f"**{_cell(isolation.get('message', 'not isolated: feedback only'))}**", ""]
    lines += [
        "| exercise | notebook | points | notes |",
        "|---|---|---:|---|",
    ]
    for row in report["exercises"]:
        lines.append(
            f"| `{row['id']}` | {row['notebook']} "
            f"| {row['points']:g} / {row['max_points']:g} "
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
