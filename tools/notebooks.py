"""Generate the ``.ipynb`` twin of every chapter (MyST Markdown is the only source).

``python tools/notebooks.py OUT_DIR`` writes ``OUT_DIR/notebooks/NN_name.ipynb`` for each
chapter listed in ``_toc.yml`` and copies ``book/data`` (cached results the chapters read as
``../data/...``) to ``OUT_DIR/data``, so the twins run from there exactly as the chapters run
from ``book/chapters``. nbval runs these twins, and the website publishes them so each chapter
can be opened in Colab or Binder. ``--colab`` prepends a cell that installs the package and
fetches the cached results from the website (for the published copies; the tests run against
the local checkout instead).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "https://github.com/cnn-course/cnn-course"
SITE = "https://cnn-course.github.io/cnn-course"
INSTALL_CELL = f"""\
# Colab / Binder: install the course package (Colab's GPU runtime already has CuPy).
%pip install -q "cnn-course @ git+{REPOSITORY}"
"""
FETCH_CELL = """\
import os, urllib.request
os.makedirs("../data", exist_ok=True)
for name in {names!r}:
    if not os.path.exists(f"../data/{{name}}"):
        urllib.request.urlretrieve(f"{site}/data/{{name}}", f"../data/{{name}}")
"""


def chapters() -> list[Path]:
    """The chapter sources in table-of-contents order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.md" for f in files if f.startswith("book/chapters/")]


def write_twins(out: Path, colab: bool = False) -> list[Path]:
    """Write ``out/notebooks/*.ipynb`` and ``out/data``; return the notebooks written."""
    data = ROOT / "book" / "data"
    if data.exists():
        shutil.copytree(data, out / "data", dirs_exist_ok=True)
    names = sorted(p.name for p in data.glob("*")) if data.exists() else []
    target_dir = out / "notebooks"
    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src in chapters():
        nb = jupytext.read(src)
        if colab:
            setup = INSTALL_CELL
            if "../data/" in src.read_text(encoding="utf-8"):
                setup += FETCH_CELL.format(names=names, site=SITE)
            cell = nbformat.v4.new_code_cell(setup)
            cell.metadata["tags"] = ["colab-setup"]
            nb.cells.insert(0, cell)
        target = target_dir / f"{src.stem}.ipynb"
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--colab", action="store_true", help="prepend the setup cell")
    args = parser.parse_args(argv)
    written = write_twins(args.out, args.colab)
    print(f"wrote {len(written)} notebooks to {args.out / 'notebooks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
