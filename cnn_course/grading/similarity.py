"""Similarity of submitted code, per exercise: token fingerprints with winnowing (MOSS).

For each exercise, the graded function and the top-level helpers it calls are taken from the
student's ``solution`` cells. The code is parsed and printed back with :func:`ast.unparse`
(comments, blank lines, line breaks and formatting are gone), docstrings are removed, and the
tokens are normalised: every identifier becomes ``V`` except keywords, builtins and attribute
names (``np.zeros`` keeps ``zeros``), every number ``N`` and every string ``S``. Renaming
variables, reformatting and commenting therefore change nothing. The token stream is cut
into k-grams (:data:`K` tokens), each hashed, and winnowing keeps the smallest hash of every
window of :data:`WINDOW` consecutive k-grams (Schleimer, Wilkerson and Aiken, "Winnowing:
local algorithms for document fingerprinting", SIGMOD 2003): any shared run of at least
``K + WINDOW - 1`` tokens is guaranteed to share a fingerprint. The k-grams of the stub the
students start from (the signature) are removed, as MOSS removes base code.

The score of two submissions is the Dice coefficient of their fingerprint sets,
``2 |A ∩ B| / (|A| + |B|)``, in [0, 1]. A pair is reported at or above :data:`THRESHOLD`
(0.8): a copy with renamed variables, new comments and new formatting scores 1.0, while
two correct solutions written independently (loops against vectorised code) score far
lower (the test-suite checks both). Functions with fewer than :data:`MIN_FINGERPRINTS`
fingerprints (a one-line ``return np.maximum(x, 0)``) are too short to tell copying from the
one obvious answer and are not compared. A flagged pair is a reason to read both
submissions, not a verdict.

Where an exercise has variants (:mod:`.variants`), two students are compared on it only when
they were given the same variant, and each student against the reference code of their own
variant (``reference["<exercise>@<variant>"]``, else ``reference["<exercise>"]``).
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import io
import keyword
import tokenize
from itertools import combinations

K = 6  # tokens per k-gram
WINDOW = 4  # k-grams per winnowing window
THRESHOLD = 0.8  # report pairs scoring at least this
MIN_FINGERPRINTS = 8  # fewer than this: too short to compare
REFERENCE = "reference"  # the name the instructor's and the library's code go by
_BUILTINS = frozenset(dir(builtins))
# Python 3.12+ tokenizes f-strings into parts: the start counts as a string, the literal
# text and the end are dropped, the expressions inside are tokens like any other.
_FSTRING_START = getattr(tokenize, "FSTRING_START", -1)
_FSTRING_PARTS = {getattr(tokenize, n, -1) for n in ("FSTRING_MIDDLE", "FSTRING_END")} - {-1}
_SKIP = {
    tokenize.ENCODING,
    tokenize.NEWLINE,
    tokenize.NL,
    tokenize.COMMENT,
    tokenize.ENDMARKER,
}


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _is_stub(function: ast.FunctionDef) -> bool:
    body = [s for s in function.body if not (isinstance(s, ast.Expr) and _is_str(s.value))]
    return (
        len(body) == 1
        and isinstance(body[0], ast.Raise)
        and "NotImplementedError" in ast.unparse(body[0])
    )


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def extract(code: str, function: str) -> str | None:
    """The source of ``function`` and of the top-level helpers it calls (transitively), with
    docstrings removed and formatting normalised; None if it is absent, a stub, or the code
    does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    if function not in defs or _is_stub(defs[function]):
        return None
    chosen, todo = [], [function]
    while todo:
        name = todo.pop(0)
        if name in chosen or name not in defs:
            continue
        chosen.append(name)
        for node in ast.walk(defs[name]):
            if isinstance(node, ast.Name) and node.id in defs and node.id not in chosen:
                todo.append(node.id)
    module = ast.Module(body=[defs[n] for n in chosen], type_ignores=[])
    try:
        return ast.unparse(_without_docstrings(module))
    except (RecursionError, ValueError):
        return None


