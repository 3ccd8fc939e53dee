"""Compare what the exercise code returned (as the child described it) with the reference.

Everything here runs in the grader with its own NumPy: nothing the exercise code did to NumPy
in its process matters. A failure is a :class:`CaseFailed` with the name of the check and a
message that never contains the expected values.
"""

from __future__ import annotations

from typing import Any

from cnn_course.backend import np


class CaseFailed(AssertionError):
    """A case failed ``check`` (type, shape, dtype, not finite, values, mutated input,
    timeout, memory, banned import, banned call, raised, crashed, missing)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


def _kind(expected: Any) -> str:
    if isinstance(expected, np.ndarray):
        return "ndarray"
    if isinstance(expected, (tuple, list)):
        return "tuple"
    if expected is None:
        return "none"
    if isinstance(expected, (bool, np.bool_)):
        return "bool"
    if isinstance(expected, (int, np.integer)):
        return "int"
    return "float"


def compare(expected: Any, got: dict, arrays: dict, tolerance: dict, where: str = "result") -> None:
    """Raise :class:`CaseFailed` unless ``got`` (the child's description) matches ``expected``."""
    want = _kind(expected)
    kind = got.get("kind") if isinstance(got, dict) else None
    if want == "tuple":
        if kind not in ("tuple", "list"):
            raise CaseFailed("type", f"{where} should be a tuple, got {_name(got)}")
        items = got.get("items", [])
        if len(items) != len(expected):
            raise CaseFailed("type", f"{where} should have {len(expected)} items, got {len(items)}")
        for i, (e, g) in enumerate(zip(expected, items, strict=True)):
            compare(e, g, arrays, tolerance, f"{where}[{i}]")
        return
    ok_kinds = {"float": ("float", "int")}.get(want, (want,))
    if kind not in ok_kinds:
        raise CaseFailed("type", f"{where} should be {_article(want)}, got {_name(got)}")
    if want == "ndarray":
        _compare_array(expected, arrays.get(got.get("key")), tolerance, where)
    elif want == "float":
        rtol, atol = tolerance["float64"]
        if not np.isfinite(got["value"]):
            raise CaseFailed("not finite", f"{where} is not finite")
        if not np.isclose(got["value"], expected, rtol=rtol, atol=atol):
            raise CaseFailed("values", f"{where} differs from the expected value")
    elif want in ("int", "bool") and got["value"] != expected:
        raise CaseFailed("values", f"{where} differs from the expected value")


def _article(kind: str) -> str:
    return {"ndarray": "a numpy.ndarray", "none": "None", "int": "an int"}.get(kind, f"a {kind}")


def _name(got: Any) -> str:
    if not isinstance(got, dict):
        return "nothing readable"
    if got.get("kind") == "other":
        return str(got.get("type"))[:100]
    return _article(str(got.get("kind")))


def _compare_array(expected: np.ndarray, got: Any, tolerance: dict, where: str) -> None:
    if not isinstance(got, np.ndarray):
        raise CaseFailed("type", f"{where}: no array came back")
    if got.shape != expected.shape:
        raise CaseFailed("shape", f"{where} has shape {got.shape}, expected {expected.shape}")
    if got.dtype != expected.dtype:
        raise CaseFailed("dtype", f"{where} has dtype {got.dtype}, expected {expected.dtype}")
    if expected.dtype.kind in "fc":
        bad = ~np.isfinite(got)
        if bad.any():
            raise CaseFailed("not finite", f"{where} has {int(bad.sum())} NaN or inf entries")
        rtol, atol = tolerance.get(str(expected.dtype), tolerance["float64"])
        wrong = ~np.isclose(got, expected, rtol=rtol, atol=atol)
    else:
        wrong = got != expected
    if wrong.any():
        raise CaseFailed(
            "values",
            f"{where}: {int(wrong.sum())} of {wrong.size} entries differ from the expected",
        )


def check_inputs_unchanged(before: dict, after: dict | None) -> None:
    """Every array argument must come back exactly as it was sent."""
    for key, value in before.items():
        back = None if after is None else after.get(key)
        if (
            not isinstance(back, np.ndarray)
            or back.shape != value.shape
            or back.dtype != value.dtype
            or not np.array_equal(back, value, equal_nan=value.dtype.kind in "fc")
        ):
            raise CaseFailed("mutated input", f"the function modified its input array {key}")
