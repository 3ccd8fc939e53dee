"""Sphinx extension for the course website: offline math and notebook launch links.

- MathJax 3 is served from the site itself (copied from the ``django-static-mathjax`` wheel,
  which ships MathJax's files), so math renders with no network and no CDN.
- Two editions from one source (``course_i18n.py``): the Chinese site in ``_build/html/zh`` gets
  MathJax, the exercises and the Practice page's cards too, and links to the English site's
  notebooks (one copy).
- ``book/_static`` holds the site's own files: ``course.css`` (on every page: wide tables and
  code cells scroll sideways on a phone) and the Practice page's app (``practice.js``,
  ``practice.css`` and the vendored ``ts-fsrs`` scheduler, loaded on that page only). After the
  build, ``tools/build_practice.py`` writes the page's cards (``book/practice.json``, with the
  values the chapters glued in this build) and the Anki deck (``book/practice.apkg``).
- Every chapter is published as an ``.ipynb`` twin generated from its MyST source (with a first
  cell that installs the package), under ``notebooks/``; the student exercise notebooks under
  ``exercises/``. Each chapter page gets "Colab" and "Binder" links to its twin on the
  published branch, and a download link. Each edition's site also gets all of them, with the
  data they read, as one zip (``cnn-course-notebooks.zip``, linked from the front page and the
  how-to page). The single-page build that ``tools/book_pdf.py`` prints gets MathJax only.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from course_i18n import ENGLISH, edition
from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_BRANCH = "gh-pages"
# MathJax files the pages need: the tex-chtml bundle, the TeX extensions it autoloads, the
# CommonHTML fonts, and the menu/accessibility components loaded on demand.
MATHJAX_KEEP = ("tex-chtml.js", "input", "output", "ui", "a11y", "adaptors")
STATIC = ROOT / "book" / "_static"
# The notebooks archive, at the top of each edition's site.
ARCHIVE = "cnn-course-notebooks.zip"
ARCHIVE_README = """\
The notebooks of the course "CNN Interview Questions, Answered with Code".

notebooks/  every chapter as a Jupyter notebook
data/       the cached results the chapters read (as ../data/...)
exercises/  the graded exercises

