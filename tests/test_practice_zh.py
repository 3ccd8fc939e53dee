"""The Chinese edition's Practice page: cards from the chapters' gettext catalogues, and the
page's UI strings.

A toy chapter with a hand-written catalogue checks that each message is looked up whole, as
Sphinx extracts it (the answer paragraph with its label, the keyword line, the heading, the
follow-up's title and body), that the translated labels are dropped and that a missing or fuzzy
translation falls back to English; the real book's catalogues must give every question a
Chinese answer and Chinese keywords, with the English edition's ids and urls.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_practice import ROOT, bp, toy_book, toy_cards  # noqa: F401 (toy_book: fixture)

CATALOGUES = ROOT / "locales" / "zh_CN" / "LC_MESSAGES"
PRACTICE_JS = ROOT / "book" / "_static" / "practice.js"
CJK = re.compile(r"[\u4e00-\u9fff]")

TOY_PO = r"""msgid ""
msgstr ""
"Content-Type: text/plain; charset=utf-8\n"

msgid "Toy pooling"
msgstr "玩具池化"

msgid "Which region does pooling use?"
msgstr "池化作用于哪个区域？"

msgid ""
"**Interview answer.** A $k \\times k$ window with stride $s$; the output "
"has $\\lfloor (H - k)/s \\rfloor + 1$ rows, {glue:text}`n_rows` here."
msgstr ""
"**面试回答。** 步长为 $s$ 的 $k \\times k$ 窗口；输出有 "
"$\\lfloor (H - k)/s \\rfloor + 1$ 行，这里是 {glue:text}`n_rows` 行。"

msgid "**Keywords:** window, stride, $(C k^2, H W)$ columns, output size"
msgstr "**关键词：** 窗口，步长，$(C k^2, H W)$ 列，输出尺寸"

msgid "Follow-up: What does ceil_mode change?"
msgstr "追问：ceil_mode 改变了什么？"

msgid "It rounds the output size *up*:"
msgstr "它把输出尺寸*向上*取整："

msgid "What is pooling for?"
msgstr "池化有什么用？"

msgid ""
"**Interview answer (what it does).** It down-samples; see "
"{ref}`q000-3-1`."
msgstr "**面试回答（它做什么）。** 它做下采样；见 {ref}`q000-3-1`。"

msgid "**Keywords:** down-sampling, invariance"
msgstr "**关键词：** 下采样，不变性（局部，近似）"

