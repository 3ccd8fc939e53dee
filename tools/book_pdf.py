"""Print the book as one PDF: a single-page HTML build, printed by headless Chromium.

``python tools/book_pdf.py en _build/html/cnn-course.pdf`` builds the English edition with
Sphinx's ``singlehtml`` builder (into ``_build/singlehtml``, sharing the website build's parsed
pages and execution cache, so no notebook runs again), serves it on 127.0.0.1, waits for
MathJax to typeset every formula, shows each animation's finished frame, and prints the page
with Debian's Chromium (through Playwright; nothing is downloaded). One more edition is one more
``EDITION OUT`` pair: ``python tools/book_pdf.py en _build/html/cnn-course.pdf zh
_build/html/zh/cnn-course.pdf`` prints both, side by side (the Chinese edition's settings come
from ``tools/i18n.py``; Chromium sets it in the installed Noto CJK fonts).

Where Chromium is not installed it says so and exits 0 (the website then has no PDF), except
when ``CI`` is set: there the PDF must be built.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
# One copy of each piece: Sphinx as the website builds it and the Chinese settings (i18n.py),
# finding Chromium and serving a folder on 127.0.0.1 (site_test.py).
sys.path.insert(0, str(ROOT / "tools"))
from i18n import OVERRIDES, sphinx  # noqa: E402
from site_test import find_chromium, serve  # noqa: E402

sys.path.pop(0)
# Shown in the PDF instead of the player's buttons; the animations stop on their last frame.
PRINT_CSS = """
.anim-controls, .anim-state, .anim-slider, .anim-buttons { display: none !important; }
.animation img { max-width: 100%; }
h1 { break-before: page; }
h2, h3 { break-after: avoid; }
div.highlight pre, div.output pre, div.cell_output pre {
  white-space: pre-wrap !important; overflow-wrap: anywhere; overflow: visible !important;
}
"""
FOOTER = (
    '<div style="font-size:8px; width:100%; text-align:center; color:#555;">'
    '<span class="pageNumber"></span> / <span class="totalPages"></span></div>'
)


def build_single_page(edition: str) -> Path:
    """Build ``edition`` with Sphinx's ``singlehtml`` builder, as ``jupyter-book build . -W -n
    --keep-going`` builds the website (same settings, so the parsed pages of the website's build
    are reused); return the folder holding the page."""
    spec = EDITIONS[edition]
    if sphinx("singlehtml", spec["outdir"], spec["doctrees"], spec["overrides"], strict=True):
        raise SystemExit(f"the single-page build of the {edition!r} edition failed")
    return spec["outdir"]


# Each edition: its single-page build folder, the parsed pages it shares with its website's
# build, its settings, and its language (Chromium picks the fonts for it: Noto CJK for zh-CN).
EDITIONS = {
    "en": {
        "outdir": BUILD / "singlehtml",
        "doctrees": BUILD / ".doctrees",
        "overrides": {},
        "lang": "en",
    },
    "zh": {
        "outdir": BUILD / "singlehtml" / "zh",  # like _build/html/zh (course_i18n.py)
        "doctrees": BUILD / ".doctrees-zh",
        "overrides": OVERRIDES,
        "lang": "zh-CN",
    },
}


def single_page(site: Path) -> str:
    """The page that holds the whole book, at the top of ``site``.

    ``index.html`` redirects to the root document (``book/intro.html``), but Sphinx's
    single-page builder writes that page's links to ``_static`` and ``_images`` as if it sat at
    the top: a copy there (``book.html``) finds them all.
    """
    index = (site / "index.html").read_text(encoding="utf-8")
    found = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', index, re.I)
    if not found:
        return "index.html"
    shutil.copy2(site / found.group(1), site / "book.html")
    return "book.html"


def print_pdf(site: Path, out: Path, chromium: str, lang: str) -> int:
    """Print ``site/index.html`` to ``out``; return the number of formulas typeset."""
    from playwright.sync_api import sync_playwright

    server, base = serve(site)
    url = base + single_page(site)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", f"--lang={lang}"],
            )
            page = browser.new_page(locale=lang, color_scheme="light")
            page.set_default_timeout(180_000)
            page.goto(url, wait_until="load")
            typeset = 0
            if page.evaluate("!!document.querySelector('script[src*=\"mathjax\"]')"):
                page.wait_for_function(
                    "window.MathJax && MathJax.startup && MathJax.startup.promise"
                )
                page.evaluate("MathJax.startup.promise")
                typeset = page.locator("mjx-container").count()
            # every animation on its finished frame (the player builds itself after load)
            page.wait_for_function(
                "Array.from(document.querySelectorAll('.animation img'))"
                ".every(i => i.getAttribute('src'))"
            )
            page.evaluate(
                "document.querySelectorAll('button[title=\"Last frame\"]').forEach(b => b.click())"
            )
            page.add_style_tag(content=PRINT_CSS)
            page.evaluate("document.fonts.ready.then(() => true)")
            page.wait_for_function(
                "Array.from(document.images).every(i => i.complete)", timeout=120_000
            )
            page.emulate_media(media="print")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.pdf(  # at 80 %: a book-sized font, and a third fewer pages to print
                path=str(out),
                format="A4",
                scale=0.8,
                print_background=True,
                margin={"top": "16mm", "bottom": "16mm", "left": "14mm", "right": "14mm"},
                display_header_footer=True,
                header_template="<div></div>",
                footer_template=FOOTER,
            )
            browser.close()
    finally:
        server.shutdown()
    return typeset


def count_pages(pdf: Path) -> int:
    """Pages of a PDF: pdfinfo where poppler is installed, else the page objects."""
    if shutil.which("pdfinfo"):
        info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
        found = re.search(r"^Pages:\s+(\d+)", info, re.M)
        if found:
            return int(found.group(1))
    return len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes()))


def make_pdf(edition: str, path: Path, chromium: str) -> None:
    """Build ``edition`` as one page and print it to ``path``."""
    start = time.perf_counter()
    out = path.resolve()
    site = build_single_page(edition)
    built = time.perf_counter()
    typeset = print_pdf(site, out, chromium, EDITIONS[edition]["lang"])
    done = time.perf_counter()
    size = out.stat().st_size
    print(
        f"PDF of the {edition!r} edition: {path} ({count_pages(out)} pages, "
        f"{size / 1e6:.1f} MB, {typeset} formulas typeset); single-page build "
        f"{built - start:.0f} s, printing {done - built:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "jobs",
        nargs="+",
        metavar="EDITION OUT",
        help=f"pairs: an edition ({', '.join(sorted(EDITIONS))}) and the PDF to write",
    )
    args = parser.parse_args(argv)
    pairs = list(zip(args.jobs[::2], args.jobs[1::2], strict=False))
    if len(args.jobs) % 2 or any(edition not in EDITIONS for edition, _ in pairs):
        parser.error(f"give EDITION OUT pairs, editions from {sorted(EDITIONS)}")
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("CI"):
            print("Chromium is required in CI to print the PDF (apt-get install chromium)")
            return 1
        print("PDF skipped: Chromium is not installed (apt-get install chromium)")
        return 0
    if len(pairs) == 1:
        make_pdf(pairs[0][0], Path(pairs[0][1]), chromium)
        return 0
    # Several editions: one process each, side by side (a Sphinx build uses one core).
    start = time.perf_counter()
    runs = [
        subprocess.Popen(
            [sys.executable, __file__, edition, out],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for edition, out in pairs
    ]
    logs = [run.communicate()[0] for run in runs]
    failed = [edition for (edition, _), run in zip(pairs, runs, strict=True) if run.returncode]
    for log, run in zip(logs, runs, strict=True):
        lines = log.splitlines()
        print(log if run.returncode else "\n".join(line for line in lines if "PDF" in line))
    print(f"PDFs: {len(pairs)} editions in {time.perf_counter() - start:.0f} s")
    if failed:
        print(f"the PDF of {failed} failed (its build log is above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
