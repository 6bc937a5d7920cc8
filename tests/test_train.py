"""`alexnet train` on tiny HDF5 datasets, on the CPU: exact resume (after an epoch, mid-epoch,
after SIGTERM), the tower split on ("cpu", "cpu"), DDP over 2 gloo processes, the NaN guard,
self-contained checkpoints and the run folder's files.

The network is the full paper model (57M parameters with 2 classes), so every run is kept to
batches of 4 and a handful of steps."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from alexnet_cli.checkpoint import load_checkpoint, model_from_checkpoint
from alexnet_cli.errors import EXIT_FAILED, EXIT_PREEMPTED, EXIT_USAGE, InputError
from alexnet_cli.progress import TrainProgress
from alexnet_cli.config import TrainConfig
from alexnet_cli.run_folder import METRIC_COLUMNS
from alexnet_cli.train import train
from tests.conftest import REPO_ROOT, Losses, make_dataset, run_cli

QUIET = TrainProgress(enabled=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("train-data"), classes=2, train_per_class=4, val_per_class=2)


def config(data, run_dir, **overrides) -> TrainConfig:
    """8 train images, batch 4: 2 steps an epoch."""
    base = dict(data=str(data), run_dir=str(run_dir), epochs=2, batch_size=4, workers=0, checkpoint_minutes=1e9)
    return TrainConfig(**{**base, **overrides})


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ in {different}"


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """The reference: 2 epochs, never stopped (dropout on, so its seeding is exercised too)."""
    run = tmp_path_factory.mktemp("straight")
    summary = train(config(data, run), QUIET)
    return run, summary


def test_stopped_after_an_epoch_and_mid_epoch_resumes_to_the_same_weights(data, straight, tmp_path):
    # Same placement as the reference: the split and the one-device path round differently in
    # the last bits (test_model checks they agree to float tolerance), so bitwise needs one path.
    first = train(config(data, tmp_path, epochs=1), QUIET)
    assert first["epochs_completed"] == 1
    mid = train(config(data, tmp_path, resume="last", max_steps=3), QUIET)
    assert mid["stopped"] == "max_steps" and load_checkpoint(tmp_path / "last.pt")["epoch_step"] == 1
    final = train(config(data, tmp_path, resume="last"), QUIET)
    assert final["steps"] == straight[1]["steps"] == 4
    assert_same_weights(weights(tmp_path / "last.pt"), weights(straight[0] / "last.pt"))
    assert load_checkpoint(tmp_path / "last.pt")["metrics"][1]["train_loss"] == straight[1]["last_epoch"]["train_loss"]


def test_resume_rewrites_the_records_a_kill_after_the_last_checkpoint_left_out(data, tmp_path):
    """A kill between the final epoch's last.pt and its metrics.csv/curves.png: the run has
    nothing left to do, and resuming must still restore both from the checkpoint."""
    train(config(data, tmp_path, epochs=1), QUIET)
    expected = (tmp_path / "metrics.csv").read_text()
    (tmp_path / "metrics.csv").unlink()
    (tmp_path / "curves.png").unlink()
    summary = train(config(data, tmp_path, epochs=1, resume="auto"), QUIET)
    assert summary["steps"] == 2 and summary["epochs_completed"] == 1  # no step was run again
    assert (tmp_path / "metrics.csv").read_text() == expected
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_is_self_contained_and_loads_with_weights_only(straight):
    run, _ = straight
    ckpt = torch.load(run / "last.pt", weights_only=True)
    for key in ("model", "model_config", "classes", "preprocess", "pca", "train_config", "optimizer",
                "scheduler", "epoch", "step", "rng", "metrics"):
        assert key in ckpt, key
    assert ckpt["epoch"] == 2 and ckpt["step"] == 4 and len(ckpt["metrics"]) == 2
    assert ckpt["model"]["conv2.weight"].shape == (256, 48, 5, 5)  # the grouped layout
    assert ckpt["preprocess"]["kind"] == "mean_image" and ckpt["preprocess"]["mean_image"].shape == (3, 256, 256)
    assert ckpt["classes"] == [["n00000000", "class 0"], ["n00000001", "class 1"]]
    assert len(ckpt["pca"]["eigenvalues"]) == 3 and ckpt["train_config"]["batch_size"] == 4
    # the recipe's choices are recorded, so that eval and a resume know them
    assert ckpt["model_config"]["dropout_form"] == "paper"
    recipe = {k: ckpt["train_config"][k] for k in ("momentum_form", "bias_decay", "lighting_units", "dropout_form")}
    assert recipe == {"momentum_form": "paper", "bias_decay": False, "lighting_units": "eigenvalue", "dropout_form": "paper"}
    model = model_from_checkpoint(ckpt).eval()
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 2)
    best = torch.load(run / "best.pt", weights_only=True)
    assert "optimizer" not in best and best["model"].keys() == ckpt["model"].keys()


def test_run_folder_has_metrics_and_curves(straight):
    run, summary = straight
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert list(rows[0].keys()) == list(METRIC_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        for k in ("train_top1", "train_top5", "val_top1", "val_top5"):
            assert 0 <= float(r[k]) <= 100
        assert float(r["val_top5"]) == 100.0  # 2 classes: always in the top 5
        assert float(r["images_per_s"]) > 0 and float(r["elapsed_s"]) > 0
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["best_val_top1"] == max(float(r["val_top1"]) for r in rows)


def test_sigterm_finishes_the_step_writes_last_pt_exits_75_and_resumes_exactly(data, straight, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "alexnet_cli", "train", "--data", str(data), "--run-dir", str(tmp_path),
           "--epochs", "2", "--batch-size", "4", "--workers", "2", "--log-every", "1"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "step 1/2" in line:
            # The whole process group, as a cluster does: loader workers must not die of it.
            os.killpg(proc.pid, signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == EXIT_PREEMPTED, "".join(lines) + rest
    assert "--resume" in rest and "Traceback" not in rest
    stopped = load_checkpoint(tmp_path / "last.pt")
    assert stopped["step"] >= 1
    train(config(data, tmp_path, resume="auto"), QUIET)
    assert_same_weights(weights(tmp_path / "last.pt"), weights(straight[0] / "last.pt"))


# The same 4 images every step (--limit 4 is one batch); bias 0.1 is the documented Caffe option.
FEW_STEPS = dict(epochs=3, limit=4, dropout=0.0, bias_init=0.1)


@pytest.fixture(scope="module")
def few_steps(data, tmp_path_factory):
    run, losses = tmp_path_factory.mktemp("few-steps"), Losses()
    return run, train(config(data, run, **FEW_STEPS), losses), losses.values


def test_a_few_steps_decrease_the_loss(few_steps):
    _, _, losses = few_steps
    assert len(losses) == 3
    assert losses[0] > losses[1] > losses[2]


# One epoch of 2 steps with the paper's dropout on: its masks must not depend on the process count.
DDP_STEPS = dict(epochs=1, limit=8, bias_init=0.1)


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(data, tmp_path):
    run = tmp_path / "one"
    one = train(config(data, run, **DDP_STEPS), QUIET)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "alexnet_cli", "train", "--data", str(data), "--run-dir", str(tmp_path), "--batch-size", "4",
           "--workers", "0", "--json", *(f"--{k.replace('_', '-')}={v}" for k, v in DDP_STEPS.items())]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("{")]  # only rank 0 reports
    two = json.loads(line)
    assert two["world_size"] == 2 and two["steps"] == one["steps"] == 2
    a, b = weights(run / "last.pt"), weights(tmp_path / "last.pt")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-4
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-5, msg=k)
    # Exact validation: every val image counted once over the two ranks.
    assert two["last_epoch"]["val_top1"] == one["last_epoch"]["val_top1"]
    assert two["last_epoch"]["val_loss"] == pytest.approx(one["last_epoch"]["val_loss"], rel=1e-4)
    assert two["last_epoch"]["train_loss"] == pytest.approx(one["last_epoch"]["train_loss"], rel=1e-4)


def test_non_finite_loss_stops_with_exit_1_and_keeps_the_last_good_checkpoint(data, tmp_path):
    r = run_cli("train", "--data", data, "--run-dir", tmp_path, "--epochs", "1", "--batch-size", "2", "--limit", "4",
                "--workers", "0", "--lr", "1e30", "--checkpoint-every", "1")
    err = r.stderr.decode()
    assert r.returncode == EXIT_FAILED, err
    assert "loss became" in err and "last.pt" in err and "Traceback" not in err
    good = load_checkpoint(tmp_path / "last.pt")
    assert good["step"] == 1
    assert all(torch.isfinite(v).all() for v in good["model"].values())


def test_synthetic_run_prints_one_json_summary(tmp_path):
    r = run_cli("train", "--synthetic", "--run-dir", tmp_path, "--max-steps", "1", "--batch-size", "2",
                "--num-classes", "10", "--gpus", "0", "--tensorboard", "--json")
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout)
    assert summary["steps"] == 1 and summary["stopped"] == "max_steps" and summary["device"] == "cpu"
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert "tensorboard is not installed" in r.stderr.decode()


def test_without_data_the_cli_names_the_option_and_the_variable(tmp_path):
    r = run_cli("train", "--run-dir", tmp_path, "--gpus", "0", env={"ALEXNET_DATA": ""})
    err = r.stderr.decode()
    assert r.returncode == EXIT_USAGE and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "--data" in err and "ALEXNET_DATA" in err


def test_an_existing_run_is_never_overwritten_without_resume_or_force(straight, tmp_path):
    with pytest.raises(InputError, match="--resume auto, or start over with --force"):
        train(TrainConfig(synthetic=True, run_dir=str(straight[0]), gpus=0), QUIET)
    with pytest.raises(InputError, match="no checkpoint to resume"):
        train(TrainConfig(synthetic=True, run_dir=str(tmp_path), resume="last", gpus=0), QUIET)


def test_resume_auto_starts_over_only_on_a_lone_first_best_pt(tmp_path):
    """Without last.pt, --resume auto starts over only on what a kill between the first best.pt
    and last.pt leaves (best.pt alone); a run with metrics is never deleted."""
    from alexnet_cli.run_folder import prepare_run_dir

    lone, kept = tmp_path / "lone", tmp_path / "kept"
    for run in (lone, kept):
        run.mkdir()
        (run / "best.pt").write_bytes(b"x")
    (kept / "metrics.csv").write_text("epoch\n1\n2\n")
    assert prepare_run_dir(lone, "auto", force=False, is_main=True) is None
    assert not (lone / "best.pt").exists()
    with pytest.raises(InputError, match="already holds a run \\(best.pt, metrics.csv\\)"):
        prepare_run_dir(kept, "auto", force=False, is_main=True)
    assert (kept / "best.pt").exists() and (kept / "metrics.csv").exists()


def test_resume_refuses_a_changed_recipe(data, straight):
    with pytest.raises(InputError, match="--lr 0.01 \\(now 0.02\\)"):
        train(config(data, straight[0], resume="last", lr=0.02), QUIET)
    with pytest.raises(InputError, match="--dropout-form paper \\(now inverted\\)"):
        train(config(data, straight[0], resume="last", dropout_form="inverted"), QUIET)


def test_a_run_from_before_the_recipe_choices_resumes_only_with_its_old_recipe(data, straight, tmp_path):
    """A last.pt without the new train_config keys was trained with torch's momentum, decayed
    biases and inverted dropout: continuing it under the new defaults would change the recipe."""
    ckpt = torch.load(straight[0] / "last.pt", weights_only=True)
    for key in ("momentum_form", "bias_decay", "dropout_form", "lighting_units"):
        del ckpt["train_config"][key]
    (tmp_path / "old").mkdir()
    torch.save(ckpt, tmp_path / "old" / "last.pt")
    with pytest.raises(InputError, match="--momentum-form torch \\(now paper\\)"):
        train(config(data, tmp_path / "old", resume="last", epochs=3), QUIET)


@pytest.mark.parametrize("option", [dict(gpus=2), dict(devices=("cpu", "cuda:7"))])
def test_more_gpus_than_exist_is_a_clear_error(tmp_path, option):
    if torch.cuda.device_count() >= 8:
        pytest.skip("this machine has the GPUs")
    with pytest.raises(InputError, match="GPU\\(s\\) on this machine but it has"):
        train(TrainConfig(synthetic=True, run_dir=str(tmp_path), **option), QUIET)


def test_the_split_on_two_cpu_devices_trains_like_one_device(data, tmp_path):
    """`--devices cpu,cpu`: the paper's two-tower split, each tower its own modules; after the same
    steps from the same seed its weights match the one-device run to float tolerance."""
    split = train(config(data, tmp_path / "split", epochs=1, devices=("cpu", "cpu")), QUIET)
    single = train(config(data, tmp_path / "single", epochs=1), QUIET)
    assert split["device"] == "cpu,cpu" and split["steps"] == single["steps"] == 2
    a, b = weights(tmp_path / "split" / "last.pt"), weights(tmp_path / "single" / "last.pt")
    assert a["conv2.weight"].shape == (256, 48, 5, 5)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
