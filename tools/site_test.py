"""End-to-end test of the built website in headless Chromium (Debian's package).

``python tools/site_test.py _build/html`` serves the site on 127.0.0.1, opens every page and
checks that it loads without console errors, fetches nothing from outside the site, has a
title, typesets its math (MathJax served locally), loads its images, and that its internal
links resolve (file and anchor); chapter pages must have previous/next links and launch links
to notebooks that exist in the site; the search page must return results.

The Chinese edition (``zh/``, built from the same source with the same paths) is checked page
by page in the same way, and also: every page declares its language (``<html lang="en">``, and
``lang="zh-CN"`` under ``zh/``); its language switcher links to the same page of the other
edition, whose switcher links back; a Chinese page loads MathJax wherever its English twin does;
a search for 卷积 in the Chinese edition returns results; and in CI a CJK font is installed
(Debian's ``fonts-noto-cjk``), so that Chinese renders as glyphs, not as boxes.

The Practice page is driven as a reader would, at phone width (375 px): its card count is that
of ``book/practice.json``; space reveals a card's answer (math typeset), 3 rates it, and the
progress survives a reload; damaged saved progress is reset with a visible message; its link
to the section resolves. Neither it nor the question index may scroll sideways at that width.
The Chinese edition's Practice page has the same cards (ids) as the English one; its buttons,
filters and stats are in Chinese, a revealed answer and its keywords are Chinese text, and the
card's link leads to the section in the Chinese edition.
``--screenshots DIR`` saves the Practice page at phone width there.

Reader formats: every animation on a chapter page plays (pressing Play changes its frame),
there are at least 8 of them and one in each of chapters 2, 7 and 8; each edition's PDF and
notebooks archive are linked from its front and how-to pages and served; the PDF is a PDF with
every chapter's title and no raw TeX (read back with poppler's ``pdftotext``, required in CI);
the zip holds every chapter notebook and exercise notebook.

Where Chromium is not installed it says so and exits 0, except when ``CI`` is set: there the
browser test must run.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from html import unescape
from pathlib import Path
from urllib.parse import quote, unquote, urldefrag, urljoin, urlparse

REPOSITORY = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SEARCH_TERM = "convolution"
# The Chinese edition: the same pages under zh/ (tools/i18n.py build).
ZH = "zh/"
ZH_SEARCH_TERM = "卷积"
SWITCHER = re.compile(r'<a href="([^"]+)" class="btn btn-sm course-language-switch')
HTML_LANG = re.compile(r'<html[^>]*\slang="([^"]+)"')
PRACTICE = "book/practice.html"
PRACTICE_KEY = "cnn-course.practice.v1"
QUESTION_INDEX = "book/appendix/question_index.html"
# Reader formats, at the top of each edition's site: the PDF (tools/book_pdf.py) and the
# notebooks archive (book/_ext/course_site.py), linked from these pages.
PDF = "cnn-course.pdf"
ARCHIVE = "cnn-course-notebooks.zip"
FORMAT_PAGES = ("book/intro.html", "book/how_to_use.html")
# Animations of convolution arithmetic (cnn_course.animate): how many, and where at least one.
MIN_ANIMATIONS = 8
ANIMATED_CHAPTERS = ("02_convolution_layer", "07_conv_variants", "08_up_down_sampling")
# TeX that MathJax should have consumed: its delimiters and commands no code cell prints.
RAW_TEX = re.compile(r"\\[()\[\]]|\\frac|\\begin\{|\\mathrm|\\mathbf|\\text\{|\\sum_|\$\$")
DOLLAR_MATH = re.compile(r"\$[^$\s][^$\n]{0,80}?\$")
PHONE = {"width": 375, "height": 740}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test reports failures itself
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def internal_link_problems(root: Path, page: Path, html: str) -> list[str]:
    """Relative links of ``page`` whose target file (or #anchor in it) does not exist."""
    problems = []
    for href in re.findall(r'<a [^>]*href="([^"]+)"', html):
        if urlparse(href).scheme or href.startswith(("mailto:", "javascript:", "//")):
            continue
        path, anchor = urldefrag(href)
        target = (page.parent / unquote(path)).resolve() if path else page
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            problems.append(f"broken link {href!r}")
        elif anchor and target.suffix == ".html":
            text = target.read_text(encoding="utf-8", errors="replace")
            if f'id="{anchor}"' not in text:
                problems.append(f"missing anchor {href!r}")
    return problems


def check_page(browser_page, url: str, rel: str, root: Path, base: str) -> list[str]:
    problems: list[str] = []
    errors: list[str] = []
    external: list[str] = []
    browser_page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    browser_page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith("data:"):
            return r.continue_()
        external.append(r.request.url)
        return r.abort()

    html_file = root / rel
    html = html_file.read_text(encoding="utf-8")
    if 'http-equiv="Refresh"' in html or 'http-equiv="refresh"' in html:
        return internal_link_problems(root, html_file, html)  # a redirect page: only its target
    browser_page.route("**/*", route)
    browser_page.goto(url, wait_until="load")
    if "mathjax/tex-chtml.js" in html:
        browser_page.wait_for_function(
            "window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20000
        )
        browser_page.evaluate("MathJax.startup.promise")
        # the Practice page typesets each answer when it is revealed (checked below)
        if rel.removeprefix(ZH) != PRACTICE and browser_page.locator("mjx-container").count() == 0:
            problems.append("math present but nothing typeset")
    broken_images = browser_page.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
        ".map(i => i.getAttribute('src'))"
    )
    problems += [f"image did not load: {src}" for src in broken_images]
    if not (browser_page.title() or "").strip():
        problems.append("page has no title")
    # A Markdown table that a cell displayed but nothing rendered shows up as "| a | b |" text.
    raw_tables = browser_page.evaluate(
        "Array.from(document.querySelectorAll('article p'))"
        ".filter(p => /^\\s*\\|.*\\|\\s*$/m.test(p.textContent)).length"
    )
    if raw_tables:
        problems.append(f"{raw_tables} Markdown table(s) shown as text, not rendered")
    problems += [f"console error: {e}" for e in errors]
    problems += [f"fetched from outside the site: {u}" for u in external]
    problems += internal_link_problems(root, html_file, html)
    if (root / ZH / "index.html").exists():
        problems += edition_problems(root, rel, html)
    if rel.removeprefix(ZH).startswith("book/chapters/"):
        problems += chapter_problems(browser_page, root)
    else:
        problems += launch_problems(browser_page, root)[0]
    return problems


