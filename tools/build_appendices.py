"""Write the appendix pages generated from ``book/questions.yml`` and the chapters' labels.

- ``book/appendix/question_index.md``: every interview question, grouped by source
  document, linked to the section that answers it (its MyST label ``(q000-3-6)=``).
- ``book/appendix/errata.md``: every question whose source answer is wrong, with what is
  wrong and a link to the section that proves the correct answer.

Run ``python tools/build_appendices.py`` after adding or renaming a labelled section
(``make book`` runs it); ``tests/test_book.py`` fails when the committed pages are stale.
Pass ``--check`` to only report whether they are up to date.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
LABEL = re.compile(r"^\((q[0-9a-z][0-9a-z\-]*)\)=\s*$", re.MULTILINE)
SEED_TITLES = {
    "000": "Document 000: CNN interview notes (motivation, convolution, pooling, dilated and "
    "transposed convolution)",
    "001": "Document 001: CNN concepts and architectures",
    "002": "Document 002: Deep-learning interview questions (54 questions)",
    "003": "Document 003: CNN and vision practice",
    "004": "Document 004: Mixed interview questions and practice",
}


def label_of(qid: str) -> str:
    """The MyST label of a question id: dots become dashes (q000-3.6 -> q000-3-6)."""
    return qid.replace(".", "-")


def load_questions() -> list[dict]:
    return yaml.safe_load((BOOK / "questions.yml").read_text(encoding="utf-8"))


def book_labels() -> dict[str, Path]:
    """Every question label defined in a chapter, with the file that defines it."""
    labels: dict[str, Path] = {}
    for path in sorted((BOOK / "chapters").glob("*.md")):
        for label in LABEL.findall(path.read_text(encoding="utf-8")):
            labels[label] = path
    return labels


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def question_index(questions: list[dict], labels: dict[str, Path]) -> str:
    answered = sum(label_of(q["id"]) in labels for q in questions)
    out = [
        "(question-index)=",
        "# Interview question index",
        "",
        f"All {len(questions)} questions of the five source documents, with the section that "
        f"answers each. {answered} of {len(questions)} are answered in this edition.",
        "Marks: **corrected** means the source's answer is wrong and the book proves the right "
        "one (see the {ref}`errata`); **supplied** means the source gives no or a partial "
        "answer.",
        "",
    ]
    seed = None
    for q in questions:
        doc = q["seed"][:3]
        if doc != seed:
            seed = doc
            out += ["", f"## {SEED_TITLES.get(doc, 'Document ' + doc)}", ""]
            out += ["| id | question | English | answered in |", "|---|---|---|---|"]
        mark = {"error": " **corrected**", "missing": " **supplied**"}.get(
            q["seed_answer_kind"], ""
        )
        label = label_of(q["id"])
        where = f"{{ref}}`{label}`" if label in labels else "not yet answered"
        out.append(f"| `{q['id']}` | {_cell(q['heading'])} | {_cell(q['en'])}{mark} | {where} |")
    return "\n".join(out) + "\n"


def errata(questions: list[dict], labels: dict[str, Path]) -> str:
    wrong = [q for q in questions if q["seed_answer_kind"] == "error"]
    out = [
        "(errata)=",
        "# Errata of the source answers",
        "",
        f"{len(wrong)} of the {len(questions)} source answers are wrong in a way an interviewer "
        "would notice. Each entry says what is wrong; the linked section states the correct "
        "answer and proves it with code.",
        "",
    ]
    for q in wrong:
        label = label_of(q["id"])
        where = f"{{ref}}`{label}`" if label in labels else "correction not yet written"
        out += [f"**`{q['id']}`** {q['heading']}", "", f": {q['seed_answer_issue']} ({where})", ""]
    return "\n".join(out)


def pages() -> dict[Path, str]:
    questions, labels = load_questions(), book_labels()
    return {
        BOOK / "appendix" / "question_index.md": question_index(questions, labels),
        BOOK / "appendix" / "errata.md": errata(questions, labels),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale pages")
    args = parser.parse_args(argv)
    stale = [p for p, text in pages().items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run python tools/build_appendices.py)")
        return 1 if stale else 0
    for p in stale:
        p.write_text(pages()[p], encoding="utf-8")
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
