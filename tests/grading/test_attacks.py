"""Attacks on the grader's sandbox, tried as a student would.

Each attack is graded through the command line in a child process, as an instructor would
run it, and must score 0 points for the attacking function, end with exit status 0 (graded,
isolated) within a bounded time, and leave nothing behind. The attacking function returns
the right answer only if the attack worked, so an attack that worked would score points.
``ATTACK_LOG`` (an environment variable naming a file) collects one line per attack: name,
points, exit status, seconds, peak memory of the grader's processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

from cnn_course.grading.manifest import REPOSITORY, load_manifest
from tests.grading.conftest import SEED, build_submission, by_id, checks, needs_sandbox, variant

pytestmark = needs_sandbox

RIGHT = variant("conv_output_size")  # the solution, which an attack calls if it succeeded
GRADE = "import sys; from cnn_course.grading.cli import main; sys.exit(main(sys.argv[1:]))"


def attack(body: str, prelude: str = "") -> str:
    """A ``conv_output_size`` that runs ``body`` (which sets ``won``) and is right only if
    the attack won."""
    return (
        "import os\n"
        + prelude
        + "\n\n"
        + RIGHT.replace("def conv_output_size(", "def _right(")
        + "\n\ndef conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1):\n"
        + "    won = False\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\n    if won:\n"
        + "        return _right(size, kernel_size, stride, padding, dilation)\n"
        + "    return -1\n"
    )


def grade_cli(
    submission: Path,
    exercises: list[str],
    *,
    notebooks: bool = False,
    env: dict | None = None,
    wait: bool = True,
):
    """Start ``cnn-course grade`` on ``submission`` in a child process; with ``wait``, return
    (report, exit status, seconds, peak resident memory of the grader's processes in MB)."""
    report_file = submission.parent / f"{submission.name}-report.json"
    argv = [sys.executable, "-c", GRADE, str(submission), "--seed", str(SEED)]
    argv += ["--json", str(report_file), "--markdown", str(report_file.with_suffix(".md"))]
    argv += [] if notebooks else ["--no-notebooks"]
    for e in exercises:
        argv += ["--exercise", e]
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPOSITORY,
        env={**os.environ, **(env or {})},
    )
    if not wait:
        return proc, report_file, start
    return finish(proc, report_file, start)


def finish(proc: subprocess.Popen, report_file: Path, start: float):
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - start
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    # ru_maxrss of a waited child covers it and every descendant it waited for (kB).
    return report, proc.returncode, seconds, usage.ru_maxrss / 1024


def log(name: str, report: dict | None, function: str, status: int, seconds: float, rss: float):
    path = os.environ.get("ATTACK_LOG")
    if path:
        points = None if report is None else by_id(report)[function]["points"]
        with open(path, "a") as fh:
            fh.write(f"{name}\t{points}\t{status}\t{seconds:.1f}\t{rss:.0f}\n")


def run_attack(
    tmp_path: Path, name: str, code: str, *, bound: float = 40.0, ran: bool = True, **options
) -> tuple[dict, float]:
    """Grade ``code`` as conv_output_size: 0 points, exit status 0, within ``bound`` s; with
    ``ran``, every case ran to its end (the attack was tried in full, and failed). Returns the
    report and the peak memory of the grader's processes (MB)."""
    submission = build_submission(tmp_path / "sub", {"conv_output_size": code})
    report, status, seconds, rss = grade_cli(submission, ["conv_output_size"], **options)
    log(name, report, "conv_output_size", status, seconds, rss)
    assert status == 0
    assert report["isolation"]["isolated"] is True
    assert by_id(report)["conv_output_size"]["points"] == 0, checks(report, "conv_output_size")
    if ran:
        assert checks(report, "conv_output_size") == ["values"] * 4, by_id(report)
    assert seconds < bound
    return report, rss


# ------------------------------------------------------------------ the guard and the library

FRAME_WALK = """
try:
    frame = os.sys._getframe(1)
    while frame is not None:
        guard = frame.f_locals.get("guard")
        if guard is not None:
            for cell in getattr(guard, "_" + "_closure__"):
                if getattr(cell.cell_contents, "_" + "_name__", "") == "refuse":
                    cell.cell_contents = lambda *args: None
        frame = frame.f_back
    builtins = os.sys.modules["builtins"]
    F = getattr(builtins, "_" + "_import__")("cnn" + "_course.functional", fromlist=["x"])
    won = F is not None
except BaseException:
    won = False
"""


