"""Build the Chinese edition and keep its gettext catalogues in step with the English source.

The book has one source (English MyST); the Chinese edition translates its text through one
gettext catalogue per source document, ``locales/zh_CN/LC_MESSAGES/<docname>.po`` (e.g.
``book/chapters/05_pooling.po``); code cells, outputs, figures, formulas and labels are shared.

    python tools/i18n.py build            # the Chinese site into _build/html/zh (make book)
    python tools/i18n.py update [DOC ...] # make zh-update: .pot files, then sphinx-intl update
    python tools/i18n.py check [DOC ...]  # fail on untranslated, fuzzy or obsolete entries
    python tools/i18n.py check --report   # counts per file; exits 0

``build`` runs the same Sphinx project as ``jupyter-book build . -W -n --keep-going`` with
``language=zh_CN``; notebooks come from the execution cache the English build filled, so
nothing runs twice. A message without a translation falls back to English.

``check`` first extracts the current messages (the gettext builder, into ``_build/gettext``,
without executing anything; ``--no-pot`` reuses the last extraction), then compares each
catalogue with them: a message of the source with no translation (untranslated), a translation
marked ``#, fuzzy`` (the source changed since it was translated), an entry whose message is no
longer in the source (obsolete), and a translation that changed the message's markup (roles
and their targets, inline code, math, link targets, numbers) or whose bold or italic no longer
renders. DOC may be a docname, a source path or a ``.po`` path, to check only those files.
See locales/TRANSLATE.md for the translators' workflow.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
LANGUAGE = "zh_CN"
LOCALES = ROOT / "locales"
CATALOGUES = LOCALES / LANGUAGE / "LC_MESSAGES"
POT = BUILD / "gettext"
# Settings of the Chinese site that are not document text.
OVERRIDES = {
    "language": LANGUAGE,
    "html_title": "CNN 面试题，用代码作答",
    "nb_code_prompt_show": "显示代码单元格内容",
    "nb_code_prompt_hide": "隐藏代码单元格内容",
}

sys.path.insert(0, str(ROOT / "book" / "_ext"))
from course_i18n import CODE, MATH, ROLE, TRANSLATIONS, URL, words  # noqa: E402

FOLDER = TRANSLATIONS[LANGUAGE]  # _build/html/zh

LINK = re.compile(r"\]\(([^)\s]+)\)|href=\"([^\"]+)\"")
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def sphinx(
    builder: str, outdir: Path, doctrees: Path, overrides: dict, strict: bool, quiet: bool = False
) -> int:
    """Build the book as ``jupyter-book build . -n --keep-going [-W]`` does, with overrides."""
    from jupyter_book.sphinx import build_sphinx

    os.chdir(ROOT)  # _config.yml's paths (the execution cache) are relative to the root
    result = build_sphinx(
        ROOT,
        outdir,
        use_external_toc=True,
        noconfig=True,
        path_config=str(ROOT / "_config.yml"),
        confoverrides={
            "external_toc_path": (ROOT / "_toc.yml").as_posix(),
            "latex_individualpages": False,
            "nitpicky": True,
            **overrides,
        },
        doctreedir=doctrees,
        builder=builder,
        warningiserror=strict,
        keep_going=True,
        really_quiet=quiet,
    )
    return 0 if result == 0 else 1


def build() -> int:
    """The Chinese website, into ``_build/html/zh``."""
    return sphinx("html", BUILD / "html" / FOLDER, BUILD / f".doctrees-{FOLDER}", OVERRIDES, True)


def extract() -> int:
    """The current messages of every document, as ``_build/gettext/<docname>.pot``. Cells and
    their outputs are not messages, so nothing is executed (the ``{glue}`` values a page would
    paste are missing here, which only the warnings, not shown, mention)."""
    print(f"extracting the messages into {_shown(POT)} ...", flush=True)
    overrides = {"nb_execution_mode": "off"}
    return sphinx("gettext", POT, BUILD / ".doctrees-gettext", overrides, False, quiet=True)


def update(names: list[str] | None = None) -> int:
    """Extract, then merge into the catalogues (new entries empty, changed ones fuzzy): every
    catalogue, or only those of ``names`` (so that a translator refreshes only their own)."""
    import shutil
    import tempfile

    if extract():
        return 1
    wanted = [_docname(n) for n in names or []]
    missing = [n for n in wanted if not (POT / f"{n}.pot").exists()]
    if missing:
        print(f"no such document: {', '.join(missing)}")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        pots = POT
        if wanted:  # sphinx-intl updates every .pot it finds: give it only these
            pots = Path(tmp)
            for name in wanted:
                (pots / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(POT / f"{name}.pot", pots / f"{name}.pot")
        command = [sys.executable, "-m", "sphinx_intl", "update", "-p", str(pots), "-l", LANGUAGE]
        done = subprocess.run([*command, "-d", str(LOCALES)], cwd=ROOT)
    catalogues = [CATALOGUES / f"{n}.po" for n in wanted] or sorted(CATALOGUES.rglob("*.po"))
    _drop_empty_obsolete(catalogues)
    for po in catalogues:
        if not _pot_of(po).exists():
            print(f"no such document any more: {_shown(po)} (delete or rename it)")
    return done.returncode


def _drop_empty_obsolete(catalogues: list[Path]) -> None:
    """sphinx-intl keeps every message that left the source as an obsolete ``#~`` entry; keep
    only those with a translation (to reuse or delete), not the empty ones."""
    from sphinx_intl.catalog import dump_po, load_po

    for po in catalogues:
        catalogue = load_po(str(po))
        empty = [key for key, message in catalogue.obsolete.items() if not message.string]
        if empty:
            for key in empty:
                del catalogue.obsolete[key]
            dump_po(str(po), catalogue, width=76)


def _pot_of(po: Path) -> Path:
    return POT / po.relative_to(CATALOGUES).with_suffix(".pot")


def _shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _docname(arg: str) -> str:
    """``book/chapters/05_pooling`` from a docname, a source path or a catalogue path."""
    path = Path(arg).resolve() if Path(arg).exists() else None
    text = path.relative_to(ROOT).as_posix() if path and path.is_relative_to(ROOT) else arg
    text = text.removeprefix(_shown(CATALOGUES) + "/")
    return re.sub(r"\.(po|pot|md|ipynb)$", "", text)


def markup(text: str) -> Counter:
    """What a translation must keep exactly: roles and their targets, inline code, math,
    link targets (Markdown and HTML) and numbers."""
    found: list[str] = []
    for match in ROLE.finditer(text):
        inner = match.group(1)
        target = inner.rsplit("<", 1)[1].rstrip(">").strip() if "<" in inner else inner
        found.append(match.group(0).split("`")[0] + target)
    found += CODE.findall(ROLE.sub("", text)) + MATH.findall(text)
    found += ["".join(target) for target in LINK.findall(text)]
    found += URL.findall(text)
    counts = Counter(found)
    # each number at least once (a translation may drop an English gloss that repeats one)
    counts.update(set(NUMBER.findall(LINK.sub("", words(text)))))
    return counts


def emphasis(text: str) -> tuple[int, int]:
    """How many bold and italic spans Markdown renders: CommonMark does not close ``**`` after
    punctuation when a letter follows (``**答：**池化``), a common slip in Chinese."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").renderInline(CODE.sub("", MATH.sub("", text)))
    return html.count("<strong>"), html.count("<em>")


