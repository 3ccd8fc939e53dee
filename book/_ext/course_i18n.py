"""Sphinx extension for the course's editions: one source, an English and a Chinese website.

The Chinese edition is the same Sphinx project built with ``language=zh_CN`` into
``_build/html/zh/`` (``tools/i18n.py build``); its text comes from the gettext catalogues in
``locales/zh_CN/LC_MESSAGES/`` (one ``.po`` file per source document), and everything else
(code cells, their outputs, figures, formulas, labels) is shared. This extension:

- keeps out of the catalogues what must not be translated: notebook cells and their outputs,
  display formulas, and messages with no English word in them (ids, references, numbers, the
  original Chinese interview questions), so a translator sees only prose;
- lets ``{glue:text}`` work inside a translated paragraph (a translated message is parsed on
  its own, without the notebook; its glue becomes a reference to this document's glue data);
- translates the captions of the table of contents, which sphinx-external-toc adds late;
- writes a translated edition's notebook outputs next to the English ones, not into the
  English site;
- makes Sphinx's Chinese search index fast to build (a set, not a list, of Latin words);
- puts a language switcher in the header of every page, linking to the same page of the other
  edition with a relative URL (so it works from ``file://`` and on any host), and translates
  the few strings of site chrome that the extensions add.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.locale import init as init_locale
from sphinx.transforms import SphinxTransform
from sphinx.util.i18n import docname_to_domain

ENGLISH = "en"
# The other editions: language code -> folder of the English site that holds the edition.
TRANSLATIONS = {"zh_CN": "zh"}
TEMPLATES = Path(__file__).resolve().parent / "templates"
SWITCHER = "course-language-switch.html"

# Site chrome the course's extensions add (launch buttons, switcher), per edition.
CHROME = {
    "zh_CN": {
        "Run this chapter": "运行本章",
        "Open this chapter as a notebook in Colab": "在 Colab 中以笔记本形式打开本章",
        "Open this chapter as a notebook on Binder": "在 Binder 中以笔记本形式打开本章",
        "Download this chapter as a notebook": "下载本章的笔记本文件",
    },
}
# The switcher as each edition shows it: it names the *other* edition, in that edition's
# language, so a reader who cannot read this page can still find the way to the other one.
SWITCH = {
    ENGLISH: {"label": "中文", "lang": "zh-CN", "title": "阅读本页的中文版"},
    "zh_CN": {"label": "English", "lang": "en", "title": "Read this page in English"},
}

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
# MyST roles: the target of a role shows no words of its own ({ref}`q000-3-6`); an explicit
# title does ({ref}`the pooling section <q000-3-6>`).
ROLE = re.compile(r"\{[\w:.+-]+\}`([^`]*)`")
CODE = re.compile(r"``.*?``|`[^`]*`", re.S)
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$", re.S)
URL = re.compile(r"<?https?://[^\s>)]+>?")
# Where Chinese text is quoted (the sources' questions, the glossary's Chinese column).
QUOTE_CONTEXTS = (nodes.block_quote, nodes.entry, nodes.term)


def edition(app) -> str:
    """The language of the edition being built: ``en`` or a key of ``TRANSLATIONS``."""
    language = app.config.language or ENGLISH
    return language if language in TRANSLATIONS else ENGLISH


def _role_title(match: re.Match) -> str:
    """A role's own words: its explicit title, unless that only repeats the target."""
    title, _, target = match.group(1).rpartition("<")
    return title if title.strip() and title.strip() != target.rstrip(">").strip() else ""


def words(text: str) -> str:
    """The prose of a message: without code, math, URLs and role targets."""
    return URL.sub("", MATH.sub("", CODE.sub("", ROLE.sub(_role_title, text))))


def has_prose(text: str, quoted: bool = False) -> bool:
    """Whether a message has anything to translate: an English word outside code, math and
    role targets. ``quoted``: the message is a quotation, a table cell or a definition term,
    kept as written when it has any Chinese in it (a source's question, a Chinese term)."""
    prose = words(text)
    if quoted and CJK.search(prose):
        return False
    return bool(LATIN_WORD.search(prose))


class KeepUntranslated(SphinxTransform):
    """Mark what has nothing to translate, before the catalogues are read (``Locale``, 20) or
    written (the gettext builder): Sphinx leaves a node with ``translatable=False`` alone."""

    default_priority = 15

    def apply(self, **kwargs) -> None:
        for cell in self.document.findall(nodes.container):
            if cell.get("nb_element") == "cell_code":
                for node in cell.findall(nodes.Element):
                    node["translatable"] = False
        for node in self.document.findall(nodes.math_block):
            node["translatable"] = False
        # A Markdown table inside a directive (``{table}``) is parsed without source info,
        # which Sphinx takes for generated text and leaves out: give its cells their page.
        for table in self.document.findall(nodes.table):
            for node in table.findall(nodes.TextElement):
                if not node.source and not isinstance(node, nodes.Inline):
                    node.source = table.source or self.document["source"]
                    node.line = node.line or table.line
        for node in self.document.findall(nodes.TextElement):
            if node.get("translatable", True) is False or isinstance(node, nodes.Inline):
                continue
            if not isinstance(node, (nodes.paragraph, nodes.title, nodes.term, nodes.caption)):
                continue
            text = node.rawsource or node.astext()
            quoted = any(isinstance(a, QUOTE_CONTEXTS) for a in (node, *_ancestors(node)))
            if not has_prose(text, quoted):
                node["translatable"] = False


