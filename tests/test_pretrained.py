"""`--weights torchvision`: torchvision's pretrained AlexNet through its weights API, offline from a
prefilled TORCH_HOME (the download itself is faked: tests never touch the network)."""

from __future__ import annotations

import io
import json
from email.message import Message

import pytest
import torch

from alexnet_cli.errors import InputError
from alexnet_cli.pretrained import torchvision_weights_file
from tests.conftest import cli_in_process, run_cli

URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


def test_the_cached_file_is_used_without_the_network(torch_home):
    assert torchvision_weights_file() == torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"


def test_predict_with_weights_torchvision_equals_the_file_given_by_hand(torch_home, torchvision_weights, shared_data,
                                                                        capsys):
    image = shared_data / "fixtures/other_formats/coffee.png"
    runs = [["--weights", "torchvision"], ["--arch", "torchvision", "--weights", torchvision_weights]]
    outputs = []
    for options in runs:
        code, out, err = cli_in_process(capsys, "predict", image, *options, "--json", "--gpus", "0")
        assert code == 0, err
        outputs.append(json.loads(out)[0]["predictions"])
    assert outputs[0] == outputs[1] and len(outputs[0]) == 5


def test_eval_with_weights_torchvision(torch_home, torchvision_weights, eval_set, capsys):
    results = []
    for options in (["--weights", "torchvision"], ["--arch", "torchvision", "--weights", torchvision_weights]):
        code, out, err = cli_in_process(capsys, "eval", *options, "--data", eval_set.data, "--json", "--gpus", "0",
                                        "--workers", "0")
        assert code == 0, err
        results.append(json.loads(out))
    keys = ("top1_correct", "top5_correct", "loss", "images")
    assert [results[0][k] for k in keys] == [results[1][k] for k in keys]
    assert results[0]["images"] == len(eval_set.labels)


def test_offline_without_the_file_one_line_says_where_to_put_it(shared_data, tmp_path):
    # A proxy on a closed local port: the download fails at once, as offline, on any machine.
    proxy = "http://127.0.0.1:9"
    env = {"TORCH_HOME": str(tmp_path), "https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    r = run_cli("predict", shared_data / "fixtures/other_formats/coffee.png", "--weights", "torchvision", env=env)
    err = r.stderr.decode()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, err
    assert f"put it at {tmp_path / 'hub' / 'checkpoints' / 'alexnet-owt-7be5be79.pth'}" in errors[0]
    assert f"download {URL}" in errors[0] and "Traceback" not in err


class _Response(io.BytesIO):
    """What urlopen returns, for torch.hub's download loop."""

    def info(self) -> Message:
        return Message()  # no Content-Length


def test_a_download_with_the_wrong_hash_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    buffer = io.BytesIO()
    torch.save({"not": torch.zeros(1)}, buffer)
    monkeypatch.setattr(torch.hub, "urlopen", lambda *a, **k: _Response(buffer.getvalue()))
    with pytest.raises(InputError, match="invalid hash value"):
        torchvision_weights_file()
    assert not list((tmp_path / "hub" / "checkpoints").iterdir())


def test_filters_draws_torchvisions_pretrained_kernels(torch_home, tmp_path, capsys):
    code, out, err = cli_in_process(capsys, "filters", "--weights", "torchvision", "-o", tmp_path / "conv1.png")
    assert code == 0 and "64 kernels of 11x11" in out, err