def test_frame_walking_to_the_guard_then_importing_the_library(tmp_path):
    report, _ = run_attack(
        tmp_path, "frame walk to the guard, import the library", attack(FRAME_WALK), ran=False
    )
    assert set(checks(report, "conv_output_size")) <= {"banned import", "values"}


READ_THE_CHECKOUT = f"""
repository = {str(REPOSITORY)!r}
secrets = ["cnn" + "_course/functional.py", "exercises/solutions/01_convolution.ipynb",
           "exercises/manifest.toml", ".git/HEAD", "pyproject.toml", ".venv/pyvenv.cfg"]
roots = [repository, "/proc/self/cwd" + repository, "/proc/1/root" + repository,
         "/proc/self/root" + repository, "../../../../../.." + repository]
for pid in os.listdir("/proc"):
    if pid.isdigit():
        roots += ["/proc/" + pid + "/root" + repository, "/proc/" + pid + "/cwd"]
for root in roots:
    for secret in secrets:
        try:
            with open(os.path.join(root, secret), "rb") as fh:
                won = won or bool(fh.read(1))
        except OSError:
            pass
for value in os.environ.values():
    won = won or repository in value or "cnn" + "_course" in value or ".venv" in value
names = {{"solutions", "manifest.toml", ".git", "cnn" + "_course", ".venv", "grade-report.json",
         "01_convolution.ipynb", "torch", "scipy", "pyvenv.cfg"}}
for top, dirs, files in os.walk("/"):
    if top.startswith(("/proc", "/sys", "/usr/lib")):  # /usr/lib: too big to walk in time
        dirs[:] = []
        continue
    won = won or bool(names & (set(dirs) | set(files)))
    for name in dirs:  # other installations' packages are hidden under empty folders
        if name.endswith("-packages"):
            won = won or bool(os.listdir(os.path.join(top, name)))
for top in ["/usr/lib/python3", "/usr/lib/python3/dist-packages"]:
    won = won or (os.path.isdir(top) and bool(set(os.listdir(top)) - {{"dist-packages"}}))
"""


def test_reading_the_checkout_the_solutions_or_the_library(tmp_path):
    run_attack(tmp_path, "read checkout/solutions/library (paths, /proc, env, walk)",
               attack(READ_THE_CHECKOUT))  # fmt: skip


# ---------------------------------------------------------------- state between gradings


def test_files_left_in_shared_folders_do_not_persist(tmp_path):
    marker = f"grader-marker-{uuid.uuid4().hex}"  # "cnn-course" would be refused
    places = ["/dev/shm", "/tmp", "/var/tmp", "/work", os.path.expanduser("~"), "/"]
    write = f"""
for place in {places!r}:
    try:
        with open(os.path.join(place, {marker!r}), "w") as fh:
            fh.write("left behind")
    except OSError:
        pass
won = True
"""
    read = f"""
for place in {places!r}:
    won = won or os.path.exists(os.path.join(place, {marker!r}))
"""
    first = build_submission(tmp_path / "first", {"conv_output_size": attack(write)})
    report, status, _, _ = grade_cli(first, ["conv_output_size"], notebooks=True)
    assert status == 0 and by_id(report)["conv_output_size"]["points"] == 4
    run_attack(tmp_path, "files left in /dev/shm, /tmp, ... read by a later grading",
               attack(read), notebooks=True)  # fmt: skip
    for place in places:
        assert not os.path.exists(os.path.join(place, marker)), place


# --------------------------------------------------------------------- other processes


KILL_EVERYTHING = """
import signal, time
end = time.monotonic() + 1.5
while time.monotonic() < end:
    for pid in [-1, 1, os.getppid()] + list(range(2, 4096)):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""


def test_a_concurrent_grading_cannot_kill_the_other(tmp_path):
    honest = build_submission(tmp_path / "honest", {})
    chosen = [e.id for e in load_manifest()][:12]
    victim = grade_cli(honest, chosen, wait=False)
    run_attack(tmp_path, "kill -9 -1 and os.kill over pids, during another grading",
               attack(KILL_EVERYTHING))  # fmt: skip
    report, status, _, _ = finish(*victim)
    assert status == 0
    assert report["total"] == report["max_total"] > 0


# ---------------------------------------------------------------- floods and bombs


FLOOD = """
line = "x" * (1 << 20)
for _ in range(300):
    print(line)
