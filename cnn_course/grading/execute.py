"""Grade one case: make it, compute the reference, run the exercise code, compare.

Used by the grading suite (:mod:`cnn_course.grading.suite`). The reference runs here, in the
trusted process, on its own copy of the inputs; the child gets another copy through
``inputs.npz`` and never sees the expected values.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
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


def _encode(value: Any, key: str, arrays: dict) -> dict:
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    return {"value": list(value) if isinstance(value, tuple) else value}


def write_case(case: Case, case_dir: Path) -> dict:
    """Write ``inputs.npz`` and ``call.json`` into ``case_dir``; return the input arrays."""
    arrays: dict = {}
    call = {
        "args": [_encode(v, f"arg{i}", arrays) for i, v in enumerate(case.args)],
        "kwargs": {k: _encode(v, k, arrays) for k, v in case.kwargs.items()},
    }
    np.savez(case_dir / "inputs.npz", **arrays)
    (case_dir / "call.json").write_text(json.dumps(call))
    return arrays


def _copy(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value


def expected_result(exercise: Exercise, case: Case) -> Any:
    """The reference's answer, computed on copies (a reference may not alter the case)."""
    reference = resolve(exercise.reference)
    args = [_copy(v) for v in case.args]
    kwargs = {k: _copy(v) for k, v in case.kwargs.items()}
    return reference(*args, **kwargs)


def grade_case(
    server: sandbox.ForkServer,
    exercise: Exercise,
    index: int,
    seed: int,
    module_file: Path,
    case_dir: Path,
) -> sandbox.Outcome:
    """Run case ``index``; raise :class:`CaseFailed` unless the result is right."""
    case = make_case(exercise.generator, seed, exercise.id, index)
    expected = expected_result(exercise, case)
    sent = write_case(case, sandbox.private_dir(case_dir))
    sandbox.hand_over(case_dir)
    outcome = sandbox.run_case(
        server, case_dir, module_file, exercise.function, exercise.timeout, exercise.memory_mb
    )
    where = f"{exercise.function}({case.describe()})"
    if outcome.status == "error":
        raise CaseFailed("raised", f"{where} raised {outcome.message}")
    if outcome.status != "ok":
        raise CaseFailed(outcome.status, f"{where}: {outcome.message}")
    compare(expected, outcome.result, outcome.arrays, exercise.tolerance, where)
    check_inputs_unchanged(sent, outcome.inputs_after)
    return outcome
