"""The CLI skeleton: commands listed, version, errors as one line with exit codes."""

from __future__ import annotations

from typer.testing import CliRunner

from alexnet_cli import __version__
from alexnet_cli.cli import app
from tests.conftest import run_cli

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("prep", "train", "eval", "predict", "info"):
        assert command in result.stdout


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"alexnet {__version__}"


def test_bad_option_value_is_one_line_exit_2_no_traceback():
    result = run_cli("info", "--arch", "vgg")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert "unknown --arch 'vgg'" in err
