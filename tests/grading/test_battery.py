"""Buggy and hostile submissions lose exactly the points they should.

The conv2d cases follow fixed templates (cnn_course.grading.cases.CONV_TEMPLATES): case 0
stride 1, no padding, bias, float32; case 1 stride 2, padding 1, bias, float64; case 2
stride (1, 2), padding (0, 1), no bias, float32; case 3 stride 1, padding 2, bias, float64;
case 4 stride 3, 1x1 kernel, bias, float64. Each case is worth 2 of conv2d's 10 points.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from cnn_course.grading import cli, sandbox
from cnn_course.grading.manifest import REPOSITORY
from cnn_course.grading.runner import grade
from tests.grading.conftest import (
    SEED,
    build_submission,
    by_id,
    checks,
    needs_sandbox,
    variant,
)

pytestmark = needs_sandbox

OUT_SIZE = "(h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1"
RETURN = "\n    return out"

BUGS = {
    # name: (edits to the conv2d solution, failed check per case)
    "off-by-one output size": (
        [(OUT_SIZE, "(h + 2 * ph - kh) // sh, (w + 2 * pw - kw) // sw")],
        ["shape"] * 5,
    ),
    "stride ignored in the windows": (
        [("i : i + sh * oh : sh, j : j + sw * ow : sw", "i : i + oh, j : j + ow")],
        [None, "values", "values", None, "values"],
    ),
    "flipped kernel (true convolution)": (
        [("weight[:, :, i, j]", "weight[:, :, kh - 1 - i, kw - 1 - j]")],
        ["values", "values", "values", "values", None],
    ),
    "padding ignored": (
        [
            ("xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))", "xp = x"),
            (OUT_SIZE, "(h - kh) // sh + 1, (w - kw) // sw + 1"),
        ],
        [None, "shape", "shape", "shape", None],
    ),
    "forgot the bias": (
        [("out += bias.reshape(1, -1, 1, 1)", "pass")],
        ["values", "values", None, "values", "values"],
    ),
    "mutates its input": ([(RETURN, "\n    x.fill(0)" + RETURN)], ["mutated input"] * 5),
    "returns NaN": ([(RETURN, "\n    out[0, 0, 0, 0] = np.nan" + RETURN)], ["not finite"] * 5),
    "always float64": (
        [("np.zeros((n, c_out, oh, ow), dtype=x.dtype)", "np.zeros((n, c_out, oh, ow))")],
        ["dtype", None, "dtype", None, None],
    ),
    "flattened output": (
        [(RETURN, "\n    return out.reshape(n, c_out, -1)")],
        ["shape"] * 5,
    ),
}


@pytest.mark.parametrize("bug", list(BUGS))
def test_buggy_conv2d_loses_exactly_its_cases(grade_with, bug):
    edits, expected = BUGS[bug]
    report = grade_with({"conv2d": variant("conv2d", *edits)}, ["conv2d"])
    assert checks(report, "conv2d") == expected
    assert report["total"] == 2 * expected.count(None)
    assert report["max_total"] == 10


def test_every_check_message_hides_the_expected_values(grade_with):
    report = grade_with({"conv2d": variant("conv2d", *BUGS["forgot the bias"][0])}, ["conv2d"])
    messages = [c["message"] for c in by_id(report)["conv2d"]["cases"] if not c["passed"]]
    assert messages and all("entries differ from the expected" in m for m in messages)
    assert all("[" not in m.split("conv2d(")[0] for m in messages)


# ------------------------------------------------------------------------ hostile code

OUTPUT_SIZE = variant("conv_output_size")  # the correct solution, to wrap hostile code around
RIGHT_RELU = variant("relu_backward")


def test_infinite_loop_costs_its_own_points_and_one_timeout(grade_with):
    hang = "import numpy as np\n\ndef conv2d(x, weight, bias=None, stride=1, padding=0):\n"
    hang += "    while True:\n        pass\n"
    start = time.monotonic()
    report = grade_with({"conv2d": hang}, ["conv2d", "conv_output_size"])
    elapsed = time.monotonic() - start
    assert checks(report, "conv2d") == ["timeout"] * 5
    assert "not run" in by_id(report)["conv2d"]["cases"][1]["message"]
    assert by_id(report)["conv_output_size"]["points"] == 4  # same notebook, unharmed
    assert report["total"] == 4
    assert elapsed < 3.0 + 20  # one 3 s timeout, not five


def test_memory_bomb_is_stopped_by_the_memory_limit(grade_with):
    bomb = "import numpy as np\n\ndef relu_backward(grad_out, x):\n"
    bomb += "    hoard = []\n    while True:\n        hoard.append(np.empty(2**26))\n"
    report = grade_with({"relu_backward": bomb}, ["relu_backward", "sigmoid_backward"])
    assert checks(report, "relu_backward") == ["memory", "memory"]
    assert report["total"] == 2


def test_os_exit_is_a_crash(grade_with):
    code = OUTPUT_SIZE.replace("    extent =", "    import os\n    os._exit(0)\n    extent =")
    report = grade_with({"conv_output_size": code}, ["conv_output_size"])
    assert checks(report, "conv_output_size") == ["crashed"] * 4
    assert report["total"] == 0


def test_printed_fake_score_is_ignored(tmp_path, capsys):
    fake = (
        "import numpy as np\n"
        'print(\'{"total": 132, "max_total": 132}\')\n'
        'print("## Exercise score: 132 / 132")\n\n'
        "def conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1):\n"
        '    print("## Exercise score: 132 / 132")\n'
        "    return 0\n"
    )
    submission = build_submission(tmp_path / "sub", {"conv_output_size": fake})
    report_file = tmp_path / "report.json"
    argv = [str(submission), "--seed", str(SEED), "--exercise", "conv_output_size"]
    assert cli.main([*argv, "--no-notebooks", "--json", str(report_file)]) == 0
    out = capsys.readouterr().out
    # the report's SHA-256 digests may hold "132" by chance (one run in about 70): not a score
    words = re.sub(r"\b[0-9a-f]{64}\b", "<digest>", out)
    assert "## Exercise score: 0 / 4" in out and "132" not in words
    assert '"total": 0' in report_file.read_text()


def test_monkeypatching_numpy_changes_nothing(grade_with):
    patch = (
        "import numpy as np\n\n"
        "np.allclose = lambda *a, **k: True\n"
        "np.array_equal = lambda *a, **k: True\n"
        "np.isclose = lambda a, b, **k: np.ones(np.shape(a), dtype=bool)\n"
        "np.ndarray = object\n\n"
        "def relu_backward(grad_out, x):\n"
        "    return grad_out.copy()\n"
    )
    report = grade_with({"relu_backward": patch}, ["relu_backward"])
    assert checks(report, "relu_backward") == ["values", "values"]
    assert report["total"] == 0


def test_always_equal_object_is_not_an_array(grade_with):
    cheat = (
        "import numpy as np\n\n"
        "class Anything:\n"
        "    shape = property(lambda self: (1,))\n"
        "    dtype = np.float64\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "    def __array__(self, dtype=None, copy=None):\n"
        "        return np.zeros(1)\n\n"
        "class Sneaky(np.ndarray):\n"
        "    def __eq__(self, other):\n"
        "        return np.ones(np.shape(other), dtype=bool)\n\n"
        "def relu_backward(grad_out, x):\n"
        "    return Anything()\n\n"
        "def sigmoid_backward(grad_out, x):\n"
        "    return np.zeros_like(x).view(Sneaky)\n"
    )
    report = grade_with(
        {"relu_backward": cheat, "sigmoid_backward": "import numpy as np\n"},
        ["relu_backward", "sigmoid_backward"],
    )
    assert checks(report, "relu_backward") == ["type", "type"]
    assert checks(report, "sigmoid_backward") == ["type", "type"]
    assert report["total"] == 0


ROUTES = {
    "import statement": "import cnn_course.functional as F\n",
    "from-import": "from cnn_course.functional import conv_output_size as reference\n",
    "importlib": "import importlib\nF = importlib.import_module('cnn_course.functional')\n",
    "__import__": "F = __import__('cnn_' + 'course')\n",
    "exec of its source": "exec(open('/work/main/cnn_' + 'course/ops/conv.py').read())\n",
    "sys.path": "import sys\nsys.path.insert(0, '/work/main')\nimport cnn_course\n",
    "builtins reached through numpy": (
        "import numpy as np\n"
        "_load = getattr(np, '_' + '_builtins__')['_' + '_import__']\n"
        "F = _load('cnn' + '_course.functional', fromlist=['x'])\n"
    ),
    # A finder on sys.meta_path can be taken out by the code it guards; an audit hook cannot.
    "guard taken off sys.meta_path, importlib from sys.modules": (
        "import os\n"
        "finders = os.sys.meta_path\n"
        "finders[:] = [f for f in finders if 'Guard' not in type(f).__name__]\n"
        "F = os.sys.modules['importlib'].import_module('cnn' + '_course.functional')\n"
    ),
    # importlib looks for a package without an audit event: where the library cannot be
    # found (not installed for this interpreter), the attempt is refused all the same.
    "the library looked for where it cannot be found": (
        "import os\n"
        "os.sys.meta_path.clear()\n"
        "os.sys.path.clear()\n"
        "F = os.sys.modules['importlib'].import_module('cnn' + '_course.functional')\n"
    ),
    "the library's source read as text": (
        f"SOURCE = open({str(REPOSITORY)!r} + '/cnn' + '_course/ops/conv.py').read()\n"
    ),
    "the library reached through a directory descriptor": (
        "import os\n"
        f"top = os.open({str(REPOSITORY.parent)!r}, os.O_RDONLY)\n"
        f"name = {REPOSITORY.name!r} + '/cnn' + '_course/ops/conv.py'\n"
        "SOURCE = os.read(os.open(name, os.O_RDONLY, dir_fd=top), 99)\n"
    ),
    # Relative to a descriptor of /tmp the path names the library; relative to the working
    # directory, where a check on the path alone would look, it names nothing.
    "the library reached through a descriptor of another directory": (
        "import os\n"
        "top = os.open('/tmp', os.O_RDONLY)\n"
        f"name = '..' + {str(REPOSITORY)!r} + '/cnn' + '_course/ops/conv.py'\n"
        "SOURCE = os.read(os.open(name, os.O_RDONLY, dir_fd=top), 99)\n"
    ),
    "another program": "import os\nos.system('python3 -c \"import cnn' + '_course\"')\n",
    "a program started below subprocess": "import _posixsubprocess\n",
    "ctypes reached through numpy": "import numpy as np\nLIBC = np.ctypeslib.ctypes.CDLL(None)\n",
    # The guard may rely on nothing the code it guards can rebind.
    "the guard's helpers rebound": (
        "import os\n"
        "os.path.realpath = lambda path: '/nowhere'\n"
        "harness = os.sys.modules['_' + '_main__']\n"
        "harness.BLOCKED, harness.REFUSED_EVENTS, harness.BANNED_EXIT = (), (), 0\n"
        "F = os.sys.modules['importlib'].import_module('cnn' + '_course.functional')\n"
    ),
    "the guard searched for among the objects": (
        "import os\n"
        "gc = os.sys.modules['importlib'].import_module('gc')\n"
        "HOOKS = [o for o in gc.get_objects() if 'Guard' in repr(o)]\n"
    ),
}


# Refused by the syntax check or by the harness's audit hook, with that verdict; every other
# route fails because, inside the sandbox, the library and its files do not exist.
VERDICT = {"banned import"}
ABSENT = {"banned import", "raised"}


@pytest.mark.parametrize("route", list(ROUTES))
def test_importing_the_library_is_refused(grade_with, route):
    code = ROUTES[route] + "\n\n" + OUTPUT_SIZE
    report = grade_with({"conv_output_size": code}, ["conv_output_size"])
    found = set(checks(report, "conv_output_size"))
    assert found <= (ABSENT if "read as text" in route or "descriptor" in route else VERDICT)
    assert report["total"] == 0


def test_a_module_that_is_not_installed_is_an_error_not_a_banned_import(grade_with):
    code = "import no_such_module_anywhere\n\n" + OUTPUT_SIZE
    report = grade_with({"conv_output_size": code}, ["conv_output_size"])
    assert checks(report, "conv_output_size") == ["raised"] * 4
    message = by_id(report)["conv_output_size"]["cases"][0]["message"]
    assert "No module named 'no_such_module_anywhere'" in message


def _scipy_extension() -> str:
    """The compiled module that holds SciPy's correlation (SciPy comes with scikit-learn)."""
    spec = importlib.util.find_spec("scipy")
    if spec is None:
        pytest.skip("SciPy is not installed")
    (path,) = Path(spec.submodule_search_locations[0], "signal").glob("_sigtools.*")
    return str(path)