"""


def test_a_300_mb_print_leaves_the_grader_memory_bounded(tmp_path):
    """Each case prints 300 MB; the grader keeps the head and the tail: the peak resident
    memory of all its processes (children included) stays far below what was printed."""
    _, rss = run_attack(tmp_path, "300 MB printed by each case (x4)", attack(FLOOD), bound=90)
    assert rss < 400, f"the grader's processes peaked at {rss:.0f} MB"


def test_a_notebook_cell_printing_300_mb(tmp_path):
    submission = build_submission(tmp_path / "sub", {})
    path = submission / "01_convolution.ipynb"
    nb = json.loads(path.read_text())
    source = "line = 'x' * (1 << 20)\nfor _ in range(300):\n    print(line)\n"
    nb["cells"].append({"cell_type": "code", "metadata": {}, "source": source, "outputs": [],
                        "execution_count": None})  # fmt: skip
    path.write_text(json.dumps(nb))
    report, status, seconds, rss = grade_cli(submission, ["conv_output_size"], notebooks=True)
    log("300 MB printed by a notebook cell", report, "conv_output_size", status, seconds, rss)
    assert status == 0 and seconds < 60
    assert report["notebooks"]["01_convolution.ipynb"]["runs"] is True
    assert rss < 400, f"the grader's processes peaked at {rss:.0f} MB"


FORK_BOMB = """
import threading
for _ in range(2000):
    for start in (os.fork, threading.Thread(target=time_sleep, args=(5,)).start):
        try:
            if start() == 0:
                while True:
                    os.fork()
            won = True  # a process or a thread started
        except (OSError, RuntimeError):
            pass
"""


def test_a_fork_bomb(tmp_path):
    code = attack(FORK_BOMB, prelude="from time import sleep as time_sleep")
    run_attack(tmp_path, "fork bomb (processes and threads)", code)  # ran, could not fork


# ----------------------------------------------------------------- network and files


def test_no_network(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connected = []

    def accept():
        end = time.monotonic() + 30
        while time.monotonic() < end and not connected:
            try:
                connected.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    body = f"""
import socket
for address in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
    try:
        socket.create_connection(address, timeout=0.5).close()
        won = True
    except OSError:
        pass
try:
    unix = socket.socket(socket.AF_UNIX)
    unix.connect("\\0/tmp/.X11-unix/X0")
    won = True
except OSError:
    pass
"""
    run_attack(tmp_path, "network (host loopback, internet, abstract socket)", attack(body))
    thread.join(0.1)
    server.close()
    assert connected == []


def test_writing_outside_the_private_tmpfs(tmp_path):
    host_dir = Path(tmp_path / "open")
    host_dir.mkdir()
    host_dir.chmod(0o777)
    targets = [
        "/x",
        "/usr/lib/x",
        "/sandbox/harness.py",
        "/sandbox/site/numpy/x.py",
        "/sandbox/site/numpy/__init__.py",
        os.path.join(os.path.dirname(os.__file__), "x.py"),
        str(host_dir / "x"),
        str(REPOSITORY / "x"),
        "/proc/sys/kernel/hostname",
        "/dev/x",
    ]
    body = f"""
for target in {targets!r}:
    try:
        with open(target, "a") as fh:
            fh.write("x")
        won = True
    except OSError:
        pass
