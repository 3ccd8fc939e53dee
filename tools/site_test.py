"""End-to-end test of the built website in headless Chromium (Debian's package).

``python tools/site_test.py _build/html`` serves the site on 127.0.0.1, opens every page and
checks that it loads without console errors, fetches nothing from outside the site, has a
title, typesets its math (MathJax served locally), loads its images, and that its internal
links resolve (file and anchor); chapter pages must have previous/next links and launch links
to notebooks that exist in the site; the search page must return results.

Where Chromium is not installed it says so and exits 0, except when ``CI`` is set: there the
browser test must run.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

REPOSITORY = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SEARCH_TERM = "convolution"


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
        if browser_page.locator("mjx-container").count() == 0:
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
    if rel.startswith("book/chapters/"):
        problems += chapter_problems(browser_page, root)
    else:
        problems += launch_problems(browser_page, root)[0]
    return problems


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


def check_search(browser_page, base: str) -> list[str]:
    browser_page.goto(urljoin(base, f"search.html?q={SEARCH_TERM}"), wait_until="load")
    try:
        browser_page.wait_for_selector("#search-results li", timeout=20000)
    except Exception:
        return [f"search for {SEARCH_TERM!r} returned no results"]
    return []


def run(root: Path, chromium: str) -> int:
    from playwright.sync_api import sync_playwright

    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))
    pages = [p for p in pages if not p.startswith("_")]
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
            browser.close()
    finally:
        server.shutdown()
    for rel, found in failures.items():
        for problem in found:
            print(f"FAIL {rel}: {problem}")
    print(f"site: {len(pages) + 1 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site, e.g. _build/html")
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
    return run(args.site.resolve(), chromium)


if __name__ == "__main__":
    sys.exit(main())