def twin(rel: str) -> str:
    """The same page in the other edition."""
    return rel.removeprefix(ZH) if rel.startswith(ZH) else ZH + rel


def edition_problems(root: Path, rel: str, html: str) -> list[str]:
    """The page's language, its switcher to its twin in the other edition and back, and (for
    a Chinese page) MathJax wherever the English twin has math."""
    problems = []
    chinese = rel.startswith(ZH)
    lang = HTML_LANG.search(html)
    expected = "zh-CN" if chinese else "en"
    if not lang or lang.group(1) != expected:
        problems.append(f"<html lang> is {lang and lang.group(1)!r}, expected {expected!r}")
    other = root / twin(rel)
    if not other.exists():
        return problems + [f"no twin page in the other edition: {twin(rel)}"]
    switch = SWITCHER.search(html)
    if not switch:
        return problems + ["no language switcher"]
    if ((root / rel).parent / unquote(switch.group(1))).resolve() != other.resolve():
        problems.append(f"the language switcher links to {switch.group(1)!r}, not {twin(rel)}")
    other_html = other.read_text(encoding="utf-8")
    back = SWITCHER.search(other_html)
    if not back or (other.parent / unquote(back.group(1))).resolve() != (root / rel).resolve():
        problems.append(f"the language switcher of {twin(rel)} does not link back here")
    if chinese and "mathjax/tex-chtml.js" in other_html and "mathjax/tex-chtml.js" not in html:
        problems.append("the English page has math; this one does not load MathJax")
    return problems


