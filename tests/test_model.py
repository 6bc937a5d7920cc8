"""The paper's network: shapes, parameters, LRN, init, the tower split and the state_dict layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from alexnet_cli.model import (
    ARCHES,
    LAYER_OUTPUTS,
    LAYERS,
    LRN_ALPHA,
    LRN_BETA,
    LRN_K,
    LRN_SIZE,
    AlexNet,
    LocalResponseNorm,
    ModelConfig,
    _lrn_plain,
    arch_of,
    build_model,
    layer_of,
    layer_output,
    local_response_norm,
    merge_towers,
    split_towers,
)


def lrn_reference(a: torch.Tensor, n=5, k=2.0, alpha=1e-4, beta=0.75) -> torch.Tensor:
    """Section 3.3 written out literally: b_i = a_i / (k + alpha sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j^2)^beta."""
    N = a.shape[1]
    out = torch.empty_like(a)
    for i in range(N):
        lo, hi = max(0, i - n // 2), min(N - 1, i + n // 2)
        s = (a[:, lo : hi + 1] ** 2).sum(1)
        out[:, i] = a[:, i] / (k + alpha * s) ** beta
    return out


def grouped_reference(sd: dict, x: torch.Tensor, test_scale: float = 0.5) -> torch.Tensor:
    """The network written against the grouped single-model layout (eval mode), independent of
    the Tower code: grouped convs, LRN per group of 48 maps via torch's LocalResponseNorm
    (whose alpha is divided by n, hence 5e-4); fc6 and fc7 outputs times `test_scale` (section
    4.2's "multiply their outputs by 0.5"; 1 for inverted dropout)."""
    lrn = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

    def norm(t):
        b, c, h, w = t.shape
        return lrn(t.reshape(b * 2, c // 2, h, w)).reshape(b, c, h, w)

    x = F.max_pool2d(norm(F.relu(F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], stride=4, padding=2))), 3, 2)
    x = F.max_pool2d(norm(F.relu(F.conv2d(x, sd["conv2.weight"], sd["conv2.bias"], padding=2, groups=2))), 3, 2)
    x = F.relu(F.conv2d(x, sd["conv3.weight"], sd["conv3.bias"], padding=1))
    x = F.relu(F.conv2d(x, sd["conv4.weight"], sd["conv4.bias"], padding=1, groups=2))
    x = F.max_pool2d(F.relu(F.conv2d(x, sd["conv5.weight"], sd["conv5.bias"], padding=1, groups=2)), 3, 2)
    x = F.relu(F.linear(x.flatten(1), sd["fc6.weight"], sd["fc6.bias"])) * test_scale
    x = F.relu(F.linear(x, sd["fc7.weight"], sd["fc7.bias"])) * test_scale
    return F.linear(x, sd["fc8.weight"], sd["fc8.bias"])


def test_parameter_count_matches_the_paper_model():
    assert sum(p.numel() for p in AlexNet(1000).parameters()) == 60_965_224


def test_output_shape_and_num_classes():
    model = AlexNet(num_classes=10).eval()
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 10)


def test_state_dict_is_the_grouped_layout_in_network_order():
    sd = AlexNet(1000).state_dict()
    expected = {
        "conv1.weight": (96, 3, 11, 11),
        "conv2.weight": (256, 48, 5, 5),
        "conv3.weight": (384, 256, 3, 3),
        "conv4.weight": (384, 192, 3, 3),
        "conv5.weight": (256, 192, 3, 3),
        "fc6.weight": (4096, 9216),
        "fc7.weight": (4096, 4096),
        "fc8.weight": (1000, 4096),
    }
    assert list(sd) == [f"{layer}.{kind}" for layer in LAYERS for kind in ("weight", "bias")]
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key


@pytest.mark.parametrize("form,test_scale", [("paper", 0.5), ("inverted", 1.0)])
def test_forward_equals_an_independent_grouped_implementation(form, test_scale):
    torch.manual_seed(0)
    model = AlexNet(num_classes=7, bias_init=0.1, dropout_form=form).eval()
    # larger weights than the init so that LRN's denominator really departs from k
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5)
    x = torch.randn(2, 3, 224, 224) * 60
    sd = model.state_dict()
    torch.testing.assert_close(model(x), grouped_reference(sd, x, test_scale), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels", [1, 3, 48])
def test_lrn_matches_the_section_3_3_formula_including_edge_maps(channels):
    torch.manual_seed(channels)
    a = (torch.randn(2, channels, 5, 4, dtype=torch.float64) * 40).requires_grad_()
    out = LocalResponseNorm()(a)
    ref = lrn_reference(a)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, a, g)
    (grad_ref,) = torch.autograd.grad(ref, a, g)
    torch.testing.assert_close(grad, grad_ref)


