"""Models: the paper's layer sizes, names, removable layers, filter renormalisation, init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zfnet.models import build, krizhevsky, zfnet
from zfnet.config import ModelConfig
from zfnet.models.filters import renormalize_filters
from zfnet.train.loop import init_weights

PAPER_SHAPES = {"conv1": (96, 55, 55), "conv2": (256, 13, 13), "conv3": (384, 13, 13),
                "conv4": (384, 13, 13), "conv5": (256, 6, 6)}


def block_outputs(model, size=224):
    x = torch.zeros(1, 3, size, size)
    out = {}
    for name, block in model.features.named_children():
        x = block(x)
        out[name] = tuple(x.shape[1:])
    return out


def test_zfnet_matches_fig3():
    model = zfnet(1000)
    assert block_outputs(model) == PAPER_SHAPES
    conv1 = model.layer("conv1").conv
    assert (conv1.kernel_size, conv1.stride) == ((7, 7), (2, 2))
    assert model.layer("conv2").conv.stride == (2, 2)
    assert model.layer("fc6").linear.in_features == 256 * 6 * 6
    assert model.layer("fc6").linear.out_features == 4096 and model.layer("fc8").out_features == 1000
    assert isinstance(model.layer("conv1").norm, nn.LocalResponseNorm)
    assert model.layer("fc6").dropout.p == 0.5


def test_krizhevsky_geometry():
    model = krizhevsky(1000)
    conv1 = model.layer("conv1").conv
    assert (conv1.kernel_size, conv1.stride) == ((11, 11), (4, 4))
    shapes = block_outputs(model)
    assert shapes["conv1"] == (96, 27, 27) and shapes["conv5"] == (256, 6, 6)


def test_named_modules_and_relus():
    model = zfnet(10, widths=(8, 16, 16, 16, 8), fc_sizes=(32, 32), input_size=64)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"} <= names
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 7 and not any(r.inplace for r in relus)
    assert model.layer_names() == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


@pytest.mark.parametrize("remove", [["fc7"], ["fc6", "fc7"], ["conv3", "conv4"], ["conv3", "conv4", "fc6", "fc7"]])
def test_table3_removals(remove):
    model = zfnet(10, widths=(8, 16, 16, 16, 8), fc_sizes=(32, 32), input_size=64, remove=remove)
    assert not set(remove) & set(model.layer_names())
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_cannot_remove_other_layers():
    with pytest.raises(ValueError, match="conv1"):
        zfnet(10, remove=["conv1"])


def test_build_from_config_widths():
    cfg = ModelConfig(widths=[8, 16, 32, 32, 16], fc_sizes=[64, 128])
    model = build(cfg, 7, 64)
    assert model.layer("conv3").conv.out_channels == 32
    assert model.layer("fc7").linear.out_features == 128 and model.num_classes == 7


def test_renormalize_filters_caps_rms_at_radius():
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn_like(conv.weight))
        conv.weight[0] *= 1e-3  # small filter: untouched
    before = conv.weight.detach().clone()
    n = renormalize_filters(conv, radius=0.1)
    rms = conv.weight.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert n == 3
    assert torch.allclose(rms[1:], torch.full((3,), 0.1), atol=1e-6)
    assert torch.equal(conv.weight[0], before[0])


def test_paper_init():
    torch.manual_seed(0)
    model = zfnet(10, widths=(32, 32, 32, 32, 32), fc_sizes=(256, 256), input_size=64)
    init_weights(model, "paper", 0.01)
    w = model.layer("conv2").conv.weight.detach()
    assert abs(float(w.std()) - 0.01) < 1e-3 and float(model.layer("conv2").conv.bias.detach().abs().max()) == 0.0


@pytest.mark.parametrize("channels, size", [(5, 5), (24, 5), (64, 4), (96, 5)])
def test_contrast_norm_equals_torch_local_response_norm(channels, size):
    from zfnet.models.zfnet import ContrastNorm

    torch.manual_seed(0)
    x = (torch.randn(3, channels, 7, 9) * 20).requires_grad_()
    ours, ref = ContrastNorm(size, alpha=1e-4, beta=0.75, k=2.0), nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=2.0)
    y, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    (grad,), (grad_ref,) = torch.autograd.grad(y, x, g), torch.autograd.grad(y_ref, x, g)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-5)
    cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y_cl = ours(cl)
    torch.testing.assert_close(y_cl, y_ref.detach(), rtol=1e-5, atol=1e-5)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(torch.autograd.grad(y_cl, cl, g)[0], grad_ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the inference path (no autograd Function) gives the same values
        torch.testing.assert_close(ours(x), y_ref.detach(), rtol=1e-5, atol=1e-5)
    x64 = (torch.randn(2, channels, 3, 4, dtype=torch.float64) * 20).requires_grad_()
    assert torch.autograd.gradcheck(ours, (x64,))