def cjk_font_problems() -> list[str]:
    """In CI, Chinese text must render as glyphs: a CJK font is installed."""
    if not os.environ.get("CI"):
        return []
    fc_list = shutil.which("fc-list")
    fonts = ""
    if fc_list:
        fonts = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True)
        fonts = fonts.stdout
    return [] if fonts.strip() else ["no CJK font installed (apt-get install fonts-noto-cjk)"]


def launch_problems(browser_page, root: Path) -> tuple[list[str], int]:
    """Colab links must open a notebook that will exist once the site is published: on the
    published branch (gh-pages, i.e. this site's files) or on main (the repository)."""
    problems = []
    links = browser_page.evaluate(
        "Array.from(document.querySelectorAll('a[href*=\"colab.research.google.com\"]'))"
        ".map(a => a.href)"
    )
    for href in links:
        branch, notebook = href.split("/blob/", 1)[1].split("/", 1)
        base = root if branch == "gh-pages" else REPOSITORY
        if not (base / notebook).exists():
            problems.append(f"Colab link points at a notebook that does not exist: {href}")
    return problems, len(links)


def chapter_problems(browser_page, root: Path) -> list[str]:
    problems, links = launch_problems(browser_page, root)
    if browser_page.locator(".prev-next-area a").count() == 0:
        problems.append("no previous/next links")
    if links == 0:
        problems.append("no Colab launch link")
    return problems


def check_search(browser_page, base: str, edition: str = "", term: str = SEARCH_TERM) -> list[str]:
    browser_page.goto(urljoin(base, f"{edition}search.html?q={quote(term)}"), wait_until="load")
    try:
        browser_page.wait_for_selector("#search-results li", timeout=20000)
    except Exception:
        return [f"search for {term!r} returned no results"]
    return []


def horizontal_overflow(browser_page) -> int:
    """How many CSS pixels the page is wider than the window (0: no sideways scrolling)."""
    return browser_page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth"
    )


def check_practice(browser, root: Path, base: str, screenshots: Path | None) -> list[str]:
    """Drive the Practice page at phone width: reveal, rate, reload, damaged storage."""
    problems: list[str] = []
    cards = json.loads((root / "book" / "practice.json").read_text(encoding="utf-8"))
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base) else r.abort())
    url = urljoin(base, PRACTICE)

    def ready() -> None:
        page.wait_for_selector("#practice-app[data-ready=true]", timeout=20000)

    try:
        page.goto(url, wait_until="load")
        ready()
        total = int(page.text_content("#practice-total") or -1)
        if total != len(cards):
            problems.append(f"the page counts {total} cards, practice.json has {len(cards)}")
        if page.locator("#practice-message.visible").count():
            problems.append("a message shows on a first visit with empty storage")
        if screenshots:
            page.screenshot(path=str(screenshots / "practice-375-question.png"), full_page=True)
        # a chapter whose first card has math, so that typesetting on reveal is checked
        firsts: dict[str, dict] = {}
        for c in cards:
            firsts.setdefault(c["chapter"], c)
        chapter = next(ch for ch, c in firsts.items() if "\\(" in c["answer_html"])
        page.click(".practice-filters summary")
        page.select_option("#practice-chapter", chapter)
        page.evaluate("document.activeElement.blur()")
        first = page.get_attribute("#practice-card", "data-card-id")
        page.keyboard.press("Space")
        page.wait_for_selector("#practice-answer", timeout=5000)
        if first != firsts[chapter]["id"]:
            problems.append(f"the chapter filter shows {first}, not {firsts[chapter]['id']}")
        page.wait_for_selector("#practice-answer mjx-container", timeout=20000)
        link = page.get_attribute(".practice-link a", "href") or ""
        target, anchor = urldefrag(urljoin(url, link))
        target_file = root / unquote(urlparse(target).path.lstrip("/"))
        if not target_file.exists() or f'id="{anchor}"' not in target_file.read_text(
            encoding="utf-8"
        ):
            problems.append(f"the card's link to its section does not resolve: {link}")
        if horizontal_overflow(page) > 0:
            problems.append(f"practice page scrolls sideways at {PHONE['width']} px (answer)")
        if screenshots:
            page.screenshot(path=str(screenshots / "practice-375-answer.png"), full_page=True)
        page.keyboard.press("3")
        page.wait_for_function(
            f"document.querySelector('#practice-card').dataset.cardId !== {json.dumps(first)}",
            timeout=5000,
        )
        saved = json.loads(page.evaluate(f"localStorage.getItem({json.dumps(PRACTICE_KEY)})"))
        if first not in saved.get("cards", {}):
            problems.append(f"rating {first} did not store its schedule")
        page.reload(wait_until="load")
        ready()
        if page.text_content("#practice-reviewed") != "1":
            problems.append("the progress was not kept across a reload")
        if page.get_attribute("#practice-card", "data-card-id") == first:
            problems.append(f"{first}, just rated Good, is shown again at once after a reload")
        page.evaluate(f"localStorage.setItem({json.dumps(PRACTICE_KEY)}, '{{broken')")
        page.reload(wait_until="load")
        ready()
        message = page.locator("#practice-message.visible")
        if message.count() == 0 or "reset" not in (message.text_content() or ""):
            problems.append("damaged saved progress gives no visible message")
        if not page.get_attribute("#practice-card", "data-card-id"):
            problems.append("no card shown after damaged saved progress was reset")
        if horizontal_overflow(page) > 0:
            problems.append(f"practice page scrolls sideways at {PHONE['width']} px")
        page.goto(urljoin(base, QUESTION_INDEX), wait_until="load")
        if horizontal_overflow(page) > 0:
            problems.append(
                f"question index scrolls sideways at {PHONE['width']} px "
                f"({horizontal_overflow(page)} px too wide)"
            )
    except Exception as exc:  # a timeout names the step that failed
        problems.append(f"practice drill failed: {exc}")
    problems += [f"console error: {e}" for e in errors]
    context.close()
    return problems