def test_lrn_alpha_is_not_divided_by_n():
    a = torch.full((1, 5, 1, 1), 100.0)
    # centre map: sum over 5 maps of 100^2 = 5e4; (2 + 1e-4 * 5e4)^0.75 = 7^0.75
    assert LocalResponseNorm()(a)[0, 2, 0, 0].item() == pytest.approx(100 / 7**0.75, rel=1e-6)


def test_lrn_gradcheck():
    a = (torch.randn(1, 6, 3, 3, dtype=torch.float64) * 30).requires_grad_()
    assert torch.autograd.gradcheck(LocalResponseNorm(), (a,))


def test_lrn_works_in_channels_last():
    a = torch.randn(2, 48, 7, 7) * 30
    out = LocalResponseNorm()(a.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, lrn_reference(a), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_lrn_normalises_each_tower_on_its_own(channels_last):
    torch.manual_seed(3)
    a = torch.randn(2, 12, 4, 3, dtype=torch.float64) * 40
    if channels_last:
        a = a.contiguous(memory_format=torch.channels_last)
    a.requires_grad_()
    out = local_response_norm(a, groups=2)
    ref = torch.cat([lrn_reference(a[:, :6]), lrn_reference(a[:, 6:])], 1)
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, a, g)
    (grad_ref,) = torch.autograd.grad(ref, a, g)
    torch.testing.assert_close(grad, grad_ref)


@pytest.mark.parametrize("size,alpha,beta,k", [(3, 1e-3, 0.5, 1.0), (5, 2e-4, 1.0, 2.0)])
def test_lrn_other_constants_match_the_formula(size, alpha, beta, k):
    """beta = 3/4 has its own fast path; any other constants go through the general one."""
    torch.manual_seed(4)
    a = (torch.randn(2, 7, 3, 3, dtype=torch.float64) * 30).requires_grad_()
    lrn = LocalResponseNorm(size, alpha, beta, k)
    torch.testing.assert_close(lrn(a), lrn_reference(a, n=size, k=k, alpha=alpha, beta=beta))
    assert torch.autograd.gradcheck(lrn, (a,))


def test_init_follows_section_5():
    torch.manual_seed(0)
    sd = AlexNet(1000).state_dict()
    for layer in LAYERS:
        w = sd[f"{layer}.weight"]
        assert w.mean().abs() < 0.002, layer
        assert w.std().item() == pytest.approx(0.01, rel=0.05), layer
    for layer in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        assert torch.all(sd[f"{layer}.bias"] == 1.0)
    for layer in ("conv1", "conv3", "fc8"):
        assert torch.all(sd[f"{layer}.bias"] == 0.0)
    sd01 = AlexNet(10, bias_init=0.1).state_dict()
    assert torch.allclose(sd01["fc6.bias"], torch.tensor(0.1))
    assert torch.all(sd01["conv1.bias"] == 0.0)


def test_split_on_two_cpu_devices_equals_unsplit():
    torch.manual_seed(0)
    single = AlexNet(num_classes=10).eval()
    split = AlexNet(num_classes=10, devices=("cpu", "cpu")).eval()
    split.load_state_dict(single.state_dict())
    x = torch.randn(3, 3, 224, 224) * 50
    torch.testing.assert_close(split(x), single(x), rtol=1e-5, atol=1e-5)
    assert split.devices == (torch.device("cpu"), torch.device("cpu"))
    for a, b in zip(split.state_dict().values(), single.state_dict().values()):
        assert torch.equal(a, b)


