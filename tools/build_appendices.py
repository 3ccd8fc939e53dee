"""Write the appendix pages generated from ``book/questions.yml`` and the chapters' labels.

- ``book/appendix/question_index.md``: every interview question, grouped by source
  document, linked to the section that answers it (its MyST label ``(q000-3-6)=``).
- ``book/appendix/errata.md``: every question whose source answer is wrong
  (``seed_answer_kind: error``), with what is wrong and a link to the section that proves the
  correct answer, in three sections by the entry's ``erratum_kind``: ``wrong`` (the source
  states something false), ``imprecise`` (over-simplified, incomplete or loosely worded, not
  false) and ``extraction`` (a symbol, formula or figure lost when the document was extracted
  to text). An erratum without a valid ``erratum_kind`` makes the generator (and ``--check``)
  fail with a message naming its id.

Run ``python tools/build_appendices.py`` after adding or renaming a labelled section
(``make book`` runs it); ``tests/test_repository.py`` fails when the committed pages are stale.
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
    # questions the course adds (``seed: added``), which no source document asks
    "added": "Added by the course: vision interviews today",
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


def code_and_tests(questions: list[dict]) -> dict[str, tuple[str, str]]:
    """For each operation named in the questions' ``ops``, where the package defines it
    (``ops.conv.conv2d``, the public module first) and the test file that tests that module
    (``tests/ops/test_conv.py``, tests mirror the package), both as code literals: the book
    builds offline, so these are names a reader finds with a search, not links."""
    package = ROOT / "cnn_course"
    names = {op for q in questions for op in q.get("ops") or []}
    found: dict[str, tuple[str, str]] = {}
    # the operations first, then the other public modules; never a private one or the grader
    modules = sorted(
        (p for p in package.rglob("*.py") if "grading" not in p.relative_to(package).parts),
        key=lambda p: ("/_" in p.relative_to(ROOT).as_posix(), "ops" not in p.parts, p),
    )
    for path in modules:
        text = path.read_text(encoding="utf-8")
        for name in names - set(found):
            if re.search(rf"^(def|class) {re.escape(name)}\b", text, re.MULTILINE):
                module = path.relative_to(package).with_suffix("")
                test = Path("tests", *module.parts[:-1], f"test_{module.name}.py")
                test_text = f"`{test.as_posix()}`" if (ROOT / test).exists() else "-"
                found[name] = (f"`{'.'.join(module.parts)}.{name}`", test_text)
    return found


def question_index(questions: list[dict], labels: dict[str, Path]) -> str:
    answered = sum(label_of(q["id"]) in labels for q in questions)
    where_defined = code_and_tests(questions)
    freq = question_frequencies(questions)
    out = [
        "(question-index)=",
        "# Interview question index",
        "",
        f"All {len(questions)} questions: the "
        f"{sum(q['seed'] != 'added' for q in questions)} of the five source documents and the "
        f"{sum(q['seed'] == 'added' for q in questions)} the course adds, with the section that "
        f"answers each. {answered} of {len(questions)} are answered in this edition.",
        "They are grouped by topic, in the order of the book, and the most asked come first: "
        "**asked in** says how many of the five source collections ask the question's concept "
        "(**new**: a question the course adds). The id links to the answer; drill them all on "
        "the {doc}`../practice` page.",
        "Marks: **corrected** means the source's answer is wrong and the book proves the right "
        "one (see the {ref}`errata`); **supplied** means the source gives no or a partial "
        "answer.",
        "The last two columns name the library code that proves the answer (module and "
        "function, in the `cnn_course` package) and the test file that checks it.",
        "",
    ]
    for topic, entries in by_topic(questions, labels, freq):
        out += ["", f"## {TOPIC_TITLES.get(topic, topic.replace('-', ' ').capitalize())}", ""]
        out += [
            "```{table}",
            ":class: question-index",
            "",
            "| id | asked in | question | English | answered in | code | test |",
            "|---|---|---|---|---|---|---|",
        ]
        for q in entries:
            mark = {"error": " **corrected**", "missing": " **supplied**"}.get(
                q["seed_answer_kind"], ""
            )
            label = label_of(q["id"])
            answered_here = label in labels
            where = f"{{ref}}`{label}`" if answered_here else "not yet answered"
            qid = f"{{ref}}`{q['id']} <{label}>`" if answered_here else f"`{q['id']}`"
            asked = "new" if q["seed"] == "added" else f"{freq[q['id']]}/5"
            found = [where_defined[op] for op in q.get("ops") or [] if op in where_defined]
            code = ", ".join(c for c, _ in found) or "-"
            tests = ", ".join(dict.fromkeys(t for _, t in found if t != "-")) or "-"
            out.append(
                f"| {qid} | {asked} | {_cell(q['heading'])} | {_cell(q['en'])}{mark} | {where} | "
                f"{code} | {tests} |"
            )
        out.append("```")
    out += added_section(questions, labels)
    return "\n".join(out) + "\n"


def added_section(questions: list[dict], labels: dict[str, Path]) -> list[str]:
    """The questions the course adds (``seed: added``), listed once more in one section of
    their own after the topics, in book order."""
    added = [q for q in questions if q["seed"] == "added"]
    if not added:
        return []
    out = ["", f"## {SEED_TITLES['added']}", ""]
    out.append(
        f"{len(added)} questions that interviews ask today and no source document covers, "
        "answered in Part III; each is also listed under its topic above."
    )
    out.append("")
    for q in added:
        label = label_of(q["id"])
        where = f"{{ref}}`{q['id']} <{label}>`" if label in labels else f"`{q['id']}`"
        out.append(f"- {where}: {q['heading']}")
    return out


# Topic headings of the question index (a topic missing here gets its name, capitalised).
TOPIC_TITLES = {
    "motivation": "Why CNNs",
    "convolution": "Convolution",
    "conv-variants": "Convolution variants",
    "pooling": "Pooling",
    "cnn-overall": "CNNs overall",
    "receptive-field": "Receptive field",
    "params-flops": "Parameters and FLOPs",
    "architectures": "Architectures",
    "normalization": "Normalization",
    "activations": "Activations",
    "regularization": "Regularization and overfitting",
    "optimization": "Optimization",
    "initialization": "Initialization",
    "losses": "Losses",
    "training-practice": "Training practice",
    "upsampling": "Up-sampling",
    "detection": "Detection",
    "metrics": "Metrics",
    "classical-ml": "Classical machine learning",
    "data": "Data",
    "other-models": "Other models",
    "python": "Python",
}


def question_frequencies(questions: list[dict]) -> dict[str, int]:
    """How many of the five source collections ask each question's concept (the concept map
    in ``book/questions.yml``'s header; see ``tools/build_practice.py``)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from build_practice import frequencies, parse_concepts
    finally:
        sys.path.pop(0)
    text = (BOOK / "questions.yml").read_text(encoding="utf-8")
    by_label = {label_of(q["id"]): q for q in questions}
    return frequencies(by_label, parse_concepts(text, {q["id"] for q in questions}))