BLOCKED_FILES = {
    # '_sigtools' is no blocked package's name: only the file it comes from gives it away
    "a blocked package's compiled module loaded under another name": (
        "import os\n"
        "util = os.sys.modules['importlib'].import_module('importlib.util')\n"
        "SPEC = util.spec_from_file_location('_sigtools', {path!r})\n"
        "CORRELATE = util.module_from_spec(SPEC)._correlateND\n"
    ),
    "a blocked package's compiled module copied": (
        "import os\nwith open({path!r}, 'rb') as fh:\n    COPY = fh.read()\n"
    ),
}


@pytest.mark.parametrize("route", list(BLOCKED_FILES))
def test_the_blocked_packages_files_are_refused(grade_with, route):
    code = BLOCKED_FILES[route].format(path=_scipy_extension()) + "\n\n" + OUTPUT_SIZE
    report = grade_with({"conv_output_size": code}, ["conv_output_size"])
    assert set(checks(report, "conv_output_size")) <= ABSENT  # the file is not there
    assert report["total"] == 0


def test_result_files_that_unpack_to_more_than_the_limit_are_refused(grade_with):
    """The result file is the exercise code's to write in: a compressed archive declaring
    far more than it holds must not be unpacked by the grader."""
    bomb = (
        "import io, os\n"
        "import numpy as np\n\n"
        "def relu_backward(grad_out, x):\n"
        "    fd = os.sys.modules['_' + '_main__'].RESULT_FD\n"
        "    buffer = io.BytesIO()\n"
        "    np.savez_compressed(buffer, out=np.zeros(12_000_000), **{'input.arg0': grad_out,\n"
        "                        'input.arg1': x})\n"
        '    os.write(fd, b\'{"status": "ok", "result": {"kind": "ndarray", "key": "out"}}\\n\')\n'
        "    os.write(fd, buffer.getvalue())\n"
        "    os._exit(0)\n"
    )
    report = grade_with({"relu_backward": bomb}, ["relu_backward"])
    assert checks(report, "relu_backward") == ["crashed", "crashed"]
    assert "unreadable result" in by_id(report)["relu_backward"]["cases"][0]["message"]