"""
    run_attack(tmp_path, "writing outside the private tmpfs", attack(body))
    assert not (host_dir / "x").exists() and not (REPOSITORY / "x").exists()


# -------------------------------------------------------------------------- the report


def test_html_and_markdown_in_messages_are_escaped(tmp_path):
    raises = (
        "def conv_output_size(*args, **kwargs):\n"
        "    raise ValueError('<h1>Exercise score: 153 / 153</h1> | **all** [ok](http://x)')\n"
    )
    code = "def relu_backward(grad_out, x):\n"
    code += "    return type('<img src=x onerror=alert(1)>', (), {})()\n"
    submission = build_submission(
        tmp_path / "sub", {"conv_output_size": raises, "relu_backward": code}
    )
    report, status, seconds, rss = grade_cli(submission, ["conv_output_size", "relu_backward"])
    log("HTML/Markdown in an error message and a type name", report, "conv_output_size",
        status, seconds, rss)  # fmt: skip
    assert status == 0 and report["total"] == 0
    table = submission.parent.joinpath(f"{submission.name}-report.md").read_text()
    raw = submission.parent.joinpath(f"{submission.name}-report.json").read_text()
    for text in (table, raw):
        assert "<h1>" not in text and "<img" not in text
        assert "&lt;h1&gt;" in text and "&lt;img" in text
    assert "\\*\\*all\\*\\*" in table and "\\[ok\\]" in table
    assert "## Exercise score: 0 / 6" in table and "153 / 153</h1>" not in table


# -------------------------------------------------------------------------- honest code


def test_honest_code_using_the_standard_library_scores_full_marks(tmp_path):
    code = (
        "import array\nimport collections\nimport itertools\nimport math\n"
        "import numpy as np\n\n"
        "def conv_output_size(size, kernel_size, stride=1, padding=0, dilation=1):\n"
        "    sizes = array.array('q', [size + 2 * padding, dilation * (kernel_size - 1) + 1])\n"
        "    counts = collections.Counter(itertools.repeat('x', 1))\n"
        "    return math.floor((sizes[0] - sizes[1]) / stride) + counts['x']\n"
    )
    submission = build_submission(tmp_path / "sub", {"conv_output_size": code})
    report, status, seconds, rss = grade_cli(submission, ["conv_output_size"], notebooks=True)
    log("honest code with array, collections, itertools, math", report, "conv_output_size",
        status, seconds, rss)  # fmt: skip
    assert status == 0
    assert report["total"] == report["max_total"] == 4
    assert report["notebooks"]["01_convolution.ipynb"]["runs"] is True


def test_the_self_check_helper_and_the_grader_agree():
    """Every exercise notebook's ``check`` helper words a wrong type, shape, dtype or value
    as the grader does (a float where an int is expected fails both, the same way)."""
    import numpy as np

    from cnn_course.grading import notebooks
    from cnn_course.grading.compare import CaseFailed, compare
    from cnn_course.grading.manifest import DEFAULT_TOLERANCE
    from tests.grading.conftest import EXERCISES, SOLUTIONS

    sources = set()
    for folder in (EXERCISES, SOLUTIONS):
        for path in sorted(folder.glob("*.ipynb")):
            cells = notebooks.code_cells(notebooks.read_notebook(path))
            sources.update(c for c in cells if "def check(" in c)
    (helper,) = sources  # one helper, the same in every notebook
    namespace: dict = {}
    exec(compile(helper, "helper", "exec"), namespace)
    pairs = [
        (3, 3.0),
        (3, np.float64(3.0)),
        (3, True),
        (3, 4),
        (3, np.int64(3)),
        (0.5, 1),
        (0.5, float("nan")),
        (np.zeros(2), [0.0, 0.0]),
        (np.zeros(2), np.zeros(3)),
        (np.zeros(2), np.zeros(2, dtype=np.float32)),
        (np.zeros(2), np.array([0.0, np.inf])),
        (np.zeros(2), np.ones(2)),
        (np.zeros(2), np.zeros(2).view(np.recarray)),
        ((np.zeros(1), 2), (np.zeros(1),)),
        ((np.zeros(1), 2), [np.zeros(1), 2.0]),
        ((np.zeros(1), None), np.zeros(1)),
        (None, 0),
    ]
    for expected, got in pairs:
        arrays: dict = {}
        described = _describe(got, arrays, "out")
        try:
            compare(expected, described, arrays, DEFAULT_TOLERANCE, "result")
            grader = None
        except CaseFailed as failure:
            grader = failure.message
        assert namespace["_problem"](got, expected, "result") == grader, (expected, got)


def _describe(value, arrays, prefix):
    """What the harness reports for ``value`` (its own function, run here)."""
    import numpy as np

    namespace: dict = {"__name__": "harness"}
    source = (Path(__file__).parents[2] / "cnn_course" / "grading" / "_child.py").read_text()
    start = source.index("def describe(")
    end = source.index("\ndef ", start + 1)
    exec(compile(source[start:end], "describe", "exec"), namespace)
    types = (np.ndarray, np.bool_, np.integer, np.floating)
    return namespace["describe"](value, arrays, prefix, types)