def by_topic(
    questions: list[dict], labels: dict[str, Path], freq: dict[str, int]
) -> list[tuple[str, list[dict]]]:
    """Questions grouped by topic; topics in the order of the first chapter that answers one
    of theirs; within a topic the most asked first, then in catalogue order."""
    groups: dict[str, list[dict]] = {}
    for q in questions:
        groups.setdefault(q["topic"], []).append(q)

    def first_chapter(topic: str) -> str:
        found = [
            labels[label_of(q["id"])].name for q in groups[topic] if label_of(q["id"]) in labels
        ]
        return min(found, default="~")

    order = sorted(groups, key=first_chapter)
    return [(t, sorted(groups[t], key=lambda q: -freq[q["id"]])) for t in order]


ERRATUM_KINDS = {
    "wrong": (
        "Wrong",
        "The source states something false: a formula, a number or a claim that the linked "
        "section disproves with code or with the primary source.",
    ),
    "imprecise": (
        "Imprecise or over-simplified",
        "Not false, but loosely worded, incomplete or stated more generally than it holds, in "
        "a way an interviewer would probe.",
    ),
    "extraction": (
        "Lost in text extraction",
        "The source was right, but a symbol, formula or figure was lost or garbled when the "
        "document was extracted to text; the linked section restores it.",
    ),
}


def _erratum_kinds(wrong: list[dict]) -> dict[str, str]:
    """The ``erratum_kind`` of each erratum, by id; a missing or unknown kind stops the generator
    (and ``--check``) with a message naming the ids."""
    kinds = {q["id"]: q.get("erratum_kind") for q in wrong}
    bad = [f"{qid} ({kind!r})" for qid, kind in kinds.items() if kind not in (None, *ERRATUM_KINDS)]
    if bad:
        raise SystemExit(
            f"build_appendices: unknown erratum_kind in book/questions.yml for {', '.join(bad)}; "
            f"expected one of: {', '.join(ERRATUM_KINDS)}"
        )
    missing = [qid for qid, kind in kinds.items() if kind is None]
    if missing:
        raise SystemExit(
            "build_appendices: seed_answer_kind: error but no erratum_kind in book/questions.yml "
            f"for {', '.join(missing)} (add erratum_kind: {' | '.join(ERRATUM_KINDS)})"
        )
    return kinds


def errata(questions: list[dict], labels: dict[str, Path]) -> str:
    wrong = [q for q in questions if q["seed_answer_kind"] == "error"]
    kinds = _erratum_kinds(wrong)
    out = [
        "(errata)=",
        "# Errata of the source answers",
        "",
        f"{len(wrong)} of the {sum(q['seed'] != 'added' for q in questions)} source answers "
        "contain an error an interviewer "
        "would notice. Each entry says what is wrong; the linked section states the correct "
        "answer and proves it with code. The entries are sorted by kind:",
        "",
    ]
    out += [f"- **{title}.** {meaning}" for title, meaning in ERRATUM_KINDS.values()]
    for kind, (title, _) in ERRATUM_KINDS.items():
        entries = [q for q in wrong if kinds[q["id"]] == kind]
        out += ["", f"## {title} ({len(entries)})", ""]
        if not entries:
            out += ["None.", ""]
        for q in entries:
            label = label_of(q["id"])
            where = f"{{ref}}`{label}`" if label in labels else "correction not yet written"
            out += [
                f"**`{q['id']}`** {q['heading']}",
                "",
                f": {q['seed_answer_issue']} ({where})",
                "",
            ]
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