The first cell of each chapter installs the course package (pip install
"cnn-course @ git+https://github.com/cnn-course/cnn-course"); in a clone of the
repository, run `make book` or `pip install -e .` instead and skip that cell.
Grade the exercises (in this folder) with: cnn-course grade exercises
"""
PRACTICE_PAGE = "book/practice"


def _mathjax_source() -> Path:
    import mathjax  # the django-static-mathjax wheel's package: only static files

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _configure(app, config) -> None:
    config.mathjax_path = "mathjax/tex-chtml.js"
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def _practice_math(app, doctree) -> None:
    """The Practice page typesets the answers it shows, so it loads MathJax like a page with
    math (Sphinx adds the script only where the source has math)."""
    if app.env.docname == PRACTICE_PAGE:
        app.env.get_domain("math").data["has_equations"][PRACTICE_PAGE] = True


def _practice_assets(app, pagename, templatename, context, doctree) -> None:
    if pagename == PRACTICE_PAGE:
        app.add_css_file("practice.css")
        app.add_js_file("vendor/ts-fsrs.umd.js")
        app.add_js_file("practice.js")


def _write_practice(app, out: Path) -> None:
    """The Practice page's cards and the Anki deck, from the chapters and this build's glue.

    A translated edition writes its own copy under its folder, with the answers, keywords,
    headings and follow-ups of its gettext catalogues (the messages its pages show)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_practice
    finally:
        sys.path.pop(0)
    translate = None
    if edition(app) != ENGLISH:
        folders = [
            Path(app.srcdir) / d / app.config.language / "LC_MESSAGES"
            for d in app.config.locale_dirs
        ]
        translate = build_practice.catalogue_translator(next(f for f in folders if f.is_dir()))
    cards, problems = build_practice.build_cards(
        Path(app.env.mystnb_config.output_folder), translate=translate
    )
    for problem in problems:
        logger.info(f"practice: {problem}")
    text = build_practice.dumps(cards)
    target = out / "book"
    target.mkdir(parents=True, exist_ok=True)
    (target / "practice.json").write_text(text, encoding="utf-8")
    if (app.config.language or "en") == "en":
        # the source copy too, so that it matches what the site serves (tests/test_practice.py)
        build_practice.OUT.write_text(text, encoding="utf-8")
    language = "en" if edition(app) == ENGLISH else "zh"
    build_practice.write_apkg(cards, target / "practice.apkg", language=language)


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated script entries and give the theme its default colour mode.

    The thebe settings are registered twice by the stack, which declares a ``const`` twice
    and raises an error in every page's console.
    """
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # the same inline script is registered once with filename None and once with ""
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique
    # Without a default the theme stores an empty mode and logs a console error on every page.
    context.setdefault("default_mode", "auto")


def _repo_parts(app) -> tuple[str, str]:
    url = app.config.html_theme_options.get("repository_url", "").rstrip("/")
    org, repo = url.split("/")[-2:]
    return org, repo


def _launch_links(app, pagename, templatename, context, doctree) -> None:
    if not pagename.startswith("book/chapters/"):
        return
    org, repo = _repo_parts(app)
    stem = Path(pagename).name
    blob = f"{org}/{repo}/blob/{PUBLISHED_BRANCH}/notebooks/{stem}.ipynb"
    depth = pagename.count("/")
    buttons = [
        {
            "type": "link",
            "text": "Colab (GPU)",
            "tooltip": "Open this chapter as a notebook in Colab",
            "icon": "_static/images/logo_colab.png",
            "url": f"https://colab.research.google.com/github/{blob}",
        },
        {
            "type": "link",
            "text": "Binder",
            "tooltip": "Open this chapter as a notebook on Binder",
            "icon": "_static/images/logo_binder.svg",
            "url": f"https://mybinder.org/v2/gh/{org}/{repo}/{PUBLISHED_BRANCH}"
            f"?labpath=notebooks/{stem}.ipynb",
        },
        {
            "type": "link",
            "text": ".ipynb",
            "tooltip": "Download this chapter as a notebook",
            "icon": "fas fa-download",
            "url": "../" * depth + f"notebooks/{stem}.ipynb",
        },
    ]
    context["header_buttons"].append(
        {
            "type": "group",
            "tooltip": "Run this chapter",
            "icon": "fas fa-rocket",
            "buttons": buttons,
            "label": "launch-buttons",
        }
    )


def _publish(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    source = _mathjax_source()
    target = out / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    for name in MATHJAX_KEEP:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, target / name, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, target / name)
    if app.builder.name != "html":  # the single-page build of the PDF needs MathJax only
        return
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from notebooks import write_twins
    finally:
        sys.path.pop(0)
    if edition(app) == ENGLISH:  # one copy of the notebooks: the Chinese site links to it
        write_twins(out, colab=True)
    _write_practice(app, out)
    exercises = out / "exercises"
    exercises.mkdir(exist_ok=True)
    for nb in sorted((ROOT / "exercises").glob("*.ipynb")):
        shutil.copy2(nb, exercises / nb.name)
    _write_archive(out / ARCHIVE, write_twins)
    (out / ".nojekyll").touch()


def _write_archive(target: Path, write_twins) -> None:
    """Every chapter notebook (as published), the data they read and the exercise notebooks,
    as one zip in the edition's site (its front page and how-to page link to it)."""
    import tempfile
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        write_twins(Path(tmp), colab=True)
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        entries = [(p, p.relative_to(tmp).as_posix()) for p in files]
        entries += [(nb, f"exercises/{nb.name}") for nb in sorted(ROOT.glob("exercises/*.ipynb"))]
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(_zip_entry("cnn-course/README.txt"), ARCHIVE_README)
            for path, name in entries:  # fixed timestamps: the same sources give the same zip
                archive.writestr(_zip_entry(f"cnn-course/{name}"), path.read_bytes())


def _zip_entry(name: str):
    import zipfile

    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def setup(app):
    app.setup_extension("course_i18n")  # the editions: catalogues, switcher (course_i18n.py)
    app.connect("config-inited", _configure)
    app.add_css_file("course.css")
    app.connect("doctree-read", _practice_math)
    app.connect("html-page-context", _practice_assets)
    app.connect("html-page-context", _launch_links, priority=502)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("build-finished", _publish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
