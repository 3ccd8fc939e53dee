"""Write ``book/practice.json``, the cards of the Practice page, from the chapters themselves.

One card per labelled question (``(q000-3-1)=`` before a section heading): the seed's Chinese
wording and its English translation (``book/questions.yml``), the section's
``**Interview answer.**`` paragraph rendered to HTML (math kept as ``\\(...\\)``/``\\[...\\]``
for MathJax, as Sphinx writes it), the ``**Keywords:**`` line under it, and the link to the
section. Every ``{admonition} Follow-up: <question>?`` block of a section becomes a card of its
own (id ``<label>/f1``, ``parent`` the section's first label). Each card also carries:

- ``frequency``: how many of the five source collections ask the concept, from the concept map
  in the header comment of ``book/questions.yml`` (``# Concepts (N, ...) -> covering ids:``);
  for a question under several concepts, the largest count; a seed question under none counts
  its own collection (1); a question the course adds (``seed: added``) has 0.
- ``erratum`` / ``erratum_kind``: the source's common answer is wrong
  (``seed_answer_kind: error``) and of which kind.

``make book`` runs this before Jupyter Book; ``book/_ext/course_site.py`` runs it again after
the build, with the values the chapters glued (``{glue:text}``) in this build, and writes the
site's copy (``_build/html/book/practice.json``) and the Anki deck (``practice.apkg``).
``tests/test_practice.py`` checks the data against the chapters. ``--strict`` fails on a
labelled question without an answer or a keyword line, or an unresolved role.

A translated edition passes ``translate(docname, msgid) -> msgstr`` to :func:`build_cards`
(:func:`catalogue_translator`: a lookup in the document's gettext catalogue, as Sphinx does it;
the msgid itself where there is no translation). Each message is the source block as Sphinx
extracts it (the block's source, line breaks as spaces): the whole answer paragraph with its
``**Interview answer.**`` label, the keyword line with its label, the section heading, the
chapter title, the follow-up's admonition title (``Follow-up: ...``) and each paragraph of its
body. The translated labels are dropped as the English ones are, and the edition writes its
own ``practice.json`` next to its own page; ids, urls (relative, so the same in every edition),
``question_zh`` (the seed's wording) and ``question_en`` stay the same; a follow-up's
``question_zh`` is the translated follow-up question.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = BOOK / "chapters"
OUT = BOOK / "practice.json"
GLUE_DIR = ROOT / "_build" / "jupyter_execute"
SOURCES = ("000", "001", "002", "003", "004")

Q_LABEL = re.compile(r"^\((q[0-9a-z][0-9a-z\-]*)\)=\s*$")
ANY_LABEL = re.compile(r"^\(([A-Za-z0-9_][\w\-.:]*)\)=\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^(\s{0,3})(`{3,}|~{3,}|:{3,})(.*)$")
FOLLOW_UP = re.compile(r"^\{admonition\}\s+(Follow-up:\s*(.+?))\s*$")
ANSWER = "**Interview answer.**"
# "**Interview answer.**", "**Interview answer (what causes overfitting, q004-5).**" or
# "**Interview answer: the "parameters" of a feature map.**"
ANSWER_LINE = re.compile(r"^\*\*Interview answer(?:\s*\((.+?)\)|:\s*(.+?))?\.\*\*\s*")
KEYWORDS = "**Keywords:**"
QID = re.compile(r"\bq[0-9]{3}-[0-9a-z][0-9a-z.\-]*[0-9a-z]|\bq[0-9]{3}-[0-9a-z]\b")
CONCEPTS_START = re.compile(r"^#\s*Concepts\s*\((\d+)\b[^)]*\)\s*->\s*covering ids:\s*$")
CONCEPT_LINE = re.compile(r"^#\s+([a-z0-9][a-z0-9\-]*):\s*(q[^\s,]+(?:\s*,\s*q[^\s,]+)*)\s*$")
ROLE = re.compile(r"\{([a-z][\w:\-]*)\}`([^`]*)`")
# A translated block's leading bold label ("**面试回答（...）。** ", "**关键词：** ") and the label
# of a translated admonition title ("追问：..."): what the English "**Interview answer.**",
# "**Keywords:**" and "Follow-up:" become.
LEAD_LABEL = re.compile(r"^\*\*(?P<label>[^*]+?)\*\*[:：]?\s*")
TITLE_LABEL = re.compile(r"^[^:：]*[:：]\s*")
QUALIFIER = re.compile(r"[(（](?P<paren>.+)[)）][。.]?$|[:：]\s*(?P<colon>.+?)[。.]?$")


class PracticeError(ValueError):
    """The chapters or the catalogue do not give what a card needs."""


def anchor(label: str) -> str:
    """The HTML id Sphinx gives a MyST label's target (docutils' ``make_id``)."""
    from docutils.nodes import make_id

    return make_id(label)


# ---- book/questions.yml -----------------------------------------------------------------------


def load_questions() -> dict[str, dict]:
    """Catalogue entries by label (dots in ids become dashes, as in the chapters)."""
    entries = yaml.safe_load((BOOK / "questions.yml").read_text(encoding="utf-8"))
    return {q["id"].replace(".", "-"): q for q in entries}


def parse_concepts(text: str, ids: set[str]) -> dict[str, list[str]]:
    """The concept map of the catalogue's header comment: concept -> question ids.

    Fails when the block is missing, its size differs from the count it announces, a line in
    it is malformed, or it names an id the catalogue does not have.
    """
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if CONCEPTS_START.match(line)), None)
    if start is None:
        raise PracticeError("book/questions.yml: no '# Concepts (N, ...) -> covering ids:' block")
    expected = int(CONCEPTS_START.match(lines[start]).group(1))
    concepts: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line.startswith("#") or not line[1:].strip():
            break
        m = CONCEPT_LINE.match(line)
        if not m:
            if line.startswith("#   "):
                raise PracticeError(f"book/questions.yml: malformed concept line {line!r}")
            break
        qids = [q.strip() for q in m.group(2).split(",")]
        unknown = [q for q in qids if q not in ids]
        if unknown:
            raise PracticeError(
                f"book/questions.yml: concept {m.group(1)!r} names unknown ids {unknown}"
            )
        concepts[m.group(1)] = qids
    if len(concepts) != expected:
        raise PracticeError(
            f"book/questions.yml: the concept map announces {expected} concepts, "
            f"{len(concepts)} parsed"
        )
    return concepts


def frequencies(questions: dict[str, dict], concepts: dict[str, list[str]]) -> dict[str, int]:
    """For each question id: how many source collections ask its most-asked concept."""
    freq = {}
    for q in questions.values():
        counts = [
            len({qid[1:4] for qid in qids if qid[1:4] in SOURCES})
            for qids in concepts.values()
            if q["id"] in qids
        ]
        own = 1 if q["seed"][:3] in SOURCES else 0
        freq[q["id"]] = max(counts + [own])
    return freq


# ---- the chapters -----------------------------------------------------------------------------


@dataclass
class FollowUp:
    question: str
    body: str
    title: str = ""  # the admonition's title as written ("Follow-up: <question>")


@dataclass
class Answer:
    qualifier: str
    text: str
    line: int
    keywords: str | None = None
    # the paragraphs as Sphinx's messages (source lines joined by spaces), labels included
    msgid: str = ""
    keywords_msgid: str = ""

    @property
    def names(self) -> list[str]:
        """The labels the qualifier names, e.g. ``(what causes overfitting, q004-5)``."""
        return [q.replace(".", "-") for q in QID.findall(self.qualifier)]

    @property
    def title(self) -> str:
        """The qualifier without the ids it names."""
        text = QID.sub("", self.qualifier)
        return re.sub(r"\s*,\s*(,|$)", r"\1", text).strip(" ,")


@dataclass
class Section:
    labels: list[str]
    heading: str
    line: int
    level: int = 2
    answers: list[Answer] = field(default_factory=list)
    followups: list[FollowUp] = field(default_factory=list)
    stray_keywords: int = 0

    def answers_for(self, label: str) -> list[Answer]:
        """The answers of one label: those whose qualifier names it; else those naming no
        label (all of them when every answer names one and none names this label)."""
        named = [a for a in self.answers if label in a.names]
        if named:
            return named
        unnamed = [a for a in self.answers if not a.names]
        return unnamed or list(self.answers)


@dataclass
class Chapter:
    path: Path
    title: str
    sections: list[Section]

    @property
    def stem(self) -> str:
        return self.path.stem


def _strip_front_matter(lines: list[str]) -> int:
    if lines and lines[0].strip() == "---":
        for i in range(1, len(lines)):
            if lines[i].strip() == "---":
                return i + 1
    return 0


def _blocks(lines: list[str], start: int):
    """Yield ``(index, line, fence)`` for lines outside fences, and
    ``(index, info, body_lines)`` once per fenced block (its opening line's index)."""
    i = start
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            yield i, lines[i], None
            i += 1
            continue
        marker, info = m.group(2), m.group(3).strip()
        body, j = [], i + 1
        close = re.compile(rf"^\s{{0,3}}{re.escape(marker[0])}{{{len(marker)},}}\s*$")
        while j < len(lines) and not close.match(lines[j]):
            body.append(lines[j])
            j += 1
        yield i, info, body
        i = j + 1


def _paragraph(lines: list[str], i: int) -> str:
    out = []
    while i < len(lines) and lines[i].strip():
        out.append(lines[i].strip())
        i += 1
    return "\n".join(out)


def _msgid(lines: list[str], i: int) -> str:
    """The message Sphinx extracts for the paragraph that starts at line ``i``: its source
    lines as written (MyST's ``rawsource``), line breaks replaced by spaces, stripped."""
    out = []
    while i < len(lines) and lines[i].strip():
        out.append(lines[i])
        i += 1
    return message("\n".join(out))


def message(source: str) -> str:
    """A block's source as Sphinx's message (``sphinx.util.nodes.extract_messages``)."""
    return source.replace("\n", " ").strip()


def parse_chapter(path: Path) -> Chapter:
    lines = path.read_text(encoding="utf-8").splitlines()
    title, sections = path.stem, []
    pending: list[str] = []
    current: Section | None = None
    for i, line, fence in _blocks(lines, _strip_front_matter(lines)):
        if fence is not None:  # a fenced block: only follow-up admonitions matter
            m = FOLLOW_UP.match(line)
            if current is not None and m:
                body = list(fence)
                while body and re.match(r"^:[\w-]+:", body[0]):
                    body.pop(0)
                current.followups.append(FollowUp(m.group(2), "\n".join(body).strip(), m.group(1)))
            continue
        if m := Q_LABEL.match(line):
            pending.append(m.group(1))
            current = None
            continue
        if m := HEADING.match(line):
            level = len(m.group(1))
            if level == 1 and title == path.stem:
                title = m.group(2)
            if pending:
                current = Section(pending, m.group(2), i + 1, level)
                sections.append(current)
                pending = []
            elif current is not None and level <= current.level:
                current = None
            continue
        if current is None:
            continue
        if m := ANSWER_LINE.match(line):
            text = _paragraph(lines, i)[m.end() :].strip()
            qualifier = m.group(1) or m.group(2) or ""
            current.answers.append(Answer(qualifier, text, i + 1, msgid=_msgid(lines, i)))
        elif line.startswith(KEYWORDS):
            if current.answers and current.answers[-1].keywords is None:
                keywords = _paragraph(lines, i)[len(KEYWORDS) :]
                current.answers[-1].keywords = " ".join(keywords.split())
                current.answers[-1].keywords_msgid = _msgid(lines, i)
            else:
                current.stray_keywords += 1
    if pending:
        raise PracticeError(f"{path.name}: label(s) {pending} are not followed by a heading")
    return Chapter(path, title, sections)


def split_keywords(text: str) -> list[str]:
    """Split a keyword line on commas (and full-width ones, in a translation) outside
    ``$...$`` and brackets."""
    parts, depth, in_math, cur = [], 0, False, []
    for ch in text:
        if ch == "$":
            in_math = not in_math
        elif not in_math and ch in "([{（":
            depth += 1
        elif not in_math and ch in ")]}）":
            depth = max(depth - 1, 0)
        if ch in ",，" and depth == 0 and not in_math:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p.rstrip(".。") for p in parts if p]


