"""The repository's own contracts: workflows call the README's commands, the book's generated
appendices are current, every question label names a real question."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _workflow(name: str) -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def _run_steps(workflow: dict) -> list[str]:
    return [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]


def test_ci_entry_point_calls_make_test():
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def test_tests_workflow_runs_make_test_with_ci_set():
    workflow = _workflow("tests.yml")
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    make = [s for s in steps if s.get("run") == "make test"]
    assert make and make[0]["env"]["CI"] == "true"


def test_book_workflow_builds_with_make_book_and_publishes_the_site():
    workflow = _workflow("book.yml")
    assert any(r.startswith("make book") for r in _run_steps(workflow))
    publish = [s for job in workflow["jobs"].values() for s in job["steps"] if "with" in s]
    assert any(s["with"].get("publish_dir") == "_build/html" for s in publish)


def test_readme_shows_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme


def test_generated_appendices_are_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_appendices.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_every_book_label_is_a_known_question():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from build_appendices import book_labels, label_of, load_questions
    finally:
        sys.path.pop(0)
    known = {label_of(q["id"]) for q in load_questions()}
    unknown = sorted(set(book_labels()) - known)
    assert unknown == []


def test_each_question_is_labelled_at_most_once():
    labels = re.compile(r"^\((q[0-9a-z][0-9a-z\-]*)\)=\s*$", re.MULTILINE)
    seen: dict[str, str] = {}
    duplicates = []
    for path in sorted((ROOT / "book").rglob("*.md")):
        for label in labels.findall(path.read_text(encoding="utf-8")):
            if label in seen:
                duplicates.append(f"{label}: {seen[label]} and {path.name}")
            seen[label] = path.name
    assert duplicates == []


def test_questions_in_the_book_match_the_catalogue():
    """book/questions.yml is the catalogue shipped with the course; it must parse and keep the
    141 stable ids of the source documents. Questions the course adds (``seed: added``, ids
    ``q900-<chapter>-<n>``) come after them, each answered by a labelled section."""
    questions = yaml.safe_load((ROOT / "book" / "questions.yml").read_text(encoding="utf-8"))
    ids = [q["id"] for q in questions]
    seeded = [q["id"] for q in questions if q["seed"] != "added"]
    added = [q for q in questions if q["seed"] == "added"]
    assert len(seeded) == 141 and len(set(ids)) == len(ids)
    assert ids[: len(seeded)] == seeded  # added questions are appended, never interleaved
    chapters = (ROOT / "book" / "chapters").glob("*.md")
    labels = "".join(p.read_text(encoding="utf-8") for p in chapters)
    for q in added:
        assert re.fullmatch(r"q900-\d+-\d+", q["id"]), q["id"]
        assert q["seed_answer_kind"] == "ok" and q["seed_answer_issue"] == ""
        assert f"({q['id']})=" in labels, f"{q['id']} has no section in the book"
