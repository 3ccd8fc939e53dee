"""The Practice page's data (tools/build_practice.py): cards generated from the chapters, the
Anki deck, and the vendored scheduler.

The parser is checked on hand-written chapters whose cards are known in advance; the real
book is checked for coverage (every label a card, every follow-up block a card, every answer
non-empty, every link's anchor the id Sphinx gives the label) and staleness.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import sqlite3
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
try:
    import build_practice as bp
    import vendor_fsrs
    from build_appendices import book_labels
finally:
    sys.path.pop(0)

CHAPTER = """---
jupytext:
  text_representation:
    format_name: myst
---

# Toy pooling

(q000-3-1)=
## Which region does pooling use?

> 3.1 池化层针对区域是什么？

**Interview answer.** A $k \\times k$ window with stride $s$; the output has
$\\lfloor (H - k)/s \\rfloor + 1$ rows, {glue:text}`n_rows` here.

**Keywords:** window, stride, $(C k^2, H W)$ columns, output size

```{code-cell} ipython3
## a Python comment, not a heading
print(1)
```

```{admonition} Follow-up: What does ceil_mode change?
:class: followup
It rounds the output size *up*:

$$H_{out} = \\lceil (H - k)/s \\rceil + 1$$
```

(q000-3-3)=
(q001-pooling-role)=
## What is pooling for?

> 3.3 池化层的作用是什么？

**Interview answer (what it does).** It down-samples; see {ref}`q000-3-1`.

**Keywords:** down-sampling, invariance

**Interview answer (the role of pooling, q001-pooling-role).** It summarises a window.

**Keywords:** summary

### A subsection

```{admonition} Follow-up: Is it differentiable?
:class: followup
Almost everywhere.
```

## Summary

```{admonition} Follow-up: Not a question section?
:class: followup
Outside every labelled section: no card.
```

(q900-5-1)=
## An added question without keywords

**Interview answer.** Text.
"""

CATALOGUE = """# Concepts (2, deduplicated across seeds) -> covering ids:
#   pooling-region: q000-3.1, q001-pooling-role, q002-10
#   pooling-role: q000-3.3, q001-pooling-role, q002-10, q003-3, q004-9
#
- id: q000-3.1
  seed: 000_x.txt
  heading: "3.1 池化层针对区域是什么？"
  en: "What region does a pooling layer operate on?"
  topic: pooling
  seed_answer_kind: error
  erratum_kind: imprecise
- id: q000-3.3
  seed: 000_x.txt
  heading: "3.3 池化层的作用是什么？"
  en: "What is the role of the pooling layer?"
  topic: pooling
  seed_answer_kind: missing
- id: q001-pooling-role
  seed: 001_x.txt
  heading: "池化层的作用"
  en: "What does a pooling layer do?"
  topic: pooling
  seed_answer_kind: ok
- id: q002-10
  seed: 002_x.txt
  heading: "10. 下采样"
  en: "Down-sampling?"
  topic: pooling
  seed_answer_kind: ok
- id: q003-3
  seed: 003_x.txt
  heading: "3"
  en: "Pooling?"
  topic: pooling
  seed_answer_kind: ok
- id: q004-9
  seed: 004_x.txt
  heading: "9"
  en: "Pooling and normalization?"
  topic: cnn-overall
  seed_answer_kind: ok
- id: q900-5-1
  seed: added
  heading: "An added question without keywords"
  en: "An added question without keywords"
  topic: pooling
  seed_answer_kind: ok
