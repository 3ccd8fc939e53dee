"""Generate the ``.ipynb`` twin of every chapter (MyST Markdown is the only source).

``python tools/notebooks.py OUT_DIR`` writes ``OUT_DIR/NN_name.ipynb`` for each chapter
listed in ``_toc.yml``. nbval runs these twins, and the website publishes them so each
chapter can be opened in Colab or Binder. ``--colab`` prepends a cell that installs the
package (for the published copies; the tests run against the local checkout instead).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
INSTALL_CELL = """\
# Colab / Binder: install the course package (on a GPU runtime, CuPy comes with [gpu]).
%pip install -q "cnn-course[gpu] @ git+https://github.com/cnn-course/cnn-course"
"""


def chapters() -> list[Path]:
    """The chapter sources in table-of-contents order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.md" for f in files if f.startswith("book/chapters/")]


def write_twins(out: Path, colab: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src in chapters():
        nb = jupytext.read(src)
        if colab:
            cell = nbformat.v4.new_code_cell(INSTALL_CELL)
            cell.metadata["tags"] = ["colab-setup"]
            nb.cells.insert(0, cell)
        target = out / f"{src.stem}.ipynb"
        nbformat.write(nb, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--colab", action="store_true", help="prepend the install cell")
    args = parser.parse_args(argv)
    written = write_twins(args.out, args.colab)
    print(f"wrote {len(written)} notebooks to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
