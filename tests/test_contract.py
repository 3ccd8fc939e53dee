"""The package's contracts, checked over every op rather than op by op.

1. The backward contract (DESIGN section 3): for each ``op`` in ``cnn_course.functional``
   with an ``op_backward``, the backward takes ``grad_out`` and then the forward's
   arguments, with the same names, order, kinds and defaults. The deviations are listed
   below with the reason for each; anything else fails.
2. The package's import graph has no cycle, and no module imports a private name from a
   public module (DESIGN section 8).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import cnn_course
import cnn_course.functional as F

# forward op -> (forward arguments the backward leaves out, extra keyword-only arguments)
EXCEPTIONS = {
    # The gradients do not depend on the bias; grad_bias is always returned (None is never
    # needed: it is grad_out summed over N, H and W). input_grad=False skips grad_x for a
    # network's first layer, as PyTorch's autograd skips an input that needs no gradient.
    "conv2d": ({"bias"}, {"input_grad"}),
    "conv_transpose2d": ({"bias"}, {"input_grad"}),
    # return_indices changes only what the forward returns. The backward may take the
    # forward's saved arg-max (keyword only, optional) instead of searching the windows
    # again, as PyTorch's backward always does.
    "max_pool2d": ({"return_indices"}, {"indices"}),
    "adaptive_max_pool2d": ({"return_indices"}, set()),
}


def _public_functions(module) -> dict[str, object]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }


OPS = _public_functions(F)
PAIRS = sorted(name for name in OPS if f"{name}_backward" in OPS)


def _arguments(fn) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_there_are_ops_to_check():
    assert {"conv2d", "max_pool2d", "avg_pool2d", "linear", "relu", "batch_norm"} <= set(PAIRS)
    assert set(EXCEPTIONS) <= set(PAIRS)


@pytest.mark.parametrize("name", PAIRS)
def test_backward_takes_grad_out_then_the_forwards_arguments(name):
    forward, backward = _arguments(OPS[name]), _arguments(OPS[f"{name}_backward"])
    assert backward[0][0] == "grad_out", f"{name}_backward must take grad_out first"
    dropped, extra = EXCEPTIONS.get(name, (set(), set()))
    expected = [a for a in forward if a[0] not in dropped]
    rest = backward[1:]
    keyword_only = [a for a in rest if a[0] in extra]
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for _, kind, _ in keyword_only), (
        f"{name}_backward: the extra arguments {sorted(extra)} must be keyword-only"
    )
    assert {a[0] for a in keyword_only} == extra
    assert [a for a in rest if a[0] not in extra] == expected, (
        f"{name}_backward{inspect.signature(OPS[name + '_backward'])} does not take the "
        f"arguments of {name}{inspect.signature(OPS[name])} (same names, order and defaults)"
    )


def test_every_backward_has_its_forward():
    orphans = [n for n in OPS if n.endswith("_backward") and n[: -len("_backward")] not in OPS]
    assert orphans == []


# ----------------------------------------------------------------------------- imports
PACKAGE = Path(cnn_course.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every module-level ``import``/``from ... import`` of the package
    (imports inside functions are deliberate lazy imports and do not make a cycle at load)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("cnn_course")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("cnn_course"):
                found.append((node.module, [a.name for a in node.names]))
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names in _imports(path):
            for item in names:  # `from cnn_course import nn` imports the module nn
                if f"{module}.{item}" in MODULES:
                    graph[name].add(f"{module}.{item}")
            if module in MODULES and module != "cnn_course":
                graph[name].add(module)
    return graph


def test_the_package_has_no_import_cycle():
    graph, state, cycles = _graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], f"import cycles: {cycles}"


def _private(name: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in name.split("."))


def test_no_private_name_is_imported_from_a_public_module():
    offences = []
    for name, path in MODULES.items():
        for module, names in _imports(path):
            if _private(module):
                continue  # a private module's names are the package's to share
            offences += [
                f"{name}: from {module} import {n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")  # dunders are public
            ]
    assert offences == []


@pytest.mark.parametrize("module", ["cnn_course.ops.conv", "cnn_course.ops.pooling"])
def test_public_ops_name_their_chapter_and_questions(module):
    """Each public op of convolution and pooling says where the book teaches it (d2l
    names the chapter that defines each function)."""
    mod = __import__(module, fromlist=["__all__"])
    missing = [
        name
        for name in mod.__all__
        if inspect.isfunction(getattr(mod, name))
        and "Book: chapter" not in (inspect.getdoc(getattr(mod, name)) or "")
    ]
    assert missing == []