def test_split_and_unsplit_gradients_agree():
    torch.manual_seed(1)
    single = AlexNet(num_classes=5)
    split = AlexNet(num_classes=5, devices=("cpu", "cpu"))
    split.load_state_dict(single.state_dict())
    x = torch.randn(2, 3, 224, 224) * 50
    y = torch.tensor([1, 3])
    torch.manual_seed(2)
    F.cross_entropy(single(x), y).backward()
    torch.manual_seed(2)
    F.cross_entropy(split(x), y).backward()
    for (n, a), b in zip(single.named_parameters(), split.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize(
    "switch, grad_rtol", [({}, 1e-5), (dict(activation="tanh", lrn=False, pool="plain"), 1e-4)]
)
def test_split_and_unsplit_agree_in_training_mode_with_bias_0_1(switch, grad_rtol):
    """One device computes each layer of both towers in one call; split, each tower runs its own
    modules. Same outputs (dropout included) and the same gradients, also with Caffe's bias and
    with the ablation switches (tanh, no LRN, plain pooling)."""
    torch.manual_seed(3)
    single = AlexNet(num_classes=4, bias_init=0.1, **switch)
    split = AlexNet(num_classes=4, bias_init=0.1, devices=("cpu", "cpu"), **switch)
    split.load_state_dict(single.state_dict())
    x = torch.randn(2, 3, 224, 224) * 50
    torch.manual_seed(5)
    out_single = single(x)
    torch.manual_seed(5)
    out_split = split(x)
    torch.testing.assert_close(out_split, out_single, rtol=1e-5, atol=1e-5)
    out_single.square().sum().backward()
    out_split.square().sum().backward()
    for (n, a), b in zip(single.named_parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=grad_rtol, atol=1e-6, msg=n)


def test_tower_helpers_round_trip_any_parameter_dict():
    sd = AlexNet(10).state_dict()
    towers = dict(sd)
    split_towers(towers)
    assert "towers.1.conv2.weight" in towers and "conv2.weight" not in towers
    assert towers["towers.1.conv2.weight"].shape == (128, 48, 5, 5)
    back = merge_towers(towers)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_load_state_dict_rejects_wrong_class_count():
    with pytest.raises(RuntimeError):
        AlexNet(10).load_state_dict(AlexNet(1000).state_dict())


def test_devices_needs_two_entries():
    with pytest.raises(ValueError, match="two entries"):
        AlexNet(10, devices=("cpu",))


def test_torchvision_arch_reuses_torchvision():
    model = build_model(ModelConfig(arch="torchvision", num_classes=1000))
    assert isinstance(model, torchvision.models.AlexNet)
    assert sum(p.numel() for p in model.parameters()) == 61_100_840
    ref = torchvision.models.alexnet(weights=None)
    model.load_state_dict(ref.state_dict())  # torchvision's weight files load as they are


def test_unknown_arch():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model(ModelConfig(arch="vgg"))


# --------------------------------------------------------------------------------------------
# Dropout (section 4.2)


@pytest.mark.parametrize("form", ["paper", "inverted"])
def test_dropout_forms_train_and_test_as_described(form):
    from alexnet_cli.model import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.5, form)
    x = torch.rand(400, 256) + 0.5
    y = drop.train()(x)
    kept = y != 0
    assert 0.45 < kept.float().mean() < 0.55
    scale = 1.0 if form == "paper" else 2.0  # the paper never rescales in training
    assert torch.equal(y[kept], x[kept] * scale)
    test = drop.eval()(x)
    assert torch.equal(test, x * 0.5 if form == "paper" else x)  # "multiply their outputs by 0.5"
    # the same expected function either way: the mean training output is the test output's
    assert torch.allclose(y.mean(), test.mean(), rtol=0.03)


def test_dropout_masks_depend_on_the_sample_not_on_how_the_batch_is_shared():
    from alexnet_cli.model import DropoutMasks

    x = torch.ones(8, 32)
    whole = DropoutMasks((0, 1, 2), 0, 8).keep(x, 0, 0.5)
    halves = [DropoutMasks((0, 1, 2), s, 8).keep(x[s : s + 4], 0, 0.5) for s in (0, 4)]
    thirds = [DropoutMasks((0, 1, 2), s, 8).keep(x[s:e], 0, 0.5) for s, e in ((0, 3), (3, 6), (6, 8))]
    assert torch.equal(torch.cat(halves), whole) and torch.equal(torch.cat(thirds), whole)
    assert not torch.equal(DropoutMasks((0, 1, 3), 0, 8).keep(x, 0, 0.5), whole)  # another step
    assert not torch.equal(DropoutMasks((0, 1, 2), 0, 8).keep(x, 1, 0.5), whole)  # another layer


