"""The ``cnn-course`` command: info works anywhere, subcommands dispatch, bad input is refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cnn_course import __version__, cli


def test_info_reports_version_and_backends(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"cnn-course {__version__}" in out
    assert "backend    numpy" in out or "backend    cupy" in out


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ["info", "grade", "bench", "train"]:
        assert f"  {name} " in out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fly"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["grade", "bench", "train"])
def test_subcommands_have_their_own_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "cnn_course.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
