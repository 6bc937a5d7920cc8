"""The CLI skeleton: commands listed, version, errors as one line with exit codes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from alexnet_cli import __version__
from alexnet_cli.cli import app, main
from alexnet_cli.errors import EXIT_PREEMPTED, Preempted
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


@pytest.mark.parametrize("rank", [None, "0", "1"])
def test_a_stop_by_a_signal_is_one_line_from_rank_0_only(rank, monkeypatch, capsys):
    """Every rank of a run raises Preempted after the same step; only rank 0 wrote last.pt, so
    only it reports (no "error:" prefix: a requested stop is not a failure), and all exit 75."""
    import alexnet_cli.train

    def stopped(cfg):
        raise Preempted("stopped by a signal after step 3 (epoch 1); wrote run/last.pt; rerun ...")

    monkeypatch.setattr(alexnet_cli.train, "train", stopped)
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    with pytest.raises(SystemExit) as stop:
        main(["train", "--synthetic"])
    assert stop.value.code == EXIT_PREEMPTED
    err = capsys.readouterr().err
    if rank == "1":
        assert err == ""
    else:
        assert err.splitlines() == ["stopped by a signal after step 3 (epoch 1); wrote run/last.pt; rerun ..."]
