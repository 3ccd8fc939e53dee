"""Sphinx extension for the course website: offline math and notebook launch links.

- MathJax 3 is served from the site itself (copied from the ``django-static-mathjax`` wheel,
  which ships MathJax's files), so math renders with no network and no CDN.
- Every chapter is published as an ``.ipynb`` twin generated from its MyST source (with a first
  cell that installs the package), under ``notebooks/``; the student exercise notebooks under
  ``exercises/``. Each chapter page gets "Colab" and "Binder" links to its twin on the
  published branch, and a download link.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_BRANCH = "gh-pages"
# MathJax files the pages need: the tex-chtml bundle, the TeX extensions it autoloads, the
# CommonHTML fonts, and the menu/accessibility components loaded on demand.
MATHJAX_KEEP = ("tex-chtml.js", "input", "output", "ui", "a11y", "adaptors")


def _mathjax_source() -> Path:
    import mathjax  # the django-static-mathjax wheel's package: only static files

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _configure(app, config) -> None:
    config.mathjax_path = "mathjax/tex-chtml.js"


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
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from notebooks import write_twins
    finally:
        sys.path.pop(0)
    write_twins(out, colab=True)
    exercises = out / "exercises"
    exercises.mkdir(exist_ok=True)
    for nb in sorted((ROOT / "exercises").glob("*.ipynb")):
        shutil.copy2(nb, exercises / nb.name)
    (out / ".nojekyll").touch()


def setup(app):
    app.connect("config-inited", _configure)
    app.connect("html-page-context", _launch_links, priority=502)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("build-finished", _publish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