def tokens(source: str) -> list[str]:
    """The normalised token stream of ``source`` (see the module docstring)."""
    out: list[str] = []
    previous = ""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in _SKIP:
                continue
            if tok.type == tokenize.NAME:
                keep = keyword.iskeyword(tok.string) or tok.string in _BUILTINS
                text = tok.string if keep or previous == "." else "V"
            elif tok.type == tokenize.NUMBER:
                text = "N"
            elif tok.type in _FSTRING_PARTS:
                continue
            elif tok.type == tokenize.STRING or tok.type == _FSTRING_START:
                text = "S"
            elif tok.type == tokenize.INDENT:
                text = "{"
            elif tok.type == tokenize.DEDENT:
                text = "}"
            else:
                text = tok.string
            out.append(text)
            previous = tok.string
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return out


def _hash(gram: tuple[str, ...]) -> int:
    digest = hashlib.blake2b("\x1f".join(gram).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def fingerprints(source: str | None, base: frozenset[int] = frozenset()) -> frozenset[int]:
    """The winnowed k-gram hashes of ``source``, less those of ``base`` (the stub)."""
    if not source:
        return frozenset()
    toks = tokens(source)
    hashes = [_hash(tuple(toks[i : i + K])) for i in range(len(toks) - K + 1)]
    if not hashes:
        return frozenset()
    if len(hashes) <= WINDOW:
        chosen = {min(hashes)}
    else:
        chosen = {min(hashes[i : i + WINDOW]) for i in range(len(hashes) - WINDOW + 1)}
    return frozenset(chosen - base)


def base_fingerprints(stub_code: str, function: str) -> frozenset[int]:
    """Every k-gram hash of the stub of ``function`` (not winnowed: all of them go)."""
    try:
        tree = ast.parse(stub_code)
    except (SyntaxError, ValueError):
        return frozenset()
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    if not defs:
        return frozenset()
    toks = tokens(ast.unparse(_without_docstrings(ast.Module(body=defs, type_ignores=[]))))
    return frozenset(_hash(tuple(toks[i : i + K])) for i in range(len(toks) - K + 1))


def score(a: frozenset[int], b: frozenset[int]) -> float | None:
    """The Dice coefficient of two fingerprint sets; None when either is too short."""
    if len(a) < MIN_FINGERPRINTS or len(b) < MIN_FINGERPRINTS:
        return None
    return 2 * len(a & b) / (len(a) + len(b))


def compare_class(
    prints: dict[str, dict[str, list[int]]],
    reference: dict[str, list[list[int]]] | None = None,
    threshold: float = THRESHOLD,
    variants: dict[str, dict[str, str]] | None = None,
) -> list[dict]:
    """Pairs at or above ``threshold``.

    ``prints`` maps student -> exercise -> fingerprints; ``reference`` maps exercise -> a list
    of fingerprint sets (the instructor's solution, the library's function). Returns rows
    ``{"student", "other", "exercise", "score"}`` sorted by student, other, exercise, with
    ``student < other`` for pairs of students and ``other == "reference"`` for the best match
    against the reference code. ``variants`` maps student -> exercise -> the variant they
    were given: pairs with different variants of an exercise are not compared, and the rows
    carry ``"variant"`` (None for an exercise without variants)."""
    variants = variants or {}

    def variant_of(student: str, exercise: str) -> str | None:
        return variants.get(student, {}).get(exercise)

    rows = []
    students = sorted(prints)
    sets = {s: {e: frozenset(v) for e, v in prints[s].items()} for s in students}
    for a, b in combinations(students, 2):
        for exercise in sorted(set(sets[a]) & set(sets[b])):
            if variant_of(a, exercise) != variant_of(b, exercise):
                continue  # different specifications: not comparable
            value = score(sets[a][exercise], sets[b][exercise])
            if value is not None and value >= threshold:
                rows.append({"student": a, "other": b, "exercise": exercise, "score": value,
                             "variant": variant_of(a, exercise)})  # fmt: skip
    reference = reference or {}
    for student in students:
        for exercise, mine in sorted(sets[student].items()):
            variant = variant_of(student, exercise)
            refs = reference.get(f"{exercise}@{variant}", reference.get(exercise, []))
            values = [score(mine, frozenset(r)) for r in refs]
            values = [v for v in values if v is not None]
            if values and max(values) >= threshold:
                rows.append(
                    {"student": student, "other": REFERENCE, "exercise": exercise,
                     "score": max(values), "variant": variant}
                )  # fmt: skip
    rows.sort(key=lambda r: (r["student"], r["other"], r["exercise"]))
    for row in rows:
        row["score"] = round(row["score"], 3)
    return rows