class TranslateCaptions(SphinxTransform):
    """Translate the captions of the table of contents ("Part I: ..."): sphinx-external-toc
    inserts its toctrees (priority 100) after Sphinx has translated the page (20)."""

    default_priority = 110

    def apply(self, **kwargs) -> None:
        if self.config.language not in TRANSLATIONS:
            return
        domain = docname_to_domain(self.env.docname, self.config.gettext_compact)
        dirs = [str(Path(self.env.srcdir) / d) for d in self.config.locale_dirs]
        catalog, found = init_locale(dirs, self.config.language, domain)
        if not found:
            return
        for toctree in self.document.findall(addnodes.toctree):
            caption = toctree.get("rawcaption") or toctree.get("caption")
            if caption:
                toctree["caption"] = catalog.gettext(caption)


def _ancestors(node: nodes.Node):
    parent = node.parent
    while parent is not None:
        yield parent
        parent = parent.parent


def _translated_message(document: nodes.document) -> bool:
    """A translated message is parsed as a document of its own (Sphinx's ``Locale``)."""
    source = getattr(document, "current_source", None) or ""
    return "nb_renderer" not in document and str(source).endswith("<translated>")


def _patch_glue() -> None:
    """``{glue:text}`key``` (and ``{glue}``) inside a translated message: the message has no
    notebook, so point the role at this document's glue data, which myst-nb resolves after
    parsing (as it does for ``{glue:text}`other_doc::key```)."""
    from myst_nb.ext.glue import roles

    def wrap(cls, split_format: bool) -> None:
        run = cls.run
        if getattr(run, "_course_i18n", False):
            return

        def patched(self):
            if "::" not in self.text and _translated_message(self.document):
                env = self.document.settings.env
                doc = "/" + env.doc2path(env.docname, False)
                if split_format:  # key or key:format, as PasteTextRole reads it
                    key, _, fmt = (
                        self.text.rpartition(":") if ":" in self.text else (self.text, "", "s")
                    )
                    self.text = f"{doc}::{key}:{fmt}"
                else:
                    self.text = f"{doc}::{self.text}"
            return run(self)

        patched._course_i18n = True
        cls.run = patched

    wrap(roles.PasteTextRole, split_format=True)
    wrap(roles.PasteRoleAny, split_format=False)


def _patch_chinese_search() -> None:
    """Sphinx 7's Chinese search keeps every Latin word it has seen in a list and looks each
    new word up in it: quadratic, two thirds of the Chinese build's time. A set gives the same
    index (only membership is asked), as later Sphinx versions do."""
    from sphinx.search import zh

    if not isinstance(zh.SearchChinese.latin_terms, list):
        return

    def split(self, input: str) -> list[str]:
        chinese = list(zh.jieba.cut_for_search(input)) if zh.JIEBA else []
        latin = [term.strip() for term in self.latin1_letters.findall(input)]
        self.latin_terms.update(latin)
        return chinese + latin

    zh.SearchChinese.latin_terms = set()
    zh.SearchChinese.split = split


def _configure(app, config) -> None:
    config.templates_path = [*config.templates_path, str(TEMPLATES)]
    options = config.html_theme_options
    end = options.get("article_header_end") or ["article-header-buttons.html"]
    if isinstance(end, str):
        end = [item.strip() for item in end.split(",") if item.strip()]
    if SWITCHER not in end:
        options["article_header_end"] = [*end, SWITCHER]


def _output_folder(app) -> None:
    """myst-nb writes a page's notebook, glue data and images to ``<outdir>/../jupyter_execute``:
    for ``_build/html/zh`` that would be inside the English site. Use the English folder (the
    same executed notebooks, from the same cache)."""
    if edition(app) == ENGLISH or not hasattr(app.env, "mystnb_config"):
        return
    folder = Path(app.outdir).parent.parent / "jupyter_execute"
    app.env.mystnb_config = app.env.mystnb_config.copy(output_folder=str(folder.resolve()))


def other_edition_url(app, pagename: str) -> str:
    """The relative URL of ``pagename`` in the other edition."""
    up = "../" * pagename.count("/")
    here = edition(app)
    if here == ENGLISH:
        return f"{up}{TRANSLATIONS['zh_CN']}/{pagename}.html"
    return f"{up}../{pagename}.html"


def _switcher(app, pagename, templatename, context, doctree) -> None:
    switch = SWITCH[edition(app)]
    context["course_switch"] = {**switch, "url": other_edition_url(app, pagename)}


def _translate_chrome(app, pagename, templatename, context, doctree) -> None:
    here = edition(app)
    if here == ENGLISH:
        return
    chrome = CHROME.get(here, {})
    for button in context.get("header_buttons", []):
        if button.get("label") != "launch-buttons":
            continue
        button["tooltip"] = chrome.get(button.get("tooltip"), button.get("tooltip"))
        for link in button.get("buttons", []):
            link["tooltip"] = chrome.get(link.get("tooltip"), link.get("tooltip"))
            url = link.get("url", "")
            if "://" not in url and "notebooks/" in url:
                # one copy of the notebooks, in the English site
                link["url"] = "../" + url


def setup(app):
    # A change to these rules changes what the catalogues hold: re-read every document then.
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    app.add_config_value("course_i18n_rules", digest, "env")
    _patch_glue()
    _patch_chinese_search()
    app.add_transform(KeepUntranslated)
    app.add_transform(TranslateCaptions)
    app.connect("config-inited", _configure)
    app.connect("builder-inited", _output_folder, priority=600)
    # before the theme drops header templates that render empty (500)
    app.connect("html-page-context", _switcher, priority=450)
    # after the launch links (502), before the script clean-up (900)
    app.connect("html-page-context", _translate_chrome, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