def check_practice_zh(browser, root: Path, base: str) -> list[str]:
    """The Chinese edition's Practice page: Chinese UI, Chinese answers, links into zh/."""
    problems: list[str] = []
    english = json.loads((root / "book" / "practice.json").read_text(encoding="utf-8"))
    cards = json.loads((root / ZH / "book" / "practice.json").read_text(encoding="utf-8"))
    if [c["id"] for c in cards] != [c["id"] for c in english]:
        problems.append("zh practice.json does not have the English edition's cards (ids)")
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(base) else r.abort())
    url = urljoin(base, ZH + PRACTICE)
    cjk = re.compile(r"[\u4e00-\u9fff]")
    try:
        page.goto(url, wait_until="load")
        page.wait_for_selector("#practice-app[data-ready=true]", timeout=20000)
        total = int(page.text_content("#practice-total") or -1)
        if total != len(cards):
            problems.append(f"the zh page counts {total} cards, its practice.json {len(cards)}")
        for selector in (".practice-filters summary", "#practice-reveal", "#practice-stats"):
            text = page.text_content(selector) or ""
            if not cjk.search(text):
                problems.append(f"the zh page's {selector} is not in Chinese: {text!r}")
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("Space")
        page.wait_for_selector("#practice-answer", timeout=5000)
        answer = page.text_content("#practice-answer") or ""
        if not cjk.search(answer):
            problems.append(f"a revealed answer on the zh page is not Chinese: {answer[:80]!r}")
        for selector in (".practice-ratings", ".practice-link"):
            if not cjk.search(page.text_content(selector) or ""):
                problems.append(f"the zh page's {selector} is not in Chinese")
        link = page.get_attribute(".practice-link a", "href") or ""
        target, anchor = urldefrag(urljoin(url, link))
        path = unquote(urlparse(target).path.lstrip("/"))
        target_file = root / path
        if not path.startswith(ZH) or not target_file.exists():
            problems.append(f"the zh card's link does not lead into the zh edition: {link}")
        elif f'id="{anchor}"' not in target_file.read_text(encoding="utf-8"):
            problems.append(f"the zh card's link to its section does not resolve: {link}")
    except Exception as exc:  # a timeout names the step that failed
        problems.append(f"zh practice drill failed: {exc}")
    problems += [f"console error: {e}" for e in errors]
    context.close()
    return problems


