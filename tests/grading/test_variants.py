"""Exercise variants: drawn per student, graded against the library adapted to each variant.

For every variant of every exercise that has variants: a correct solution for that variant
scores full marks, the default solution (the instructor's) does not, and the conv2d battery
of buggy submissions loses exactly its cases in the default variant and in the non-default
ones. The drawing is deterministic and balanced; the per-student notebooks carry the
variant's signature and a self-check that a correct solution of that variant passes.

The variant solutions below are the instructor's solutions adapted the way a student who
understands them would (a transpose, a box conversion, another divisor): written here, not
taken from the library.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter

import pytest

from cnn_course.grading import classroom, notebooks, similarity, template, variants
from cnn_course.grading.manifest import DEFAULT_MANIFEST, load_manifest
from cnn_course.grading.runner import grade
from tests.grading.conftest import (
    EXERCISES,
    SEED,
    build_submission,
    by_id,
    checks,
    needs_sandbox,
    solution_source,
)
from tests.grading.conftest import variant as edited
from tests.grading.test_battery import BUGS

MANIFEST = {e.id: e for e in load_manifest()}
VARIED = [e for e in MANIFEST.values() if e.variants]
NHWC_IN = "    x = x.transpose(0, 3, 1, 2)\n"
TO_XYXY = "np.concatenate([{0}[:, :2] - {0}[:, 2:] / 2, {0}[:, :2] + {0}[:, 2:] / 2], axis=1)"

# (exercise, variant) -> the (old, new) edits that turn the instructor's solution into a
# correct solution of the variant.
EDITS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("conv2d", "nhwc"): [
        ("    n, _, h, w = x.shape\n",
         NHWC_IN + "    weight = weight.transpose(3, 2, 0, 1)\n    n, _, h, w = x.shape\n"),
        ("\n    return out", "\n    return out.transpose(0, 2, 3, 1)"),
    ],
    ("conv2d", "reflect"): [
        ("(ph, ph), (pw, pw)))", '(ph, ph), (pw, pw)), mode="reflect")'),
    ],
    ("max_pool2d", "nhwc"): [
        ("    n, c, h, w = x.shape\n", NHWC_IN + "    n, c, h, w = x.shape\n"),
        ("    return out", "    return out.transpose(0, 2, 3, 1)"),
    ],
    ("max_pool2d_backward", "grad_argmax"): [
        ("    routed = np.zeros(best.shape, dtype=bool)\n",
         "    routed = np.zeros(best.shape, dtype=bool)\n"
         "    index = np.zeros(best.shape, dtype=np.int64)\n"
         "    rows = np.arange(oh).reshape(-1, 1) * sh - ph\n"
         "    cols = np.arange(ow).reshape(1, -1) * sw - pw\n"),
        ("    for r, c in windows:\n",
         "    for k, (r, c) in enumerate(windows):\n"),
        ("        routed |= hit\n",
         "        routed |= hit\n"
         "        index = np.where(hit, (rows + k // kw) * w + cols + k % kw, index)\n"),
        ("    return grad_xp[:, :, ph : ph + h, pw : pw + w].copy()",
         "    return grad_xp[:, :, ph : ph + h, pw : pw + w].copy(), index"),
    ],
    ("avg_pool2d", "exclude_pad"): [
        ("    return out / np.asarray(kh * kw, dtype=x.dtype)",
         "    ones = np.pad(np.ones((h, w), dtype=x.dtype), ((ph, ph), (pw, pw)))\n"
         "    count = np.zeros((oh, ow), dtype=x.dtype)\n"
         "    for i in range(kh):\n"
         "        for j in range(kw):\n"
         "            count += ones[i : i + sh * oh : sh, j : j + sw * ow : sw]\n"
         "    return out / count"),
    ],
    ("avg_pool2d_backward", "exclude_pad"): [
        ("    share = grad_out / np.asarray(kh * kw, dtype=x.dtype)\n",
         "    ones = np.pad(np.ones((h, w), dtype=x.dtype), ((ph, ph), (pw, pw)))\n"
         "    count = np.zeros((oh, ow), dtype=x.dtype)\n"
         "    for i in range(kh):\n"
         "        for j in range(kw):\n"
         "            count += ones[i : i + sh * oh : sh, j : j + sw * ow : sw]\n"
         "    share = grad_out / count\n"),
    ],
    ("batch_norm", "nhwc"): [("(0, 2, 3)", "(0, 1, 2)"), ("(1, -1, 1, 1)", "(1, 1, 1, -1)")],
    ("batch_norm", "stats"): [
        ("    return xhat * weight.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)",
         "    out = xhat * weight.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)\n"
         "    return out, mean.reshape(-1), x.var(axis=(0, 2, 3), ddof=1)"),
    ],
    ("batch_norm_backward", "nhwc"): [
        ("(0, 2, 3)", "(0, 1, 2)"), ("(1, -1, 1, 1)", "(1, 1, 1, -1)"),
    ],
    ("sgd_momentum", "nesterov"): [
        ("p = p - lr * velocity", "p = p - lr * (g + momentum * velocity)"),
    ],
    ("box_iou", "cxcywh"): [
        ("    area_a =", f"    a = {TO_XYXY.format('a')}\n    b = {TO_XYXY.format('b')}\n"
                       "    area_a ="),
    ],
    ("nms", "cxcywh"): [
        ("    area =", f"    boxes = {TO_XYXY.format('boxes')}\n    area ="),
    ],
}  # fmt: skip


def solution(exercise: str, name: str) -> str:
    """A correct solution of variant ``name`` of ``exercise``."""
    e = MANIFEST[exercise]
    if name == e.default_variant:
        return solution_source(e.function)
    return edited(e.function, *EDITS[(exercise, name)])


def rounds() -> list[dict[str, str]]:
    """The variants, k-th of every exercise in round k: every variant is in one round."""
    most = max(len(e.variants) for e in VARIED)
    return [{e.id: e.variants[k].name for e in VARIED if k < len(e.variants)} for k in range(most)]


def test_enough_exercises_have_variants_and_the_required_ones_do():
    assert len(VARIED) >= 8 and all(len(e.variants) >= 2 for e in VARIED)
    assert {"conv2d", "max_pool2d", "max_pool2d_backward", "batch_norm", "nms"} <= {
        e.id for e in VARIED
    }
    assert set(EDITS) == {(e.id, v.name) for e in VARIED for v in e.variants[1:]}
    for e in VARIED:  # the default is the exercise as written: same reference and cases
        assert e.with_variant(e.default_variant).reference == e.reference
        for v in e.variants[1:]:
            assert e.with_variant(v.name).reference.startswith("cnn_course.")


def test_the_references_are_the_library_adapted():
    """Independent evidence for the adapters: PyTorch on the same arrays."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from cnn_course.grading import adapters

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 5, 6, 3)), rng.standard_normal((2, 2, 3, 4))
    want = torch.nn.functional.conv2d(
        torch.tensor(x).permute(0, 3, 1, 2), torch.tensor(w).permute(3, 2, 0, 1), padding=1
    ).permute(0, 2, 3, 1)
    np.testing.assert_allclose(adapters.conv2d_nhwc(x, w, padding=1), want.numpy(), atol=1e-12)
    x, w = rng.standard_normal((1, 2, 5, 6)), rng.standard_normal((3, 2, 3, 3))
    layer = torch.nn.Conv2d(2, 3, 3, padding=2, padding_mode="reflect", bias=False)
    layer.weight.data = torch.tensor(w)
    want = layer(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(adapters.conv2d_reflect(x, w, padding=2), want, atol=1e-12)
    x = rng.standard_normal((2, 3, 5, 6))
    want = torch.nn.functional.avg_pool2d(torch.tensor(x), 3, 2, 1, count_include_pad=False)
    np.testing.assert_allclose(adapters.avg_pool2d_exclude_pad(x, 3, 2, 1), want.numpy())
    _, want = torch.nn.functional.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    grad = rng.standard_normal(want.shape)
    assert np.array_equal(adapters.max_pool2d_backward_argmax(grad, x, 3, 2, 1)[1], want)
    _, _, var = adapters.batch_norm_train_stats(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(var, torch.tensor(x).var(dim=(0, 2, 3), unbiased=True).numpy())
    param, grads = rng.standard_normal(4), rng.standard_normal((3, 4))
    weight = torch.nn.Parameter(torch.tensor(param))
    opt = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=True)
    for g in grads:
        weight.grad = torch.tensor(g)
        opt.step()
    got = adapters.sgd_nesterov(param, grads, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(got, weight.detach().numpy(), atol=1e-12)


@needs_sandbox
@pytest.mark.parametrize("round_", range(3))
def test_a_correct_solution_of_every_variant_scores_full_marks(tmp_path, round_):
    chosen = rounds()[round_]
    codes = {MANIFEST[i].function: solution(i, name) for i, name in chosen.items()}
    submission = build_submission(tmp_path / "sub", codes)
    report = grade(
        submission, exercise_ids=list(chosen), seed=SEED, run_notebooks=False, variants=chosen
    )
    assert {i: checks(report, i) for i in chosen} == {i: [None] * MANIFEST[i].cases for i in chosen}
    assert report["total"] == report["max_total"]
    assert {row["id"]: row["variant"] for row in report["exercises"]} == chosen


@needs_sandbox
@pytest.mark.parametrize("round_", [1, 2])
def test_the_default_solution_fails_every_other_variant(tmp_path, round_):
    chosen = rounds()[round_]
    report = grade(
        build_submission(tmp_path / "sub", {}),
        exercise_ids=list(chosen),
        seed=SEED,
        run_notebooks=False,
        variants=chosen,
    )
    rows = by_id(report)
    assert chosen and all(rows[i]["points"] < rows[i]["max_points"] for i in chosen), {
        i: rows[i]["points"] for i in chosen
    }


def _buggy(bug: str, name: str) -> str:
    """The conv2d solution with ``bug`` introduced, adapted to variant ``name``. Only where
    the bug removed the line a variant edits (the padding) is that edit skipped: the bug
    wins."""
    source = edited("conv2d", *BUGS[bug][0])
    for old, new in EDITS.get(("conv2d", name), []):
        assert old in source or (bug, name) == ("padding ignored", "reflect"), (bug, old)
        source = source.replace(old, new, 1)
    return source


# Every bug in the default and the channels-last variant; the padding bugs in the reflection
# padding variant too.
BATTERY = [(bug, name) for name in ("nchw", "nhwc") for bug in BUGS] + [
    ("padding ignored", "reflect"),
    ("off-by-one output size", "reflect"),
    ("stride ignored in the windows", "reflect"),
]


@needs_sandbox
@pytest.mark.slow
@pytest.mark.parametrize(("bug", "name"), BATTERY)
def test_the_conv2d_battery_loses_exactly_its_cases_in_every_variant(grade_with, bug, name):
    _, expected = BUGS[bug]
    report = grade_with({"conv2d": _buggy(bug, name)}, ["conv2d"], variants={"conv2d": name})
    assert checks(report, "conv2d") == expected
    assert report["total"] == 2 * expected.count(None)


# ---- drawing ---------------------------------------------------------------------------------
def test_drawing_is_deterministic_keyed_and_roughly_balanced():
    ids = [f"s{i:04d}" for i in range(200)]
    key = "a course key"
    first = [variants.student_variants(s, VARIED, key) for s in ids]
    assert first == [variants.student_variants(s, VARIED, key) for s in ids]
    for e in VARIED:
        counts = Counter(chosen[e.id] for chosen in first)
        assert set(counts) == set(e.variant_names)
        expected = len(ids) / len(e.variants)
        assert all(abs(c - expected) < 0.3 * expected for c in counts.values()), (e.id, counts)
    other = [variants.student_variants(s, VARIED, "another key") for s in ids]
    assert other != first  # the key changes the drawing
    # Self-study: no student id, the default variants.
    assert variants.student_variants(None, VARIED, key) == {e.id: e.default_variant for e in VARIED}


def test_the_course_key_comes_from_option_environment_manifest_or_public_default(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(variants.KEY_VARIABLE, raising=False)
    assert variants.course_key() == variants.PUBLIC_KEY
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(DEFAULT_MANIFEST.read_text() + '\n[variants]\nkey = "from the file"\n')
    assert variants.course_key(None, manifest) == "from the file"
    monkeypatch.setenv(variants.KEY_VARIABLE, "from the environment")
    assert variants.course_key(None, manifest) == "from the environment"
    assert variants.course_key("given", manifest) == "given"


def test_variants_command_lists_who_got_what(tmp_path, capsys):
    roster = tmp_path / "roster"
    for s in ("alice", "bob"):
        (roster / s).mkdir(parents=True)
    ids_file = tmp_path / "ids.csv"
    ids_file.write_text("student\ncarol\n")
    assert variants.main([str(roster), str(ids_file), "dave", "--course-key", "k"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["student", *[e.id for e in VARIED]]
    assert [r[0] for r in rows[1:]] == ["alice", "bob", "carol", "dave"]
    for row in rows[1:]:
        assert row[1:] == [variants.draw(row[0], e, "k") for e in VARIED]
    assert variants.main(["not an id!"]) == 2


def test_explicit_variants_are_checked_against_the_manifest():
    exercises = list(MANIFEST.values())
    assert variants.parse_explicit(["conv2d=nhwc"], exercises) == {"conv2d": "nhwc"}
    for bad in (["conv2d=nope"], ["nope=nhwc"], ["conv2d"]):
        with pytest.raises(ValueError):
            variants.parse_explicit(bad, exercises)


# ---- per-student notebooks --------------------------------------------------------------------
def _students_differing_on(exercise: str) -> tuple[str, str]:
    """Two ids (drawn with the public key) with different variants of ``exercise``, the
    first of them on a non-default one."""
    e = MANIFEST[exercise]
    seen: dict[str, str] = {}
    for i in range(100):
        seen.setdefault(variants.draw(f"student{i}", e, variants.PUBLIC_KEY), f"student{i}")
    other = next(v for v in e.variant_names if v != e.default_variant)
    return seen[other], seen[e.default_variant]


def _run_cells(nb: dict, code: str | None = None, function: str = "") -> str:
    """Run the notebook's code cells here (trusted code), with the solution cell defining
    ``function`` replaced by ``code``; return what they printed."""
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            if code is not None and "solution" in cell["metadata"].get("tags", []):
                if f"def {function}(" in source:
                    source = code
            exec(compile(source, "<cell>", "exec"), namespace)  # noqa: S102
    return out.getvalue()


@pytest.mark.parametrize("exercise", ["conv2d", "max_pool2d_backward", "batch_norm", "nms"])
def test_notebooks_differ_per_student_and_self_check_their_variant(tmp_path, exercise, monkeypatch):
    monkeypatch.delenv(variants.KEY_VARIABLE, raising=False)
    e = MANIFEST[exercise]
    varied, plain = _students_differing_on(exercise)
    name = variants.draw(varied, e, variants.PUBLIC_KEY)
    for student in (varied, plain):
        assert template.main([str(tmp_path / student), "--student", student]) == 0
    mine = json.loads((tmp_path / varied / "exercises" / e.notebook).read_text())
    theirs = json.loads((tmp_path / plain / "exercises" / e.notebook).read_text())
    assert mine != theirs
    assert mine["metadata"]["cnn_course"]["student"] == varied
    assert mine["metadata"]["cnn_course"]["variants"][exercise] == name
    code = notebooks.solution_code(mine)
    assert variants.signature(code, e.function) == variants.signature(
        e.get_variant(name).stub, e.function
    )
    assert variants.signature(code, e.function) != variants.signature(
        notebooks.solution_code(theirs), e.function
    )  # its own docstring at least
    text = "".join("".join(c["source"]) for c in mine["cells"])
    assert f"(variant {name})" in text and e.get_variant(name).wording.splitlines()[0] in text
    assert "Makefile" in {p.name for p in (tmp_path / varied).iterdir()}
    assert f"--variant {exercise}={name}" in (tmp_path / varied / "Makefile").read_text()
    # The self-check: a correct solution of the variant passes, the default one does not.
    right = _run_cells(mine, solution(exercise, name), e.function)
    assert f"{e.function}: correct on the hand example" in right
    wrong = _run_cells(mine, solution_source(e.function), e.function)
    assert f"{e.function}: correct on the hand example" not in wrong
    assert f"{e.function}: not implemented yet" in _run_cells(mine)


def test_without_an_id_the_template_is_the_course_notebooks(tmp_path):
    assert template.main([str(tmp_path / "repo")]) == 0
    for path in (tmp_path / "repo" / "exercises").glob("*.ipynb"):
        assert path.read_bytes() == (EXERCISES / path.name).read_bytes()


def test_a_roster_file_writes_one_repository_per_student(tmp_path):
    roster = tmp_path / "ids.txt"
    roster.write_text("alice\nbob\n")
    out = tmp_path / "class"
    assert template.main([str(out), "--roster", str(roster), "--assignment", "week1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["alice", "bob"]
    for s in ("alice", "bob"):
        nb = json.loads((out / s / "exercises" / "01_convolution.ipynb").read_text())
        assert nb["metadata"]["cnn_course"]["student"] == s


# ---- the grader, the gradebook and similarity ------------------------------------------------
def test_similarity_compares_within_a_variant_only():
    prints = {"a": {"conv2d": list(range(20))}, "b": {"conv2d": list(range(20))}}
    same = {"a": {"conv2d": "nhwc"}, "b": {"conv2d": "nhwc"}}
    apart = {"a": {"conv2d": "nhwc"}, "b": {"conv2d": "nchw"}}
    assert [(r["student"], r["other"]) for r in similarity.compare_class(prints, {}, 0.8, same)]
    assert similarity.compare_class(prints, {}, 0.8, apart) == []
    reference = {"conv2d": [list(range(20))], "conv2d@nhwc": [list(range(100, 120))]}
    rows = similarity.compare_class(prints, reference, 0.8, apart)
    assert [(r["student"], r["variant"]) for r in rows] == [("b", "nchw")]


@needs_sandbox
@pytest.mark.slow
def test_a_class_with_variants_is_graded_from_the_ids(tmp_path, monkeypatch):
    """Two students on different conv2d variants, each with a correct solution of their own
    variant, and a third who handed in the default solution on a non-default variant."""
    monkeypatch.delenv(variants.KEY_VARIABLE, raising=False)
    varied, plain = _students_differing_on("conv2d")
    name = variants.draw(varied, MANIFEST["conv2d"], variants.PUBLIC_KEY)
    copier = next(
        f"x{i}"
        for i in range(100)
        if variants.draw(f"x{i}", MANIFEST["conv2d"], variants.PUBLIC_KEY) == name
    )
    roster = tmp_path / "roster"
    build_submission(roster / varied, {"conv2d": solution("conv2d", name)})
    build_submission(roster / plain, {})
    build_submission(roster / copier, {})  # the book's solution: the wrong specification
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        DEFAULT_MANIFEST.read_text() + '\n[[assignment]]\nname = "t"\nexercises = ["conv2d"]\n'
    )
    out = tmp_path / "out"
    args = [str(roster), "--out", str(out), "--jobs", "2", "--seed", "3", "--assignment", "t",
            "--no-notebooks", "--manifest", str(manifest)]  # fmt: skip
    assert classroom.main(args) == 0
    with open(out / "gradebook.csv", newline="") as fh:
        book = {r["student"]: r for r in csv.DictReader(fh)}
    assert float(book[varied]["total"]) == 10 and float(book[plain]["total"]) == 10
    assert float(book[copier]["total"]) < 10
    assert book[varied]["variants"] == f"conv2d={name}"
    report = json.loads((out / varied / "report.json").read_text())
    assert report["variants"] == {"conv2d": name}
    assert by_id(report)["conv2d"]["variant"] == name
    assert "- variants: conv2d: " in (out / varied / "report.md").read_text()
    # The metadata of a notebook is not trusted: a notebook claiming the default variant is
    # still graded as the id's variant.
    nb_path = roster / copier / "01_convolution.ipynb"
    nb = json.loads(nb_path.read_text())
    nb["metadata"]["cnn_course"] = {"student": copier, "variants": {"conv2d": "nchw"}}
    nb_path.write_text(json.dumps(nb))
    assert classroom.main([*args, "--student", copier]) == 0
    assert json.loads((out / copier / "report.json").read_text())["variants"] == {"conv2d": name}


@needs_sandbox
def test_grade_command_takes_a_student_id_or_named_variants(tmp_path, monkeypatch):
    monkeypatch.delenv(variants.KEY_VARIABLE, raising=False)
    from cnn_course.grading import cli

    submission = build_submission(tmp_path / "sub", {"conv2d": solution("conv2d", "reflect")})
    base = [str(submission), "--seed", str(SEED), "--exercise", "conv2d", "--no-notebooks"]
    named = tmp_path / "named.json"
    assert cli.main([*base, "--variant", "conv2d=reflect", "--json", str(named)]) == 0
    report = json.loads(named.read_text())
    assert report["total"] == 10 and report["variants"] == {"conv2d": "reflect"}
    student = next(
        f"s{i}"
        for i in range(100)
        if variants.draw(f"s{i}", MANIFEST["conv2d"], variants.PUBLIC_KEY) == "nhwc"
    )
    drawn = tmp_path / "drawn.json"
    assert cli.main([*base, "--student", student, "--json", str(drawn)]) == 0
    report = json.loads(drawn.read_text())
    assert report["student"] == student and report["variants"] == {"conv2d": "nhwc"}
    assert report["total"] < 10  # the reflection-padding answer to the channels-last question
    assert cli.main([*base, "--variant", "conv2d=nope"]) == 2


@needs_sandbox
def test_a_generated_notebook_with_its_variant_solution_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.delenv(variants.KEY_VARIABLE, raising=False)
    student, _ = _students_differing_on("nms")
    name = variants.draw(student, MANIFEST["nms"], variants.PUBLIC_KEY)
    assert template.main([str(tmp_path / "repo"), "--student", student]) == 0
    path = tmp_path / "repo" / "exercises" / "14_detection.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        for e in ("box_iou", "nms", "average_precision"):
            if "solution" in cell["metadata"].get("tags", []) and f"def {e}(" in source:
                chosen = variants.draw(student, MANIFEST[e], variants.PUBLIC_KEY)
                code = solution(e, chosen) if chosen else solution_source(e)
                cell["source"] = code.splitlines(keepends=True)
    path.write_text(json.dumps(nb))
    submission = tmp_path / "sub"
    submission.mkdir()
    path.rename(submission / path.name)
    report = grade(
        submission,
        exercise_ids=["box_iou", "nms", "average_precision"],
        seed=SEED,
        variants=variants.student_variants(student, VARIED, variants.PUBLIC_KEY),
    )
    assert report["notebooks"]["14_detection.ipynb"]["runs"] is True
    assert report["total"] == report["max_total"]
    assert by_id(report)["nms"]["variant"] == name
