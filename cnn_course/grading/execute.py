"""Grade one case: make it, compute the reference, run the exercise code, compare.

Used by the grading suite (:mod:`cnn_course.grading.suite`). The reference runs here, in the
trusted process, on its own copy of the inputs; the sandboxed harness gets another copy (as
``.npz`` bytes on its standard input) and never sees the expected values.
"""

from __future__ import annotations

import importlib
from typing import Any

from cnn_course.backend import np
from cnn_course.grading import sandbox
from cnn_course.grading.cases import Case, make_case
from cnn_course.grading.compare import CaseFailed, check_inputs_unchanged, compare
from cnn_course.grading.manifest import Exercise


def resolve(dotted: str) -> Any:
    """The object at a dotted path such as ``cnn_course.functional.conv2d``."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value


def expected_result(exercise: Exercise, case: Case) -> Any:
    """The reference's answer, computed on copies (a reference may not alter the case)."""
    reference = resolve(exercise.reference)
    args = [_copy(v) for v in case.args]
    kwargs = {k: _copy(v) for k, v in case.kwargs.items()}
    return reference(*args, **kwargs)


def grade_case(
    box: sandbox.Sandbox,
    exercise: Exercise,
    index: int,
    seed: int,
    source: str,
) -> sandbox.Outcome:
    """Run case ``index`` in a fresh sandbox; raise :class:`CaseFailed` unless the result is
    right."""
    case = make_case(exercise.generator, seed, exercise.id, index)
    expected = expected_result(exercise, case)
    call, sent = sandbox.encode_case(case.args, case.kwargs)
    outcome = sandbox.run_case(
        box, source, exercise.function, call, sent, exercise.timeout, exercise.memory_mb
    )
    where = f"{exercise.function}({case.describe()})"
    if outcome.status == "error":
        raise CaseFailed("raised", f"{where} raised {outcome.message}")
    if outcome.status != "ok":
        raise CaseFailed(outcome.status, f"{where}: {outcome.message}")
    compare(expected, outcome.result, outcome.arrays, exercise.tolerance, where)
    check_inputs_unchanged(sent, outcome.inputs_after)
    return outcome