def check_animations(browser, root: Path, base: str) -> tuple[dict[str, list[str]], int]:
    """Every animation on the English chapter pages plays: pressing its Play button changes
    the frame (the src of its image) within a few seconds. Returns problems and the count."""
    failures: dict[str, list[str]] = {}
    total, per_chapter = 0, {}
    for html_file in sorted((root / "book" / "chapters").glob("*.html")):
        if 'class="animation"' not in html_file.read_text(encoding="utf-8"):
            continue
        rel = html_file.relative_to(root).as_posix()
        page = browser.new_page()
        page.goto(urljoin(base, rel), wait_until="load")
        players = page.locator("div.animation")
        problems = []
        for i in range(players.count()):
            img = players.nth(i).locator("img").element_handle()
            page.wait_for_function("img => !!img.getAttribute('src')", arg=img, timeout=10000)
            before = img.get_attribute("src")
            players.nth(i).locator('button[title="Play"]').click()
            try:
                page.wait_for_function(
                    "([img, before]) => img.getAttribute('src') !== before",
                    arg=[img, before],
                    timeout=10000,
                )
            except Exception:
                problems.append(f"animation {i + 1} does not play: its frame never changes")
            players.nth(i).locator('button[title="Pause"]').click()
        total += players.count()
        per_chapter[html_file.stem] = players.count()
        if problems:
            failures[rel] = problems
        page.close()
    missing = [c for c in ANIMATED_CHAPTERS if not per_chapter.get(c)]
    if missing or total < MIN_ANIMATIONS:
        failures["animations"] = [
            f"{total} animations (at least {MIN_ANIMATIONS} wanted); none in {missing}"
        ]
    return failures, total


def _code_text() -> str:
    """The code cells of every chapter (TeX in a plotting label is code, not raw math)."""
    cells = []
    for md in sorted((REPOSITORY / "book" / "chapters").glob("*.md")):
        text = md.read_text(encoding="utf-8")
        cells += re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, re.S)
    return "\n".join(cells)


def _toc_chapters() -> list[str]:
    toc = (REPOSITORY / "_toc.yml").read_text(encoding="utf-8")
    return re.findall(r"file: book/chapters/(\S+)", toc)