#, fuzzy
msgid ""
"**Interview answer (the role of pooling, q001-pooling-role).** It "
"summarises a window."
msgstr "**面试回答（池化的作用，q001-pooling-role）。** 旧译文。"
"""


@pytest.fixture
def toy_zh(toy_book):  # noqa: F811
    po = toy_book / "locales" / "zh_CN" / "LC_MESSAGES" / "book" / "chapters" / "05_toy.po"
    po.parent.mkdir(parents=True)
    po.write_text(TOY_PO, encoding="utf-8")
    translate = bp.catalogue_translator(toy_book / "locales" / "zh_CN" / "LC_MESSAGES")
    cards, problems = bp.build_cards(toy_book / "_build" / "jupyter_execute", translate=translate)
    return {c["id"]: c for c in cards}, problems, toy_cards(toy_book)


def test_toy_answer_keywords_and_titles_come_from_the_catalogue(toy_zh):
    cards, _, english = toy_zh
    c = cards["q000-3-1"]
    assert c["answer_html"] == (
        '<p>步长为 <span class="math notranslate nohighlight">\\(s\\)</span> 的 '
        '<span class="math notranslate nohighlight">\\(k \\times k\\)</span> 窗口；输出有 '
        '<span class="math notranslate nohighlight">\\(\\lfloor (H - k)/s \\rfloor + 1\\)</span>'
        " 行，这里是 7 行。</p>"
    )
    assert c["keywords"] == ["窗口", "步长", "$(C k^2, H W)$ 列", "输出尺寸"]
    assert c["heading"] == "池化作用于哪个区域？" and c["chapter_title"] == "玩具池化"
    # the seed's Chinese and the English question stay as they are
    for key in ("id", "url", "question_zh", "question_en", "frequency", "erratum", "topic"):
        assert c[key] == english["q000-3-1"][key], key


def test_toy_reference_shows_the_translated_heading_and_commas_split_outside_brackets(toy_zh):
    cards, _, _ = toy_zh
    c = cards["q000-3-3"]
    assert c["answer_html"] == (
        '<p>它做下采样；见 <a href="book/chapters/05_toy.html#q000-3-1">'
        "池化作用于哪个区域？</a>。</p>"
    )
    assert c["keywords"] == ["下采样", "不变性（局部，近似）"]


def test_toy_follow_up_is_translated_paragraph_by_paragraph(toy_zh):
    cards, _, english = toy_zh
    f = cards["q000-3-1/f1"]
    assert f["question_zh"] == "ceil_mode 改变了什么？"
    assert f["question_en"] == "What does ceil_mode change?"
    assert f["answer_html"] == (
        "<p>它把输出尺寸<em>向上</em>取整：</p>\n"
        '<div class="math notranslate nohighlight">'
        "\\[H_{out} = \\lceil (H - k)/s \\rceil + 1\\]</div>"
    )
    # no translation: the English body, as the Chinese page shows it
    assert cards["q000-3-3/f1"]["question_zh"] == "Is it differentiable?"
    assert cards["q000-3-3/f1"]["answer_html"] == english["q000-3-3/f1"]["answer_html"]


def test_toy_fuzzy_or_missing_translation_falls_back_to_english_and_is_reported(toy_zh):
    cards, problems, english = toy_zh
    assert cards["q001-pooling-role"]["answer_html"] == english["q001-pooling-role"]["answer_html"]
    assert "旧译文" not in cards["q001-pooling-role"]["answer_html"]
    assert any("no translation of the answer paragraph" in p for p in problems)
    assert any("no translation of the keyword line" in p for p in problems)


# ---- the real book ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def editions():
    english, _ = bp.build_cards(bp.GLUE_DIR)
    chinese, problems = bp.build_cards(bp.GLUE_DIR, translate=bp.catalogue_translator(CATALOGUES))
    return english, chinese, problems


def test_every_chinese_card_has_a_chinese_answer(editions):
    english, chinese, problems = editions
    assert [c["id"] for c in chinese] == [c["id"] for c in english]
    assert [p for p in problems if "translation" in p] == []
    assert [c["id"] for c in chinese if not CJK.search(c["answer_html"])] == []
    for en, zh in zip(english, chinese, strict=True):
        assert zh["answer_html"] != en["answer_html"], zh["id"]
        # the glued numbers and the math of the English answer are all there
        assert zh["answer_html"].count('class="math') == en["answer_html"].count('class="math')


def test_chinese_keywords_are_the_translated_keyword_lines(editions):
    english, chinese, _ = editions
    for en, zh in zip(english, chinese, strict=True):
        assert len(zh["keywords"]) == len(en["keywords"]), zh["id"]
        if zh["keywords"]:
            assert any(CJK.search(k) for k in zh["keywords"]), zh["id"]
            assert zh["keywords"] != en["keywords"], zh["id"]


def test_chinese_cards_keep_the_questions_and_the_urls(editions):
    english, chinese, _ = editions
    built = ROOT / "_build" / "html"
    for en, zh in zip(english, chinese, strict=True):
        for key in ("url", "question_en", "chapter", "topic", "frequency", "erratum", "kind"):
            assert zh[key] == en[key], (zh["id"], key)
        if zh["kind"] == "question":
            assert zh["question_zh"] == en["question_zh"]
        else:  # a follow-up shows its translated question beside the English one
            assert CJK.search(zh["question_zh"]), zh["id"]
        page, anchor = zh["url"].split("#")
        assert (ROOT / page).with_suffix(".md").exists(), zh["url"]
        for site in (built, built / "zh"):
            if (site / page).exists():
                assert f'id="{anchor}"' in (site / page).read_text(encoding="utf-8"), zh["url"]
    assert sum(bool(CJK.search(c["heading"])) for c in chinese) > 0.9 * len(chinese)


# ---- practice.js -----------------------------------------------------------------------------


def _tables(js: str) -> dict[str, set[str]]:
    """The keys of each language's table in ``var STRINGS = { en: {...}, zh: {...} };``."""
    block = js[js.index("var STRINGS = {") : js.index("\n  };\n", js.index("var STRINGS = {"))]
    tables, current = {}, None
    for line in block.splitlines():
        if m := re.match(r"^    (\w+): \{$", line):
            current = tables.setdefault(m.group(1), set())
        elif current is not None and (m := re.match(r"^      (\w+):", line)):
            current.add(m.group(1))
    return tables


def test_practice_js_has_a_chinese_string_for_every_english_one():
    js = PRACTICE_JS.read_text(encoding="utf-8")
    tables = _tables(js)
    assert set(tables) == {"en", "zh"}
    assert len(tables["en"]) > 30
    assert tables["en"] - tables["zh"] == set()
    assert tables["zh"] - tables["en"] == set()
    # every key the app reads is in the English table (the fallback)
    used = set(re.findall(r"\bT\.(\w+)", js)) | {"again", "hard", "good", "easy"}
    assert used - tables["en"] == set()
    # no UI text left outside the tables
    body = js[js.index("function el(") :]
    assert re.findall(r'text: "[A-Za-z][^"]*"', body) == []


def test_the_chinese_site_gets_translated_cards():
    """book/_ext/course_site.py passes the edition's catalogues to build_cards."""
    source = (ROOT / "book" / "_ext" / "course_site.py").read_text(encoding="utf-8")
    assert "catalogue_translator(" in source and "translate=translate" in source
    assert Path(CATALOGUES / "book" / "chapters").is_dir()


@pytest.mark.parametrize(
    ("english", "chinese", "title"),
    [
        ("**Interview answer.** A.", "**面试回答。** 甲。", ""),
        (
            "**Interview answer (the cause, q004-5).** A.",
            "**面试回答（原因，q004-5）。** 甲。",
            "原因。",
        ),
        (
            '**Interview answer: the "parameters" of a map.** A.',
            "**面试回答：特征图的“参数”。** 甲。",
            "特征图的“参数”。",
        ),
    ],
)
def test_translated_label_gives_the_qualifier_without_ids(english, chinese, title):
    m = bp.ANSWER_LINE.match(english)
    answer = bp.Answer(m.group(1) or m.group(2) or "", english[m.end() :], 1, msgid=english)
    problems: list[str] = []
    text, got, _ = bp.translated_answer(answer, {english: chinese}.get, problems, "here")
    assert (text, got, problems) == ("甲。", title, [])
