"""The claims benchmark's own logic (benchmarks/claims.py, benchmarks/figure1.py): the arithmetic
its table rests on, and Figure 1's training runs stopping, resuming and choosing rates as
docs/claims.md says. The measurements themselves are docs/claims.md's, run on demand."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
claims = pytest.importorskip("claims")
figure1 = pytest.importorskip("figure1")


def test_sampling_error_of_a_difference():
    # two 50% accuracies on 100 images each: sqrt(0.25/100 + 0.25/100) = 7.07 points
    assert claims.sampling_se(50, 50, 100) == pytest.approx(100 * math.sqrt(0.005))
    assert claims.sampling_se(0, 100, 500) == 0
    assert claims.sampling_se(27, 30, 500) == pytest.approx(2.85, abs=0.01)


def test_effects_are_the_ablations_error_minus_the_papers():
    paper, other = {"val_top1": 60.0, "val_top5": 80.0}, {"val_top1": 58.5, "val_top5": 81.0}
    # the ablation is 1.5 points worse at top-1: the paper's ingredient lowers error by 1.5
    assert claims.error_effect(paper, other) == (pytest.approx(-1.5), pytest.approx(1.0))


def test_epochs_to_loss_and_specialisation():
    assert claims.epochs_to_loss([2.3, 2.0, 1.7, 1.5], 1.7) == 3
    assert claims.epochs_to_loss([2.3, 2.0], 1.0) is None
    tower = lambda share, n=48: {"colour_specific": round(share * n), "kernels": n}  # noqa: E731
    assert claims.specialised({"towers": [tower(0.1), tower(0.9)]})
    assert claims.specialised({"towers": [tower(0.8), tower(0.2)]})  # the towers may swap roles
    assert not claims.specialised({"towers": [tower(0.9), tower(0.85)]})
    assert not claims.specialised({"towers": [tower(0.1)]})


def test_every_ablation_run_is_a_train_option_the_cli_takes():
    from alexnet_cli.cli import app
    from typer.main import get_command

    options = {o for p in get_command(app).commands["train"].params for o in p.opts + p.secondary_opts}
    for name, extra in claims.RUNS.items():
        assert all(o in options for o in extra if o.startswith("--")), name
    for claim in claims.CLAIMS:
        assert all(r in claims.RUNS for r in claim.runs)


def small_set(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    return x, (torch.arange(n) % 10)


def test_figure1_trains_until_the_threshold_or_the_cap(tmp_path):
    x, y = small_set()
    # a threshold it meets at once: one epoch
    r = figure1.train_to_error(x, y, "relu", 0.01, 0, tmp_path / "a", threshold=100.0, max_epochs=5, batch_size=32)
    assert r["epochs_to_threshold"] == 1 and len(r["errors"]) == 1
    # one it cannot meet: stops at the cap, with no threshold epoch; only the result is kept
    r = figure1.train_to_error(x, y, "tanh", 0.01, 0, tmp_path / "b", threshold=0.0, max_epochs=2, batch_size=32)
    assert r["epochs_to_threshold"] is None and len(r["errors"]) == 2
    assert not (tmp_path / "b" / "state.pt").exists()
    assert json.loads((tmp_path / "b" / "result.json").read_text())["errors"] == r["errors"]
    # a finished run is read back, not trained again
    again = figure1.train_to_error(x, y, "tanh", 0.01, 0, tmp_path / "b", threshold=0.0, max_epochs=9, batch_size=32)
    assert again == r


def test_figure1_resumes_from_its_state_file(tmp_path, monkeypatch):
    """A run killed after an epoch continues from run_dir/state.pt to the same curve."""
    x, y = small_set()
    straight = figure1.train_to_error(x, y, "relu", 0.05, 1, tmp_path / "s", threshold=0.0, max_epochs=3, batch_size=32)

    saves = []
    real_save = torch.save

    def save_then_die(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # killed right after epoch 2's state was written

    monkeypatch.setattr(figure1.torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        figure1.train_to_error(x, y, "relu", 0.05, 1, tmp_path / "k", threshold=0.0, max_epochs=3, batch_size=32)
    monkeypatch.setattr(figure1.torch, "save", real_save)
    assert (tmp_path / "k" / "state.pt").exists() and not (tmp_path / "k" / "result.json").exists()
    resumed = figure1.train_to_error(x, y, "relu", 0.05, 1, tmp_path / "k", threshold=0.0, max_epochs=3, batch_size=32)
    assert resumed["errors"] == straight["errors"] and resumed["losses"] == pytest.approx(straight["losses"])


def test_figure1_the_fastest_rate_wins():
    runs = [
        {"lr": 0.03, "epochs_to_threshold": 18, "errors": [20]},
        {"lr": 0.1, "epochs_to_threshold": None, "errors": [29]},
        {"lr": 0.01, "epochs_to_threshold": 12, "errors": [24]},
    ]
    assert figure1.fastest(runs)["lr"] == 0.01
    assert figure1.fastest([runs[1]]) is None