def format_problems(root: Path, base: str, edition: str = "") -> list[str]:
    """The edition's PDF and notebooks archive: linked from the front and how-to pages, served
    (HTTP 200), a real PDF with every chapter and no raw TeX, a zip of every notebook."""
    import urllib.request
    import zipfile

    problems = []
    site = root / edition
    for rel in FORMAT_PAGES:
        page = site / rel
        html = page.read_text(encoding="utf-8") if page.exists() else ""
        links = {(page.parent / h).resolve() for h in re.findall(r'<a [^>]*href="([^"#]+)"', html)}
        for name in (PDF, ARCHIVE):
            if (site / name).resolve() not in links:
                problems.append(f"{edition}{rel} does not link to {name}")
    for name in (PDF, ARCHIVE):
        try:
            request = urllib.request.Request(urljoin(base, edition + name), method="HEAD")
            with urllib.request.urlopen(request) as response:
                if response.status != 200:
                    problems.append(f"{edition}{name}: HTTP {response.status}")
        except Exception as exc:
            problems.append(f"{edition}{name} is not served: {exc}")
    chapters = _toc_chapters()
    pdf = site / PDF
    if pdf.exists():
        if not pdf.read_bytes().startswith(b"%PDF"):
            problems.append(f"{edition}{PDF} is not a PDF")
        elif shutil.which("pdftotext") and shutil.which("pdfinfo"):
            info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
            pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
            if pages < 2 * len(chapters):  # each chapter starts a page and fills more than one
                problems.append(f"{edition}{PDF} has {pages} pages, fewer than expected")
            text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True)
            text = text.stdout
            flat = " ".join(text.split())
            for stem in chapters:
                chapter = site / "book" / "chapters" / f"{stem}.html"
                html = chapter.read_text("utf-8") if chapter.exists() else ""
                title = re.search(r"<h1>(.*?)<a class=\"headerlink", html)
                heading = title.group(1) if title else stem
                heading = re.sub(r'<span class="section-number">.*?</span>|<[^>]+>', "", heading)
                heading = " ".join(unescape(heading).split())
                if heading not in flat:
                    problems.append(f"{edition}{PDF} lacks the chapter {heading!r}")
            code = _code_text()
            raw = RAW_TEX.findall(text)
            raw += [m for m in DOLLAR_MATH.findall(text) if m not in code]
            if raw:
                problems.append(f"{edition}{PDF} shows raw TeX: {sorted(set(raw))[:5]}")
        elif os.environ.get("CI"):
            problems.append("pdftotext is required in CI (apt-get install poppler-utils)")
    zipped = site / ARCHIVE
    if zipped.exists():
        with zipfile.ZipFile(zipped) as archive:
            names = set(archive.namelist())
            wanted = {f"cnn-course/notebooks/{stem}.ipynb" for stem in chapters}
            wanted |= {
                f"cnn-course/exercises/{nb.name}" for nb in REPOSITORY.glob("exercises/*.ipynb")
            }
            if wanted - names:
                problems.append(f"{edition}{ARCHIVE} lacks {sorted(wanted - names)[:5]}")
            for name in sorted(n for n in names if n.endswith(".ipynb")):
                if "cells" not in json.loads(archive.read(name)):
                    problems.append(f"{edition}{ARCHIVE}: {name} is not a notebook")
    return problems


def run(root: Path, chromium: str, screenshots: Path | None = None) -> int:
    from playwright.sync_api import sync_playwright

    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))
    pages = [p for p in pages if not p.removeprefix(ZH).startswith("_")]
    server, base = serve(root)
    failures: dict[str, list[str]] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            for rel in pages:
                page = browser.new_page()
                found = check_page(page, urljoin(base, rel), rel, root, base)
                if found:
                    failures[rel] = found
                page.close()
            page = browser.new_page()
            found = check_search(page, base)
            if found:
                failures["search.html?q=" + SEARCH_TERM] = found
            if (root / ZH / "index.html").exists():
                found = check_search(page, base, ZH, ZH_SEARCH_TERM) + cjk_font_problems()
                if found:
                    failures[f"{ZH}search.html?q={ZH_SEARCH_TERM}"] = found
            else:
                failures[ZH] = ["the Chinese edition was not built (make book)"]
            found, animations = check_animations(browser, root, base)
            failures.update(found)
            print(f"site: {animations} animations played")
            for edition in ("", ZH):
                if (root / edition / "index.html").exists():
                    found = format_problems(root, base, edition)
                    if found:
                        failures[f"{edition}{PDF} and {ARCHIVE}"] = found
            if (root / PRACTICE).exists():
                found = check_practice(browser, root, base, screenshots)
                if found:
                    failures[PRACTICE + " (drill at phone width)"] = found
            else:
                failures[PRACTICE] = ["the Practice page was not built"]
            if (root / ZH / PRACTICE).exists():
                found = check_practice_zh(browser, root, base)
                if found:
                    failures[ZH + PRACTICE + " (Chinese drill)"] = found
            browser.close()
    finally:
        server.shutdown()
    for rel, found in failures.items():
        for problem in found:
            print(f"FAIL {rel}: {problem}")
    print(f"site: {len(pages) + 3 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, help="save phone-width screenshots here")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").exists():
        print(f"{args.site} has no index.html: build the book first (make book)")
        return 1
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI"):
            print("Chromium is required in CI (apt-get install chromium)")
            return 1
        print("site test skipped: Chromium is not installed (apt-get install chromium)")
        return 0
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    return run(args.site.resolve(), chromium, args.screenshots)


if __name__ == "__main__":
    sys.exit(main())