"""


@pytest.fixture
def toy_book(tmp_path, monkeypatch):
    book = tmp_path / "book"
    (book / "chapters").mkdir(parents=True)
    (book / "chapters" / "05_toy.md").write_text(CHAPTER, encoding="utf-8")
    (book / "questions.yml").write_text(CATALOGUE, encoding="utf-8")
    glue = tmp_path / "_build" / "jupyter_execute" / "book" / "chapters"
    glue.mkdir(parents=True)
    (glue / "05_toy.glue.json").write_text(
        json.dumps({"n_rows": {"data": {"text/plain": "7"}, "metadata": {}}}), encoding="utf-8"
    )
    monkeypatch.setattr(bp, "ROOT", tmp_path)
    monkeypatch.setattr(bp, "BOOK", book)
    monkeypatch.setattr(bp, "CHAPTERS", book / "chapters")
    return tmp_path


def toy_cards(root: Path, **kwargs) -> dict[str, dict]:
    cards, _ = bp.build_cards(root / "_build" / "jupyter_execute", **kwargs)
    return {c["id"]: c for c in cards}


def test_toy_chapter_gives_the_expected_cards(toy_book):
    cards = toy_cards(toy_book)
    # four labels and two follow-ups inside labelled sections; the one under "Summary" is not
    assert list(cards) == [
        "q000-3-1",
        "q000-3-1/f1",
        "q000-3-3",
        "q001-pooling-role",
        "q000-3-3/f1",
        "q900-5-1",
    ]
    c = cards["q000-3-1"]
    assert c["chapter"] == "05_toy" and c["chapter_number"] == 5
    assert c["chapter_title"] == "Toy pooling"
    assert c["question_zh"] == "3.1 池化层针对区域是什么？"
    assert c["question_en"] == "What region does a pooling layer operate on?"
    assert c["url"] == "book/chapters/05_toy.html#q000-3-1"
    assert c["keywords"] == ["window", "stride", "$(C k^2, H W)$ columns", "output size"]
    assert c["erratum"] is True and c["erratum_kind"] == "imprecise"
    # q000-3.1 is under pooling-region only: collections 000, 001, 002
    assert c["frequency"] == 3
    html = c["answer_html"]
    assert '<span class="math notranslate nohighlight">\\(k \\times k\\)</span>' in html
    assert "rows, 7 here." in html  # the glued value
    follow = cards["q000-3-1/f1"]
    assert follow["parent"] == "q000-3-1" and follow["kind"] == "followup"
    assert follow["question_en"] == "What does ceil_mode change?"
    assert follow["answer_html"] == (
        "<p>It rounds the output size <em>up</em>:</p>\n"
        '<div class="math notranslate nohighlight">'
        "\\[H_{out} = \\lceil (H - k)/s \\rceil + 1\\]</div>"
    )


def test_several_answers_go_to_the_labels_they_name(toy_book):
    cards = toy_cards(toy_book)
    role = cards["q001-pooling-role"]
    assert role["answer_html"] == "<p>It summarises a window.</p>"
    assert role["keywords"] == ["summary"]
    # pooling-role spans all five collections
    assert role["frequency"] == 5
    unnamed = cards["q000-3-3"]
    assert unnamed["answer_html"].startswith("<p>It down-samples; see <a href=")
    assert 'href="book/chapters/05_toy.html#q000-3-1"' in unnamed["answer_html"]
    assert unnamed["keywords"] == ["down-sampling", "invariance"]
    assert unnamed["erratum"] is False
    # the follow-up under the subsection still belongs to the section
    assert cards["q000-3-3/f1"]["parent"] == "q000-3-3"


def test_added_questions_have_no_chinese_and_frequency_zero(toy_book):
    card = toy_cards(toy_book)["q900-5-1"]
    assert card["question_zh"] == "" and card["frequency"] == 0 and card["keywords"] == []


def test_a_translated_edition_translates_answers_keywords_and_follow_ups(toy_book):
    seen = []

    def translate(docname: str, msgid: str) -> str:
        seen.append(docname)
        return {
            "**Keywords:** summary": "**关键词：** 摘要",
            "**Interview answer (the role of pooling, q001-pooling-role).** It summarises a "
            "window.": "**面试回答（池化的作用，q001-pooling-role）。** 它汇总一个窗口。",
            "Follow-up: Is it differentiable?": "追问：它可导吗？",
        }.get(msgid, msgid)

    cards = toy_cards(toy_book, translate=translate)
    assert set(seen) == {"book/chapters/05_toy"}
    role = cards["q001-pooling-role"]
    assert role["answer_html"] == "<p>它汇总一个窗口。</p>" and role["keywords"] == ["摘要"]
    follow = cards["q000-3-3/f1"]
    assert follow["question_zh"] == "它可导吗？"
    assert follow["question_en"] == "Is it differentiable?"
    assert role["url"] == "book/chapters/05_toy.html#q001-pooling-role"


def test_strict_fails_on_a_missing_keyword_line(toy_book):
    with pytest.raises(bp.PracticeError, match=r"05_toy.md:\d+: no '\*\*Keywords:\*\*' line"):
        bp.build_cards(toy_book / "_build" / "jupyter_execute", strict=True)


def test_strict_fails_on_a_missing_glued_value(toy_book):
    (toy_book / "book" / "chapters" / "05_toy.md").write_text(
        CHAPTER.replace("(q900-5-1)=\n## An added question without keywords\n", ""),
        encoding="utf-8",
    )
    with pytest.raises(bp.PracticeError, match="no glued value 'n_rows'"):
        bp.build_cards(None, strict=True)


def test_concept_map_must_match_its_announced_size_and_ids():
    ids = {"q000-1", "q002-24"}
    good = "# Concepts (1, x) -> covering ids:\n#   why: q000-1, q002-24\n#\n"
    assert bp.parse_concepts(good, ids) == {"why": ["q000-1", "q002-24"]}
    with pytest.raises(bp.PracticeError, match="announces 2 concepts, 1 parsed"):
        bp.parse_concepts(good.replace("(1,", "(2,"), ids)
    with pytest.raises(bp.PracticeError, match="unknown ids"):
        bp.parse_concepts(good.replace("q002-24", "q002-99"), ids)
    with pytest.raises(bp.PracticeError, match="no '# Concepts"):
        bp.parse_concepts("# nothing here\n", ids)


def test_anchor_is_the_id_sphinx_writes_for_a_label(tmp_path):
    """Build a one-page MyST site and read the id of the label's target."""
    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text('extensions = ["myst_parser"]\n')
    (src / "index.md").write_text("# T\n\n(q000-3-3)=\n(q001-pooling-role)=\n## Pooling\n\nText.\n")
    app = Sphinx(src, src, tmp_path / "out", tmp_path / "doctrees", "html", status=None)
    app.build()
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    for label in ("q000-3-3", "q001-pooling-role"):
        assert f'id="{bp.anchor(label)}"' in html