@dataclass
class Report:
    name: str
    entries: int = 0
    untranslated: list[str] = field(default_factory=list)
    fuzzy: list[str] = field(default_factory=list)
    obsolete: list[str] = field(default_factory=list)
    markup: list[str] = field(default_factory=list)
    missing_file: bool = False

    @property
    def problems(self) -> int:
        return len(self.untranslated) + len(self.fuzzy) + len(self.obsolete) + len(self.markup)


def _read(path: Path):
    from babel.messages.pofile import read_po

    with path.open("rb") as f:
        return read_po(f, ignore_obsolete=False)


def compare(name: str) -> Report:
    report = Report(name)
    pot_path, po_path = POT / f"{name}.pot", CATALOGUES / f"{name}.po"
    source = [m.id for m in _read(pot_path) if m.id] if pot_path.exists() else []
    report.entries = len(source)
    if not po_path.exists():
        report.missing_file = True
        report.untranslated = source
        return report
    catalogue = _read(po_path)
    current = set(source)
    for msgid in source:
        message = catalogue.get(msgid)
        if message is None or not message.string:
            report.untranslated.append(msgid)
        elif message.fuzzy:
            report.fuzzy.append(msgid)
        elif markup(msgid) != markup(message.string):
            lost = markup(msgid) - markup(message.string)
            added = markup(message.string) - markup(msgid)
            detail = ", ".join([*(f"lost {k!r}" for k in lost), *(f"added {k!r}" for k in added)])
            report.markup.append(f"{msgid}\n      ({detail})")
        elif emphasis(msgid) != emphasis(message.string):
            report.markup.append(
                f"{msgid}\n      (bold or italic not rendered: next to Chinese punctuation, put"
                " a space outside the ** or *, or the punctuation outside the emphasis)"
            )
    report.obsolete = [m.id for m in catalogue if m.id and m.id not in current]
    report.obsolete += [str(key) for key in catalogue.obsolete]
    if not pot_path.exists():
        report.obsolete.insert(0, "(the whole file: its document no longer exists)")
    return report