def test_unusual_but_correct_returns_score_full_marks(grade_with):
    """Fortran order, read-only, non-contiguous and broadcast returns, ``as_strided`` and
    ``einsum``, and a helper defined in another solution cell of the notebook are all fine."""
    relu = (
        "import numpy as np\n\n"
        "def relu_backward(grad_out, x):\n"
        "    out = np.asfortranarray(grad_out * (x > 0))\n"
        "    out.flags.writeable = False\n"
        "    return out\n\n"
        "def sigmoid_backward(grad_out, x):\n"
        "    s = 1 / (1 + np.exp(-x))\n"
        "    out = np.zeros(x.shape + (2,), x.dtype)\n"
        "    out[..., 1] = grad_out * s * (1 - s)\n"
        "    return out[..., 1]\n"
    )
    helper = (
        "from numpy.lib.stride_tricks import as_strided\n\n\n"
        "def windows(xp, kh, kw, sh, sw, oh, ow):\n"
        "    n, c = xp.shape[:2]\n"
        "    s0, s1, s2, s3 = xp.strides\n"
        "    strides = (s0, s1, s2 * sh, s3 * sw, s2, s3)\n"
        "    return as_strided(xp, (n, c, oh, ow, kh, kw), strides, writeable=False)\n"
    )
    conv = variant(
        "conv2d",
        ("    out = np.zeros((n, c_out, oh, ow), dtype=x.dtype)\n", ""),
        ("    for i in range(kh):\n        for j in range(kw):\n", ""),
        ("            window = xp[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw]", ""),
        ("  # (N, C_in, oh, ow)\n", ""),
        (
            '            out += np.einsum("nchw,fc->nfhw", window, weight[:, :, i, j])',
            "    win = windows(xp, kh, kw, sh, sw, oh, ow)\n"
            '    out = np.einsum("nchwij,fcij->nfhw", win, weight, optimize=True)',
        ),
        (RETURN, "\n    return np.broadcast_to(out, out.shape)"),
    )
    replacements = {
        "relu_backward": relu,
        "conv2d": conv,
        "conv_output_size": OUTPUT_SIZE + "\n\n" + helper,
    }
    exercises = ["conv2d", "conv_output_size", "relu_backward", "sigmoid_backward"]
    report = grade_with(replacements, exercises)
    assert [c for e in exercises for c in checks(report, e) if c] == []
    assert report["total"] == report["max_total"] == 18