# ---- the real book ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_cards():
    cards, problems = bp.build_cards(bp.GLUE_DIR)
    return cards, problems


def test_every_label_has_a_card_and_every_follow_up_block_too(book_cards):
    cards, _ = book_cards
    questions = [c for c in cards if c["kind"] == "question"]
    assert sorted(c["id"] for c in questions) == sorted(book_labels())
    assert len(questions) >= 141
    blocks = sum(
        len(re.findall(r"^```\{admonition\} Follow-up:", p.read_text(encoding="utf-8"), re.M))
        for p in (ROOT / "book" / "chapters").glob("*.md")
    )
    assert sum(c["kind"] == "followup" for c in cards) <= blocks
    ids = [c["id"] for c in cards]
    assert len(ids) == len(set(ids))


def test_every_answer_is_non_empty(book_cards):
    cards, _ = book_cards
    empty = [c["id"] for c in cards if not re.sub(r"<[^>]+>", "", c["answer_html"]).strip()]
    assert empty == []


def test_every_url_points_at_its_label(book_cards):
    cards, _ = book_cards
    labels = book_labels()
    built = ROOT / "_build" / "html"
    for c in cards:
        page, anchor = c["url"].split("#")
        label = c.get("parent", c["id"])
        assert page == f"book/chapters/{labels[label].stem}.html", c["id"]
        assert c["kind"] == "followup" or anchor == bp.anchor(c["id"])
        if (built / page).exists():
            assert f'id="{anchor}"' in (built / page).read_text(encoding="utf-8"), c["url"]