def test_set_dropout_masks_numbers_the_layers_alike_on_every_placement():
    from alexnet_cli.model import Dropout, DropoutMasks, set_dropout_masks

    one, split = AlexNet(10), AlexNet(10, devices=("cpu", "cpu"))
    masks = DropoutMasks((0, 0, 0), 0, 2)
    for model in (one, split):
        set_dropout_masks(model, masks)
    layers = [[(n, m.layer) for n, m in model.named_modules() if isinstance(m, Dropout)] for model in (one, split)]
    assert layers[0] == layers[1] and [k for _, k in layers[0]] == [0, 1, 2, 3]
    torch.manual_seed(5)
    x = torch.randn(2, 3, 224, 224)
    split.load_state_dict(one.state_dict())
    torch.testing.assert_close(one.train()(x), split.train()(x), rtol=1e-4, atol=1e-4)


def test_torchvision_arch_uses_the_chosen_dropout_form():
    from alexnet_cli.model import Dropout

    model = build_model(ModelConfig(arch="torchvision", num_classes=10, dropout_form="paper"))
    forms = [m.form for m in model.modules() if isinstance(m, Dropout)]
    assert forms == ["paper", "paper"] and not any(type(m) is torch.nn.Dropout for m in model.modules())


# --------------------------------------------------------------------------------------------
# The export path of LRN and the layer outputs features are read from


@pytest.mark.parametrize("groups,channels_last", [(1, False), (2, True)])
def test_lrn_plain_ops_for_export_equal_the_fast_path(groups, channels_last):
    """torch.export traces LRN as plain ops; they give the fast path's values (float32, ReLU'd
    maps at conv1's scale) and section 3.3's formula."""
    torch.manual_seed(5)
    a = F.relu(torch.randn(2, 96, 13, 13) * 60)
    if channels_last:
        a = a.contiguous(memory_format=torch.channels_last)
    fast = local_response_norm(a, groups=groups)
    plain = _lrn_plain(a.view(2, groups, 96 // groups, 13, 13), LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K).view(2, 96, 13, 13)
    torch.testing.assert_close(plain, fast, rtol=2e-6, atol=1e-6)
    ref = torch.cat([lrn_reference(h.double()) for h in a.chunk(groups, dim=1)], 1).float()
    torch.testing.assert_close(plain, ref)


def test_torch_export_traces_lrn_as_plain_ops():
    program = torch.export.export(LocalResponseNorm(), (torch.randn(2, 8, 5, 5),))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.pow.Tensor_Scalar" in ops and not any("addcmul" in op or "rsqrt" in op for op in ops), ops


@pytest.mark.parametrize("arch", ARCHES)
def test_layer_output_stops_at_every_named_layer(arch):
    torch.manual_seed(6)
    model = build_model(ModelConfig(arch=arch, num_classes=7)).eval()
    x = torch.randn(2, 3, 224, 224) * 50
    shapes = {"pool5": (2, 9216), "fc6": (2, 4096), "fc7": (2, 4096), "fc8": (2, 7)}
    with torch.no_grad():
        outputs = {layer: layer_output(model, x, layer) for layer in LAYER_OUTPUTS}
        fc8 = model(x)
    for layer, shape in shapes.items():
        assert outputs[layer].shape == shape
    assert outputs["conv1"].shape[2:] == (55, 55) and outputs["pool2"].shape[2:] == (13, 13)
    assert outputs["conv5"].shape == (2, 256, 13, 13) and (outputs["fc7"] >= 0).all()
    assert torch.equal(outputs["fc8"], fc8)
    # each output feeds the next layers: fc7's units through fc8 are the logits
    head = model.fc8 if arch == "paper" else model.classifier[6]
    torch.testing.assert_close(head(outputs["fc7"]), fc8)
    with pytest.raises(ValueError, match="unknown layer 'fc9'"):
        layer_output(model, x, "fc9")


@pytest.mark.parametrize("arch", ARCHES)
def test_every_parameter_belongs_to_one_of_the_papers_layers(arch):
    model = build_model(ModelConfig(arch=arch, num_classes=3))
    layers = [layer_of(name) for name, _ in model.named_parameters()]
    assert set(layers) == set(LAYERS) and arch_of(model) == arch
    assert layer_of("towers.1.conv2.weight") == layer_of("features.3.bias") == "conv2"


def test_layer_outputs_needs_the_towers_on_one_device():
    with pytest.raises(ValueError, match="one device"):
        next(AlexNet(num_classes=2, devices=("cpu", "cpu")).layer_outputs(torch.zeros(1, 3, 224, 224)))