def _short(msgid: str, width: int = 100) -> str:
    first, _, rest = msgid.partition("\n      (")
    first = " ".join(first.split())
    first = first if len(first) <= width else first[: width - 1] + "…"
    return first + (f"\n      ({rest}" if rest else "")


def check(names: list[str], report_only: bool) -> int:
    every = sorted(
        {p.relative_to(POT).with_suffix("").as_posix() for p in POT.rglob("*.pot")}
        | {p.relative_to(CATALOGUES).with_suffix("").as_posix() for p in CATALOGUES.rglob("*.po")}
    )
    wanted = [_docname(n) for n in names] or every
    unknown = [n for n in wanted if n not in every]
    if unknown:
        print(f"no catalogue or document: {', '.join(unknown)}")
        return 2
    reports = [compare(name) for name in wanted]
    width = max(len(r.name) for r in reports)
    print(
        f"{'catalogue (' + LANGUAGE + ')':<{width}}  entries  done  untranslated  fuzzy"
        "  obsolete  markup"
    )
    for r in reports:
        done = r.entries - len(r.untranslated) - len(r.fuzzy)
        print(
            f"{r.name:<{width}}  {r.entries:7d}  {done:4d}  {len(r.untranslated):12d}"
            f"  {len(r.fuzzy):5d}  {len(r.obsolete):8d}  {len(r.markup):6d}"
            + ("  (no .po yet)" if r.missing_file else "")
        )
    total = sum(r.entries for r in reports)
    left = sum(r.problems for r in reports)
    done = total - sum(len(r.untranslated) + len(r.fuzzy) for r in reports)
    print(f"{'total':<{width}}  {total:7d}  {done:4d}   ({left} problems)")
    if report_only:
        return 0
    for r in reports:
        for kind in ("untranslated", "fuzzy", "obsolete", "markup"):
            for msgid in getattr(r, kind):
                print(f"{_shown(CATALOGUES)}/{r.name}.po: {kind}: {_short(msgid)}")
    if left:
        print(
            f"i18n check: {left} problems "
            "(run `make zh-update`, then translate; locales/TRANSLATE.md)"
        )
        return 1
    print("i18n check: every message is translated")
    return 0


@contextlib.contextmanager
def _one_at_a_time():
    """Several people may run this in one checkout: the builds share _build's folders, so the
    runs take turns."""
    import fcntl

    BUILD.mkdir(exist_ok=True)
    with (BUILD / ".i18n.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for another tools/i18n.py run to finish ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the Chinese website into _build/html/zh")
    updater = sub.add_parser("update", help="extract, then update the .po files (sphinx-intl)")
    updater.add_argument("docs", nargs="*", help="docnames, sources or .po files (default all)")
    sub.add_parser("pot", help="only extract the messages into _build/gettext")
    checker = sub.add_parser("check", help="fail on untranslated, fuzzy or obsolete entries")
    checker.add_argument("docs", nargs="*", help="docnames, sources or .po files (default all)")
    checker.add_argument("--report", action="store_true", help="print counts only; exit 0")
    checker.add_argument("--no-pot", action="store_true", help="reuse _build/gettext")
    args = parser.parse_args(argv)
    with _one_at_a_time():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.command == "build":
        return build()
    if args.command == "update":
        return update(args.docs)
    if args.command == "pot":
        return extract()
    if not args.no_pot and extract():
        return 1
    return check(args.docs, args.report)


if __name__ == "__main__":
    sys.exit(main())
