"""The Chinese edition's machinery: what goes into the catalogues, the translator's check, the
language switcher's links, and the committed translations' markup."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))

course_i18n = pytest.importorskip("course_i18n")  # needs Sphinx (the book extra)
i18n = pytest.importorskip("i18n")


@pytest.mark.parametrize(
    "text",
    [
        "`q000-1`",
        "{ref}`q000-3-3`",
        "{ref}`q001-pooling-role <q001-pooling-role>`",
        "{doc}`../chapters/05_pooling`",
        "0.094",
        "$k \\times k$",
        "3.1 池化层针对区域是什么？",
        "**`q000-3.4`** 3.4 池化层 反向传播 是什么样的？",
    ],
)
def test_nothing_to_translate(text):
    assert not course_i18n.has_prose(text)


@pytest.mark.parametrize(
    "text",
    [
        "What is pooling for?",
        "See {ref}`the role of pooling <q000-3-3>`.",
        "The source calls the count 计算量, the amount of computation.",
        "{glue:text}`max_cover` windows overlap there.",
    ],
)
def test_prose_to_translate(text):
    assert course_i18n.has_prose(text)


def test_a_quoted_source_question_stays_as_written():
    question = "3.5 mean pooling 池化层 反向传播 是什么样的？"
    assert course_i18n.has_prose(question)  # in running text it would be translated
    assert not course_i18n.has_prose(question, quoted=True)  # a > quote or table cell is not
    assert course_i18n.has_prose("Added: not in the source documents.", quoted=True)


MSGID = (
    "With `ceil_mode=True` the $k \\times k$ windows of {ref}`pooling <q000-3-1>` read "
    "{glue:text}`max_cover` pixels in 2014 ([paper](https://arxiv.org/abs/1404.1))."
)
GOOD = (
    "设置 `ceil_mode=True` 时，{ref}`池化 <q000-3-1>` 的 $k \\times k$ 窗口在 2014 年读取 "
    "{glue:text}`max_cover` 个像素（[论文](https://arxiv.org/abs/1404.1)）。"
)


def test_markup_kept_by_a_good_translation():
    assert i18n.markup(MSGID) == i18n.markup(GOOD)


@pytest.mark.parametrize(
    "broken",
    [
        GOOD.replace("`ceil_mode=True`", "ceil_mode=True"),  # code lost
        GOOD.replace("$k \\times k$", "$k×k$"),  # math changed
        GOOD.replace("<q000-3-1>", "<q000-3-2>"),  # reference target changed
        GOOD.replace("{glue:text}`max_cover`", "4"),  # computed number hard-coded
        GOOD.replace("2014 年", "二〇一四年"),  # number written out
        GOOD.replace("arxiv.org/abs/1404.1", "arxiv.org"),  # link target changed
        GOOD + '<a href="../zh.pdf">PDF</a>',  # an HTML link added
    ],
)
def test_markup_changes_are_found(broken):
    assert i18n.markup(MSGID) != i18n.markup(broken)


def test_bold_next_to_chinese_punctuation_is_found():
    english = "**Interview answer.** Pooling works per channel."
    assert i18n.emphasis(english) == i18n.emphasis("**面试回答。** 池化逐通道进行。")
    assert i18n.emphasis(english) != i18n.emphasis("**面试回答。**池化逐通道进行。")


def _po(path: Path, entries: list[tuple[str, str, bool]]) -> None:
    lines = ['msgid ""', 'msgstr ""', '"Content-Type: text/plain; charset=UTF-8\\n"', ""]
    for msgid, msgstr, fuzzy in entries:
        lines += (["#, fuzzy"] if fuzzy else []) + [f'msgid "{msgid}"', f'msgstr "{msgstr}"', ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def test_check_finds_untranslated_fuzzy_obsolete_and_markup(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(i18n, "POT", tmp_path / "pot")
    monkeypatch.setattr(i18n, "CATALOGUES", tmp_path / "po")
    doc = "book/chapters/99_demo"
    _po(
        tmp_path / "pot" / f"{doc}.pot",
        [("Pooling", "", False), ("Stride `s`", "", False), ("New text", "", False),
         ("Changed text", "", False), ("Fine", "", False)],
    )  # fmt: skip
    _po(
        tmp_path / "po" / f"{doc}.po",
        [("Pooling", "池化", False), ("Stride `s`", "步长 s", False),
         ("Changed text", "旧译文", True), ("Fine", "好", False), ("Gone", "已删除", False)],
    )  # fmt: skip
    report = i18n.compare(doc)
    assert report.untranslated == ["New text"]
    assert report.fuzzy == ["Changed text"]
    assert report.obsolete == ["Gone"]
    assert [m.split("\n")[0] for m in report.markup] == ["Stride `s`"]
    assert i18n.check([doc], report_only=False) == 1
    assert i18n.check([doc], report_only=True) == 0
    assert "untranslated: New text" in capsys.readouterr().out


def test_switcher_links_to_the_same_page_of_the_other_edition():
    class App:
        class config:
            language = "en"

    assert course_i18n.other_edition_url(App, "book/chapters/05_pooling") == (
        "../../zh/book/chapters/05_pooling.html"
    )
    assert course_i18n.other_edition_url(App, "search") == "zh/search.html"
    App.config.language = "zh_CN"
    assert course_i18n.other_edition_url(App, "book/chapters/05_pooling") == (
        "../../../book/chapters/05_pooling.html"
    )
    assert course_i18n.other_edition_url(App, "search") == "../search.html"


def test_committed_translations_keep_the_markup():
    """Every translated entry of every catalogue keeps its roles, code, math, links and numbers,
    and its bold and italic render (the strict check adds completeness on top)."""
    from babel.messages.pofile import read_po

    problems = []
    for po in sorted((ROOT / "locales").rglob("*.po")):
        with po.open("rb") as f:
            catalogue = read_po(f)
        for m in catalogue:
            if not m.id or not m.string or m.fuzzy:
                continue
            if i18n.markup(m.id) != i18n.markup(m.string) or (
                i18n.emphasis(m.id) != i18n.emphasis(m.string)
            ):
                problems.append(f"{po.relative_to(ROOT)}: {m.id[:80]}")
    assert not problems, "\n".join(problems)
