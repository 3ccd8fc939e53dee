"""What exercise code may not do, checked on its syntax tree before it ever runs.

Refused everywhere: importing ``cnn_course`` (the answers) or another library that holds them
(torch, scipy, ...), and the routes around an ``import`` statement (``importlib``,
``__import__``, ``exec``/``eval``/``compile``, ``sys`` and its ``path``/``modules``, any
string that names ``cnn_course``, and the double-underscore attributes that lead back to the
interpreter's internals). Each exercise may also ban calls by name (``convolve`` where the
exercise is the convolution). This check gives clear verdicts; it is not the boundary: the
code runs in a sandbox (:mod:`.sandbox`) where none of these libraries is installed, and
whose harness names an attempt to import one.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Libraries that hold the answers: also blocked at run time (``_child.BLOCKED``).
BANNED_LIBRARIES = frozenset(
    {
        "cnn_course",
        "torch",
        "scipy",
        "tensorflow",
        "jax",
        "keras",
        "cupy",
        "sklearn",
        "cv2",
        "skimage",
        "mlxtend",
    }
)
# Standard modules that lead around the import statement or into the interpreter (``imp``
# left the standard library in Python 3.12 and stays banned where it exists).
BANNED_ROUTES = frozenset(
    {
        "importlib",
        "imp",
        "pkgutil",
        "runpy",
        "zipimport",
        "builtins",
        "sys",
        "ctypes",
        "pickle",
        "marshal",
        "code",
        "codeop",
        "gc",
        "inspect",
    }
)
BANNED_MODULES = BANNED_LIBRARIES | BANNED_ROUTES
BANNED_NAMES = frozenset(
    {"__import__", "exec", "eval", "compile", "breakpoint", "globals", "vars", "__builtins__"}
)
# Dunder attributes that are part of ordinary numerical code; every other one is refused.
ALLOWED_DUNDERS = frozenset({"__init__", "__name__", "__doc__"})
FORBIDDEN_TEXT = "cnn_course"


@dataclass(frozen=True)
class Violation:
    """One refused construct: ``kind`` is "banned import" or "banned call"."""

    kind: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what}"


def _module_violations(tree: ast.AST) -> list[Violation]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["(relative import)"]
        else:
            names = []
        for name in names:
            if name.partition(".")[0] in BANNED_MODULES or name == "(relative import)":
                found.append(Violation("banned import", node.lineno, f"import of {name}"))
    return found


def _escape_violations(tree: ast.AST) -> list[Violation]:
    """Routes around the import statement."""
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Name) and node.id in BANNED_NAMES:
            found.append(Violation("banned import", line, f"use of {node.id}"))
        elif isinstance(node, ast.Attribute) and (
            node.attr in BANNED_NAMES
            or (node.attr.startswith("__") and node.attr not in ALLOWED_DUNDERS)
        ):
            found.append(Violation("banned import", line, f"attribute {node.attr}"))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and FORBIDDEN_TEXT in node.value.replace("-", "_")
        ):
            found.append(Violation("banned import", line, f"the string {node.value[:60]!r}"))
    return found


def _call_violations(tree: ast.AST, banned_calls: frozenset[str]) -> list[Violation]:
    """Any mention of a banned routine (``np.convolve``, ``convolve``, ``getattr(np, ...)``
    with its name as a string)."""
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and node.attr in banned_calls:
            found.append(Violation("banned call", line, f"use of {node.attr}"))
        elif isinstance(node, ast.Name) and node.id in banned_calls:
            found.append(Violation("banned call", line, f"use of {node.id}"))
        elif isinstance(node, ast.Constant) and node.value in banned_calls:
            found.append(Violation("banned call", line, f"the string {node.value!r}"))
    return found


def check_source(source: str, banned_calls: frozenset[str] = frozenset()) -> list[Violation]:
    """Every violation in ``source``; code that does not parse is reported as one (kind
    "crashed"), nesting too deep for the parser (``1+1+...`` many times over) included."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [Violation("crashed", exc.lineno or 0, f"syntax error: {exc.msg}")]
    except (RecursionError, MemoryError):  # the parser's own limits on nesting
        return [Violation("crashed", 0, "the code is nested too deeply to parse")]
    return (
        _module_violations(tree) + _escape_violations(tree) + _call_violations(tree, banned_calls)
    )
