"""Section 5's optimizer: the paper's momentum form (the rate inside the velocity), no decay on
biases by default, and torch's form kept as an option."""

from __future__ import annotations

import pytest
import torch

from alexnet_cli.config import TrainConfig
from alexnet_cli.optim import PaperSGD, make_optimizer, parameter_groups


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(20, 10, generator=g, dtype=torch.float64)
    targets = [torch.randn(10, generator=g, dtype=torch.float64) for _ in range(12)]
    return w, targets


def _grad(w, t):
    return (w.sum(0) - t).unsqueeze(0).expand_as(w) / 7.0  # any gradient that depends on w


def test_paper_sgd_is_the_papers_update_rule_across_rate_drops():
    """v <- 0.9 v - 0.0005 e w - e g; w <- w + v, written out, with e dropped twice."""
    w0, targets = _problem()
    rates = [0.01] * 4 + [0.001] * 4 + [0.0001] * 4
    w, v = w0.clone(), torch.zeros_like(w0)
    for e, t in zip(rates, targets, strict=True):
        v = 0.9 * v - 0.0005 * e * w - e * _grad(w, t)
        w = w + v
    p = torch.nn.Parameter(w0.clone())
    opt = PaperSGD([p], lr=rates[0], momentum=0.9, weight_decay=0.0005)
    for e, t in zip(rates, targets, strict=True):
        opt.param_groups[0]["lr"] = e  # as the schedulers do
        p.grad = _grad(p.detach(), t)
        opt.step()
    torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-15)


def test_paper_sgd_is_torchs_sgd_while_the_rate_is_constant_and_differs_after_a_drop():
    w0, targets = _problem(1)
    params = [torch.nn.Parameter(w0.clone()) for _ in range(2)]
    opts = [PaperSGD([params[0]], lr=0.01, momentum=0.9, weight_decay=5e-4),
            torch.optim.SGD([params[1]], lr=0.01, momentum=0.9, weight_decay=5e-4)]
    for k, t in enumerate(targets):
        for p, opt in zip(params, opts, strict=True):
            opt.param_groups[0]["lr"] = 0.01 if k < 6 else 0.001
            p.grad = _grad(p.detach(), t)
            opt.step()
        if k < 6:
            assert torch.equal(params[0], params[1])  # bit for bit: the same kernels
    assert not torch.allclose(params[0], params[1], rtol=1e-6, atol=0)


def test_biases_are_not_decayed_unless_asked():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    groups = parameter_groups(model, 5e-4, bias_decay=False)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert {id(p) for p in groups[0]["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in groups[1]["params"]} == {id(model[0].bias), id(model[2].bias)}
    (one,) = parameter_groups(model, 5e-4, bias_decay=True)  # the layout checkpoints before had
    assert one["weight_decay"] == 5e-4 and len(one["params"]) == 4


@pytest.mark.parametrize("form,cls", [("paper", PaperSGD), ("torch", torch.optim.SGD)])
def test_make_optimizer_follows_the_config(form, cls):
    model = torch.nn.Linear(3, 2)
    opt = make_optimizer(TrainConfig(momentum_form=form, lr=0.02), model)
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.02 and opt.param_groups[0]["momentum"] == 0.9
    # a bias with zero decay really stays put when its gradient is zero
    model.bias.grad, model.weight.grad = torch.zeros(2), torch.zeros(2, 3)
    before_b, before_w = model.bias.detach().clone(), model.weight.detach().clone()
    opt.step()
    assert torch.equal(model.bias, before_b) and not torch.equal(model.weight, before_w)