def test_malformed_notebooks_cost_their_own_exercises_only(grade_with, tmp_path):
    """A notebook the JSON decoder cannot nest into, a cell source that is not text, cell
    metadata that is not a table, text that is not Unicode: each is refused as missing; code
    nested too deeply for the parser is a crash; and the grader carries on."""
    deep = {"relu_backward": "x = " + "1 + " * 200_000 + "1\n"}
    submission = build_submission(tmp_path / "submission", deep)
    (submission / "05_receptive_field.ipynb").write_text("[" * 200_000)
    bad_cells = [
        ("08_counting", "source", [1, 2]),
        ("13_dropout", "metadata", []),
        ("15_knn", "source", "x = 1  # \ud800\n"),  # a lone surrogate, escaped in the JSON
    ]
    for name, key, value in bad_cells:
        path = submission / f"{name}.ipynb"
        nb = json.loads(path.read_text())
        nb["cells"][-1][key] = value
        path.write_text(json.dumps(nb))
    broken = ["receptive_field", "conv_cost", "dropout", "knn_predict"]
    report = cli_grade(submission, [*broken, "relu_backward", "conv_output_size"])
    assert all(checks(report, e) == ["missing"] * len(checks(report, e)) for e in broken)
    assert checks(report, "relu_backward") == ["crashed", "crashed"]
    assert report["total"] == 4


