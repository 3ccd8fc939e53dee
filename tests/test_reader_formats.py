"""The reader formats without a browser: the notebooks archive's contents, the PDF step's page
finding and page count, and the browser test's raw-TeX patterns."""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tools():
    sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "book" / "_ext")]
    try:
        import book_pdf
        import notebooks
        import site_test

        yield book_pdf, notebooks, site_test
    finally:
        del sys.path[:2]


def test_archive_holds_every_chapter_and_exercise_notebook(tools, tmp_path):
    pytest.importorskip("sphinx")
    import course_site

    _, notebooks, _ = tools
    target = tmp_path / "archive.zip"
    course_site._write_archive(target, notebooks.write_twins)
    with zipfile.ZipFile(target) as archive:
        names = set(archive.namelist())
        toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
        chapters = re.findall(r"file: book/chapters/(\S+)", toc)
        assert len(chapters) >= 20
        for stem in chapters:
            assert f"cnn-course/notebooks/{stem}.ipynb" in names
        for nb in ROOT.glob("exercises/*.ipynb"):
            assert f"cnn-course/exercises/{nb.name}" in names
        assert not any("solutions" in n for n in names), "no solutions in the archive"
        assert "cnn-course/README.txt" in names
        first = archive.read(f"cnn-course/notebooks/{chapters[0]}.ipynb")
        assert b'"cells"' in first


def test_single_page_is_copied_to_the_top_of_the_site(tools, tmp_path):
    book_pdf, _, _ = tools
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.html").write_text("<p>the book</p>")
    (tmp_path / "index.html").write_text(
        '<meta http-equiv="Refresh" content="0; url=book/intro.html" />'
    )
    assert book_pdf.single_page(tmp_path) == "book.html"
    assert (tmp_path / "book.html").read_text() == "<p>the book</p>"


def test_count_pages_with_and_without_poppler(tools, tmp_path, monkeypatch):
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    book_pdf, _, _ = tools
    pdf = tmp_path / "three.pdf"
    with PdfPages(pdf) as pages:
        for _ in range(3):
            pages.savefig(Figure())
    assert book_pdf.count_pages(pdf) == 3
    monkeypatch.setattr(book_pdf.shutil, "which", lambda name: None)
    assert book_pdf.count_pages(pdf) == 3


def test_raw_tex_patterns(tools):
    _, _, site_test = tools
    for raw in ["\\(x^2\\)", "\\[ y \\]", "\\frac{a}{b}", "$$y$$", "\\begin{aligned}"]:
        assert site_test.RAW_TEX.search(raw), raw
    assert site_test.DOLLAR_MATH.findall("costs $k^2$ MACs") == ["$k^2$"]
    for typeset in ["y = b + sum_c w * x", "$ python -c 'print(1)'", "price: 5 $"]:
        assert not site_test.RAW_TEX.search(typeset) and not site_test.DOLLAR_MATH.search(typeset)
    # TeX in a plotting label is code, and the code of the chapters is what the check allows
    assert "$w_1$" in site_test._code_text()