def all_labels() -> dict[str, tuple[str, str]]:
    """Every MyST label in the book: label -> (page path without suffix, heading text)."""
    found: dict[str, tuple[str, str]] = {}
    for path in sorted(BOOK.rglob("*.md")):
        if "_build" in path.parts or "_static" in path.parts:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        page = path.relative_to(ROOT).with_suffix("").as_posix()
        pending = []
        for _, line, fence in _blocks(lines, _strip_front_matter(lines)):
            if fence is not None:
                pending = []
                continue
            if m := ANY_LABEL.match(line):
                pending.append(m.group(1))
            elif m := HEADING.match(line):
                for label in pending:
                    found[label] = (page, m.group(2))
                pending = []
            elif line.strip():
                for label in pending:
                    found[label] = (page, label)
                pending = []
    return found


def page_titles() -> dict[str, str]:
    titles = {}
    for path in sorted(BOOK.rglob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for _, line, fence in _blocks(lines, _strip_front_matter(lines)):
            if fence is None and (m := HEADING.match(line)) and len(m.group(1)) == 1:
                titles[path.relative_to(ROOT).with_suffix("").as_posix()] = m.group(2)
                break
    return titles


# ---- Markdown to HTML -------------------------------------------------------------------------


def _math(content: str, display: bool) -> str:
    text = html.escape(content.strip())
    if display:
        return f'<div class="math notranslate nohighlight">\\[{text}\\]</div>\n'
    return f'<span class="math notranslate nohighlight">\\({text}\\)</span>'


def markdown():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    dollarmath_plugin(md, allow_space=True, allow_digits=True, double_inline=False)
    # the markup Sphinx writes for MyST math, which the site's MathJax configuration processes
    for rule, display in (("math_inline", False), ("math_block", True), ("math_block_label", True)):
        md.add_render_rule(
            rule, lambda self, tokens, idx, options, env, d=display: _math(tokens[idx].content, d)
        )
    return md


class Renderer:
    """Renders a chapter's Markdown (with MyST roles) to HTML for a card.

    Links are relative to the site root (the page prefixes its own path to the root). With
    ``translate`` (a translated edition), a reference without a title of its own shows the
    translated heading or page title, as Sphinx's translated pages do.
    """

    def __init__(self, glue_dir: Path | None, translate: Callable[[str, str], str] | None = None):
        self.md = markdown()
        self.translate = translate
        self.labels = all_labels()
        self.titles = page_titles()
        self.glue_dir = glue_dir
        self._glue: dict[str, dict] = {}
        self.problems: list[str] = []

    def glue(self, chapter: str, key: str) -> dict | None:
        if chapter not in self._glue:
            data = {}
            if self.glue_dir is not None:
                path = self.glue_dir / "book" / "chapters" / f"{chapter}.glue.json"
                if path.exists():
                    data = json.loads(path.read_text(encoding="utf-8"))
            self._glue[chapter] = data
        return self._glue[chapter].get(key)

    def _link(self, text: str, url: str) -> str:
        return f"[{text}]({url})"

    def _role(self, chapter: str, name: str, content: str, where: str) -> str:
        explicit = re.match(r"^(.*?)\s*<([^<>]+)>$", content, re.S)
        text, target = (explicit.group(1), explicit.group(2)) if explicit else (None, content)
        if name == "doc":
            page = (CHAPTERS / target).resolve() if not target.startswith("/") else None
            key = (
                page.relative_to(ROOT).as_posix()
                if page is not None
                else target.lstrip("/").removesuffix(".md")
            )
            key = key.removesuffix(".md")
            if key in self.titles:
                return self._link(text or self._tr(key, self.titles[key]), key + ".html")
        elif name == "ref":
            if target in self.labels:
                page, heading = self.labels[target]
                return self._link(text or self._tr(page, heading), f"{page}.html#{anchor(target)}")
        elif name in ("glue:text", "glue"):
            key, _, fmt = target.rpartition(":") if ":" in target else (target, "", "")
            data = self.glue(chapter, key)
            if data is not None and "text/plain" in data.get("data", {}):
                from myst_nb.core.variables import format_plain_text

                return html.escape(format_plain_text(data["data"]["text/plain"], fmt or "s"))
            self.problems.append(f"{where}: no glued value {key!r} (build the book first)")
            return f"`{key}`"
        elif name == "math":
            return f"${content}$"
        elif name in ("term", "abbr", "sub", "sup", "guilabel", "kbd", "command", "file"):
            return text or target
        self.problems.append(f"{where}: cannot render the role {{{name}}}`{content}`")
        return f"`{text or target}`"

    def _tr(self, docname: str, text: str) -> str:
        return self.translate(docname, text) if self.translate else text

    def roles(self, chapter: str, text: str, where: str) -> str:
        return ROLE.sub(lambda m: self._role(chapter, m.group(1), m.group(2), where), text)

    def block(self, chapter: str, text: str, where: str) -> str:
        return self.md.render(self.roles(chapter, text, where)).strip()

    def inline(self, chapter: str, text: str, where: str) -> str:
        return self.md.renderInline(self.roles(chapter, text, where)).strip()


# ---- the cards --------------------------------------------------------------------------------


def _plain(html_text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", html_text))


def question_en(q: dict, heading: str) -> str:
    """The catalogue's English wording, unless it only describes the seed's text (a bare
    section heading, or a bracketed note that the question is missing): then the heading of
    the section that answers it."""
    en = q.get("en") or ""
    if not en or en.endswith("(section heading).") or re.match(r"^\[[^\]]*missing", en):
        return heading
    return en


def translated_answer(
    a: Answer, tr: Callable[[str], str], problems: list[str], where: str
) -> tuple[str, str, str]:
    """An answer in a translated edition: its text, its qualifier (ids dropped) and the
    punctuation that ends its label, from the translated paragraph; and its keyword line."""
    text, title, end, keywords = a.text, a.title, ".", a.keywords or ""
    translated = tr(a.msgid)
    if translated != a.msgid and (m := LEAD_LABEL.match(translated)):
        text = translated[m.end() :].strip()
        label = m.group("label").strip()
        end = label[-1] if not label[-1].isalnum() else ""
        q = QUALIFIER.search(label)
        qualifier = (q.group("paren") or q.group("colon") or "") if q else ""
        title = re.sub(r"\s*[,，、]\s*([,，、)）]|$)", r"\1", QID.sub("", qualifier)).strip(
            " ,，、"
        )
        title = title or a.title
    else:
        problems.append(f"{where}: no translation of the answer paragraph")
    if a.keywords_msgid:
        line = tr(a.keywords_msgid)
        if line != a.keywords_msgid and (m := LEAD_LABEL.match(line)):
            keywords = " ".join(line[m.end() :].split())
        else:
            problems.append(f"{where}: no translation of the keyword line")
    return text, f"{title}{end}" if title else "", keywords


def translated_title(fu: FollowUp, tr: Callable[[str], str]) -> str:
    """A follow-up's translated question: its admonition title without the translated
    "Follow-up:" label (the English question where there is no translation)."""
    translated = tr(message(fu.title))
    if translated == message(fu.title):
        return fu.question
    return TITLE_LABEL.sub("", translated, count=1).strip() or fu.question


def translate_blocks(body: str, tr: Callable[[str], str]) -> str:
    """A follow-up's body, paragraph by paragraph (display math is not a message)."""
    blocks = re.split(r"\n[ \t]*\n", body)
    return "\n\n".join(b if b.lstrip().startswith("$$") else tr(message(b)) for b in blocks)


def render_answers(
    render: Renderer,
    chapter: str,
    answers: list[Answer],
    tr: Callable[[str], str] | None,
    where: str,
    problems: list[str] | None = None,
) -> tuple[str, list[str], list[str]]:
    """One label's answer paragraphs as HTML (each led by its qualifier when there are several)
    and the keywords written under them, as written (Markdown) and as HTML. With ``tr``, the
    translated paragraphs and keyword lines."""
    parts, keywords, sources = [], [], []
    for a in answers:
        if tr is None:
            text, line = a.text, a.keywords or ""
            title = f"{a.title[:1].upper()}{a.title[1:]}." if a.title else ""
        else:
            text, title, line = translated_answer(
                a, tr, problems if problems is not None else [], where
            )
        if len(answers) > 1 and title:
            text = f"**{title}** {text}"
        parts.append(render.block(chapter, text, where))
        for k in split_keywords(line):
            k_html = render.inline(chapter, k, where)
            if k_html not in keywords:
                keywords.append(k_html)
                sources.append(k)
    return "\n".join(parts), sources, keywords


def build_cards(
    glue_dir: Path | None = GLUE_DIR,
    strict: bool = False,
    translate: Callable[[str, str], str] | None = None,
) -> tuple[list[dict], list[str]]:
    """Every card, in book order, and the problems found (``strict`` raises on them)."""
    catalogue_text = (BOOK / "questions.yml").read_text(encoding="utf-8")
    questions = load_questions()
    freq = frequencies(
        questions, parse_concepts(catalogue_text, {q["id"] for q in questions.values()})
    )
    render = Renderer(glue_dir, translate)
    problems: list[str] = []
    cards: list[dict] = []
    seen: dict[str, str] = {}
    for path in sorted(CHAPTERS.glob("*.md")):
        chapter = parse_chapter(path)
        number = int(m.group(1)) if (m := re.match(r"^(\d+)", path.stem)) else None
        docname = f"book/chapters/{path.stem}"
        tr = functools.partial(translate, docname) if translate else None
        for section in chapter.sections:
            where = f"{path.name}:{section.line} ({section.labels[0]})"
            if not section.answers:
                problems.append(f"{where}: no '{ANSWER}' paragraph")
            for a in section.answers:
                if a.keywords is None:
                    problems.append(f"{path.name}:{a.line}: no '{KEYWORDS}' line after the answer")
                for name in a.names:
                    if name not in section.labels:
                        problems.append(f"{path.name}:{a.line}: names {name}, not a label here")
            if section.stray_keywords:
                problems.append(f"{where}: a '{KEYWORDS}' line with no answer above it")
            url = f"book/chapters/{path.stem}.html#{anchor(section.labels[0])}"
            common = {
                "chapter": path.stem,
                "chapter_number": number,
                "chapter_title": tr(chapter.title) if tr else chapter.title,
                "heading": tr(section.heading) if tr else section.heading,
            }
            for label in section.labels:
                if label in seen:
                    raise PracticeError(f"{where}: label {label} also defined in {seen[label]}")
                seen[label] = path.name
                q = questions.get(label)
                if q is None:
                    problems.append(f"{where}: label {label} is not in book/questions.yml")
                    q = {"id": label, "seed": "added", "en": section.heading, "topic": ""}
                added = q["seed"] == "added"
                answer_html, keywords, keywords_html = render_answers(
                    render, path.stem, section.answers_for(label), tr, where, problems
                )
                if section.answers and not answer_html:
                    problems.append(f"{where}: the answer of {label} is empty")
                cards.append(
                    {
                        "id": label,
                        "kind": "question",
                        **common,
                        "topic": q.get("topic", ""),
                        "question_zh": "" if added else q.get("heading", ""),
                        # the English heading: the catalogue's wording may stand in for one
                        "question_en": question_en(q, section.heading),
                        "answer_html": answer_html,
                        "keywords": keywords,
                        "keywords_html": keywords_html,
                        "url": f"book/chapters/{path.stem}.html#{anchor(label)}",
                        "frequency": freq.get(q["id"], 0),
                        "erratum": q.get("seed_answer_kind") == "error",
                        "erratum_kind": q.get("erratum_kind"),
                        "source": q["seed"] if added else q["seed"][:3],
                    }
                )
            first = cards[-len(section.labels)]
            for n, fu in enumerate(section.followups, 1):
                fwhere = f"{where} follow-up {n}"
                if not fu.body:
                    problems.append(f"{fwhere}: empty answer")
                cards.append(
                    {
                        "id": f"{section.labels[0]}/f{n}",
                        "kind": "followup",
                        "parent": section.labels[0],
                        **common,
                        "topic": first["topic"],
                        # a translated edition shows the translated follow-up beside the English
                        "question_zh": (
                            _plain(render.inline(path.stem, translated_title(fu, tr), fwhere))
                            if tr
                            else ""
                        ),
                        "question_en": _plain(render.inline(path.stem, fu.question, fwhere)),
                        "answer_html": render.block(
                            path.stem, translate_blocks(fu.body, tr) if tr else fu.body, fwhere
                        ),
                        "keywords": [],
                        "keywords_html": [],
                        "url": url,
                        "frequency": first["frequency"],
                        "erratum": False,
                        "erratum_kind": None,
                        "source": first["source"],
                    }
                )
    problems += render.problems
    if strict:
        missing = sorted(set(questions) - set(seen))
        problems += [f"book/questions.yml: {label} has no labelled section" for label in missing]
        if problems:
            raise PracticeError("\n".join(problems))
    return cards, problems


def catalogue_translator(folder: Path) -> Callable[[str, str], str]:
    """``translate(docname, msgid)`` for :func:`build_cards`: the translation of a message in
    ``<folder>/<docname>.po`` as Sphinx applies it (a message with no translation, or only a
    fuzzy one, which Sphinx does not compile, stays the msgid: the English)."""
    from babel.messages.pofile import read_po

    catalogues: dict[str, dict[str, str]] = {}

    def translate(docname: str, msgid: str) -> str:
        if docname not in catalogues:
            found: dict[str, str] = {}
            path = folder / f"{docname}.po"
            if path.exists():
                with path.open("rb") as f:
                    for m in read_po(f):
                        if isinstance(m.id, str) and m.id and not m.fuzzy:
                            if isinstance(m.string, str) and m.string.strip():
                                found[m.id] = m.string
            catalogues[docname] = found
        return catalogues[docname].get(msgid, msgid)

    return translate


def dumps(cards: list[dict]) -> str:
    """A JSON array, one card per line."""
    lines = [json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cards]
    return "[\n" + ",\n".join(lines) + "\n]\n"


# ---- the Anki deck ----------------------------------------------------------------------------

ANKI_MODEL_ID = 1_742_209_023  # fixed, so that re-imported decks update their cards
ANKI_DECK_ID = 2_031_648_517
# Each edition is a deck of its own (its own ids, name and labels), so that importing both
# into one collection keeps two decks instead of the second overwriting the first's notes.
ANKI_EDITIONS = {
    "en": {
        "model_id": ANKI_MODEL_ID,
        "deck_id": ANKI_DECK_ID,
        "deck": "CNN interview questions (cnn-course)",
        "guid_prefix": "",
        "keywords": "Keywords:",
        "erratum": "The common answer to this question is wrong ({kind}); see the errata.",
    },
    "zh": {
        "model_id": 1_742_209_024,
        "deck_id": 2_031_648_518,
        "deck": "CNN 面试题（cnn-course 中文版）",
        "guid_prefix": "zh:",
        "keywords": "关键词：",
        "erratum": "这道题的常见答案有误（{kind}），见勘误表。",
    },
}
ANKI_FIELDS = ["Id", "Chapter", "Topic", "QuestionZh", "QuestionEn", "Answer", "Keywords"]
ANKI_FIELDS += ["Section", "Frequency", "Erratum"]
ANKI_CSS = """.card { font-family: sans-serif; font-size: 18px; text-align: left; }
.zh { font-size: 22px; } .en { color: #444; } .kw { color: #06c; } .meta { color: #888;
font-size: 13px; } .erratum { color: #b00; }"""
ANKI_FRONT = """<div class="meta">{{Chapter}} &middot; {{Topic}}</div>
{{#QuestionZh}}<div class="zh">{{QuestionZh}}</div>{{/QuestionZh}}
<div class="en">{{QuestionEn}}</div>"""
ANKI_BACK = """{{FrontSide}}<hr id="answer">{{Answer}}
{{#Keywords}}<p class="kw"><b>KEYWORDS_LABEL</b> {{Keywords}}</p>{{/Keywords}}
{{#Erratum}}<p class="erratum">{{Erratum}}</p>{{/Erratum}}
<p class="meta">{{Section}}</p>"""


def _anki_text(answer_html: str) -> str:
    """Anki has no site to link into: links become their text."""
    return re.sub(r"<a\b[^>]*>(.*?)</a>", r"\1", answer_html, flags=re.S)


def write_apkg(cards: list[dict], path: Path, language: str = "en") -> None:
    """Write the cards as an Anki deck (genanki); math stays ``\\(...\\)``, which Anki
    typesets with its own MathJax. ``language`` ("en" or "zh") picks the edition's deck."""
    import genanki

    edition = ANKI_EDITIONS[language]
    model = genanki.Model(
        edition["model_id"],
        "cnn-course interview card" + ("" if language == "en" else f" ({language})"),
        fields=[{"name": n} for n in ANKI_FIELDS],
        templates=[
            {
                "name": "Recall",
                "qfmt": ANKI_FRONT,
                "afmt": ANKI_BACK.replace("KEYWORDS_LABEL", edition["keywords"]),
            }
        ],
        css=ANKI_CSS,
    )
    deck = genanki.Deck(edition["deck_id"], edition["deck"])
    for card in cards:
        chapter = f"{card['chapter_number']}. {card['chapter_title']}"
        erratum = edition["erratum"].format(kind=card["erratum_kind"]) if card["erratum"] else ""
        fields = [
            card["id"],
            html.escape(chapter),
            html.escape(card["topic"]),
            html.escape(card["question_zh"]),
            html.escape(card["question_en"]),
            _anki_text(card["answer_html"]),
            ", ".join(_anki_text(k) for k in card["keywords_html"]),
            html.escape(f"{chapter}: {card['heading']}"),
            str(card["frequency"]),
            erratum,
        ]
        tags = [card["topic"] or "untagged", card["chapter"], card["kind"]]
        tags += ["errata"] if card["erratum"] else []
        deck.add_note(
            genanki.Note(
                model=model,
                fields=fields,
                guid=genanki.guid_for(edition["guid_prefix"] + card["id"]),
                tags=tags,
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    genanki.Package(deck).write_to_file(str(path))


# ---- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="fail on any missing piece")
    parser.add_argument("--check", action="store_true", help="only report whether it is stale")
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON file to write")
    parser.add_argument("--apkg", type=Path, help="also write the Anki deck here")
    parser.add_argument(
        "--glue", type=Path, default=GLUE_DIR, help="where the build wrote <chapter>.glue.json"
    )
    args = parser.parse_args(argv)
    try:
        cards, problems = build_cards(args.glue, strict=args.strict)
    except PracticeError as exc:
        print(f"build_practice: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"build_practice: warning: {problem}", file=sys.stderr)
    text = dumps(cards)
    stale = not args.out.exists() or args.out.read_text(encoding="utf-8") != text
    if args.check:
        if stale:
            print(f"stale: {args.out} (run python tools/build_practice.py)")
        return 1 if stale else 0
    if stale:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out} ({len(cards)} cards, {len(text.encode())} bytes)")
    if args.apkg:
        write_apkg(cards, args.apkg)
        print(f"wrote {args.apkg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