def test_test_markers_cannot_hide_a_cell_that_fails(tmp_path):
    """nbval skips a cell, or accepts its exception, when a tag or a comment says so: in a
    submission that would report a broken notebook as running top to bottom."""
    submission = build_submission(tmp_path / "submission", {})
    path = submission / "05_receptive_field.ipynb"
    nb = json.loads(path.read_text())
    failing = [
        ({"tags": ["raises-exception"]}, "1 / 0"),
        ({"tags": ["nbval-skip"]}, "1 / 0"),
        ({}, "# NBVAL_SKIP\n1 / 0"),
        ({}, "# NBVAL_RAISES_EXCEPTION\n1 / 0"),
    ]
    nb["cells"] += [
        {"cell_type": "code", "metadata": meta, "source": src, "outputs": [],
         "execution_count": None}
        for meta, src in failing
    ]  # fmt: skip
    path.write_text(json.dumps(nb))
    report = grade(submission, exercise_ids=["receptive_field"], seed=SEED)
    assert report["notebooks"]["05_receptive_field.ipynb"]["runs"] is False
    assert report["total"] == 3


def cli_grade(submission: Path, exercises: list[str]) -> dict:
    """Grade through the command line, as an instructor would, and read the JSON report."""
    report_file = submission.parent / "report.json"
    argv = [str(submission), "--seed", str(SEED), "--no-notebooks", "--json", str(report_file)]
    for e in exercises:
        argv += ["--exercise", e]
    assert cli.main(argv) == 0
    return json.loads(report_file.read_text())


def test_numpy_convolve_is_banned_where_the_exercise_is_the_convolution(grade_with):
    code = variant("conv2d", ("out = np.zeros(", "np.convolve([1.0], [1.0])\n    out = np.zeros("))
    report = grade_with({"conv2d": code, "relu_backward": RIGHT_RELU}, ["conv2d"])
    assert checks(report, "conv2d") == ["banned call"] * 5