def test_errata_flags_follow_the_catalogue(book_cards):
    cards, _ = book_cards
    catalogue = bp.load_questions()
    for c in cards:
        if c["kind"] == "question":
            q = catalogue[c["id"]]
            assert c["erratum"] == (q["seed_answer_kind"] == "error"), c["id"]
            assert c["erratum_kind"] == q.get("erratum_kind")


def test_practice_json_is_current(book_cards):
    """``make book`` writes book/practice.json; it must match the chapters as they are now."""
    if not bp.OUT.exists():
        pytest.skip("book/practice.json is written by make book")
    cards, _ = book_cards
    assert bp.OUT.read_text(encoding="utf-8") == bp.dumps(cards), (
        "book/practice.json is stale: run python tools/build_practice.py"
    )


def test_anki_deck_holds_every_card(book_cards, tmp_path):
    cards, _ = book_cards
    path = tmp_path / "practice.apkg"
    bp.write_apkg(cards, path)
    with zipfile.ZipFile(path) as z:
        assert "collection.anki2" in z.namelist()
        z.extract("collection.anki2", tmp_path)
    db = sqlite3.connect(tmp_path / "collection.anki2")
    try:
        notes = db.execute("select flds, tags from notes").fetchall()
        n_cards = db.execute("select count(*) from cards").fetchone()[0]
        models = json.loads(db.execute("select models from col").fetchone()[0])
    finally:
        db.close()
    assert len(notes) == len(cards) == n_cards
    (model,) = models.values()
    names = [f["name"] for f in model["flds"]]
    assert names[:7] == ["Id", "Chapter", "Topic", "QuestionZh", "QuestionEn", "Answer", "Keywords"]
    by_id = {flds.split("\x1f")[0]: (flds.split("\x1f"), tags) for flds, tags in notes}
    sample = next(c for c in cards if c["question_zh"] and c["keywords"])
    fields, tags = by_id[sample["id"]]
    assert fields[names.index("QuestionEn")] == html.escape(sample["question_en"])
    assert "\\(" in fields[names.index("Answer")] or "<p>" in fields[names.index("Answer")]
    assert sample["topic"] in tags.split()


def test_vendored_scheduler_is_the_pinned_release():
    umd = vendor_fsrs.UMD.read_bytes()
    assert hashlib.sha256(umd).hexdigest() == vendor_fsrs.UMD_SHA256
    assert b"factory(global.FSRS = {})" in umd
    assert "MIT License" in vendor_fsrs.LICENSE.read_text(encoding="utf-8")


def _deck_ids(path: Path, tmp: Path) -> tuple[set, set, set]:
    with zipfile.ZipFile(path) as z:
        z.extract("collection.anki2", tmp)
    db = sqlite3.connect(tmp / "collection.anki2")
    try:
        guids = {g for (g,) in db.execute("select guid from notes")}
        decks = set(json.loads(db.execute("select decks from col").fetchone()[0]))
        models = set(json.loads(db.execute("select models from col").fetchone()[0]))
    finally:
        db.close()
    return guids, decks, models


def test_each_edition_has_a_deck_of_its_own(book_cards, tmp_path):
    """Importing the English and the Chinese deck into one Anki collection must give two
    decks: no shared deck, note type or note id, or the second import overwrites the first."""
    cards, _ = book_cards
    ids = {}
    for language in ("en", "zh"):
        (tmp_path / language).mkdir()
        path = tmp_path / language / "practice.apkg"
        bp.write_apkg(cards, path, language=language)
        ids[language] = _deck_ids(path, tmp_path / language)
    for mine, theirs in zip(ids["en"], ids["zh"], strict=True):
        shared = mine & theirs - {"1"}  # Anki's built-in "Default" deck is in every collection
        assert not shared