@pytest.fixture
def open_dir():
    """A world-writable directory that the unprivileged cases can reach (pytest's tmp_path
    is private to root): only the grader's process control protects the files in it."""
    path = Path(tempfile.mkdtemp(prefix="shared-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_background_process_cannot_be_started(open_dir, tmp_path):
    """A daemon that would outlive its case to rewrite the report cannot even start: the
    sandbox refuses fork (and the report is outside it anyway)."""
    report_file = open_dir / "report.json"
    daemon = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    for i in range(100):\n"
        f"        open({str(report_file)!r}, 'w').write('{{\"total\": 999}}')\n"
        "        time.sleep(0.05)\n"
        "    os._exit(0)\n\n"
    )
    submission = build_submission(tmp_path / "sub", {"conv_output_size": daemon + OUTPUT_SIZE})
    argv = [str(submission), "--seed", str(SEED), "--exercise", "conv_output_size"]
    assert cli.main([*argv, "--no-notebooks", "--json", str(report_file)]) == 0
    written = report_file.read_text()
    time.sleep(0.5)  # a survivor would rewrite the report by now
    assert report_file.read_text() == written
    report = json.loads(written)
    assert report["total"] == 0
    assert checks(report, "conv_output_size") == ["raised"] * 4
    assert "Operation not permitted" in by_id(report)["conv_output_size"]["cases"][0]["message"]
    assert sandbox.descendants(os.getpid()) == []


def test_writing_the_report_during_grading_is_undone(open_dir, tmp_path):
    report_file = open_dir / "report.json"
    link_target = tmp_path / "precious.txt"
    link_target.write_text("keep me")
    writer = (
        "import os\n"
        "try:\n"
        f"    open({str(report_file)!r}, 'w').write('{{\"total\": 999}}')\n"
        "except OSError:\n"
        "    try:\n"
        f"        os.symlink({str(link_target)!r}, {str(report_file)!r})\n"
        "    except OSError:\n"
        "        pass\n\n"
    )
    submission = build_submission(tmp_path / "sub", {"conv_output_size": writer + OUTPUT_SIZE})
    argv = [str(submission), "--seed", str(SEED), "--exercise", "conv_output_size"]
    assert cli.main([*argv, "--no-notebooks", "--json", str(report_file)]) == 0
    assert not report_file.is_symlink()
    assert '"total": 4' in report_file.read_text()
    assert link_target.read_text() == "keep me"


def test_cases_have_no_capabilities_and_no_host_files(open_dir, grade_with):
    """Whether the grader runs as root or not, the case has no capability and does not see
    the host's files: a world-writable directory of the host is not there."""
    probe = open_dir / "probe"
    code = (
        "import os\n\n"
        "def capabilities():\n"
        "    status = open('/proc/self/status').read()\n"
        "    return int(status.split('CapEff:')[1].split()[0], 16)\n\n"
        "def wrote():\n"
        "    try:\n"
        f"        open({str(probe)!r}, 'w').write(str(os.getuid()))\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n\n"
    )
    refuse = "    if capabilities() or wrote():\n        return -1\n    extent ="
    code += OUTPUT_SIZE.replace("    extent =", refuse)
    report = grade_with({"conv_output_size": code}, ["conv_output_size"])
    assert report["total"] == 4
    assert not probe.exists()


def test_no_process_survives_a_timeout(grade_with):
    code = (
        "import os, threading\n\n"
        "def relu_backward(grad_out, x):\n"
        "    for start in (os.fork, threading.Thread(target=os.getpid).start):\n"
        "        try:\n"
        "            start()\n"
        "        except (OSError, RuntimeError):\n"
        "            pass\n"
        "    while True:\n"
        "        pass\n"
    )
    report = grade_with({"relu_backward": code}, ["relu_backward"])
    assert checks(report, "relu_backward") == ["timeout", "timeout"]
    assert not any(_alive(pid) for pid in sandbox.descendants(os.getpid()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_case_cannot_signal_the_grader(grade_with):
    """Inside its PID namespace the case sees only itself and the sandbox's first process:
    signalling everything it can changes nothing for the grader."""
    kill = (
        "    for pid in (os.getppid(), 1, -1, 0):\n"
        "        try:\n"
        "            os.kill(pid, signal.SIGKILL) if pid != 0 else None\n"
        "        except OSError:\n"
        "            pass\n"
    )
    code = "import os, signal\n\n" + RIGHT_RELU.replace("    return", kill + "    return")
    report = grade_with({"relu_backward": code}, ["relu_backward"])
    assert report["total"] == 2
