"""The deconvnet against an independent oracle: Captum's ``Deconvolution`` attribution.

For a conv/ReLU/max-pool net, the deconvnet projection of an activation equals the gradient of
that activation w.r.t. the input with ReLU applied to the backward signal at every ReLU (Captum's
``Deconvolution`` rule), times the activation value. Checked in float64 for both modes, every
layer, pool padding 0 and 1, the Krizhevsky 11x11/4 geometry, ablation variants, and (with the
contrast-normalisation backward replaced by identity in the oracle) the normalised ZFNet.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import Deconvolution
from torch import nn

from zfnet.models import krizhevsky, zfnet
from zfnet.viz import Deconvnet
from zfnet.viz.deconvnet import forward_to

WIDTHS = (4, 6, 6, 6, 5)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum announces its ReLU hooks


class Unit(nn.Module):
    """Scalar per image: ``sum(a * stopgrad(seed))`` for one map of a layer's post-ReLU activation ``a``.

    Its gradient (under the deconvnet ReLU rule) is the oracle's projection of ``seed``.
    """

    def __init__(self, model: nn.Module, layer: str, channel: int, mode: str):
        super().__init__()
        self.model, self.layer, self.channel, self.mode = model, layer, channel, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, block in self.model.features.named_children():
            if name == self.layer:
                break
            x = block(x)
        block = self.model.layer(self.layer)
        a = block.relu(block.conv(x))[:, self.channel].flatten(1)  # (N, h*w)
        seed = a.detach()
        if self.mode == "max":
            seed = torch.zeros_like(seed).scatter_(1, seed.argmax(1, keepdim=True), seed.max(1, keepdim=True).values)
        return (a * seed).sum(1)


def oracle(model: nn.Module, images: torch.Tensor, layer: str, channels: list[int], mode: str) -> torch.Tensor:
    """``(N, K, 3, H, W)`` by Captum's Deconvolution; contrast normalisation's backward is identity."""
    handles = [
        m.register_full_backward_hook(lambda mod, gin, gout: (gout[0],))
        for m in model.modules()
        if isinstance(m, nn.LocalResponseNorm)
    ]
    try:
        out = [Deconvolution(Unit(model, layer, c, mode)).attribute(images.clone()) for c in channels]
    finally:
        for h in handles:
            h.remove()
    return torch.stack(out, 1)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "zfnet":
        model = zfnet(3, widths=WIDTHS, fc_sizes=(8, 8), contrast_norm=False, input_size=64)
    elif kind == "zfnet-norm":
        model = zfnet(3, widths=WIDTHS, fc_sizes=(8, 8), contrast_norm=True, input_size=64)
    elif kind == "krizhevsky":
        model = krizhevsky(3, widths=WIDTHS, fc_sizes=(8, 8), contrast_norm=False, input_size=67)
    elif kind == "remove-3-4":
        model = zfnet(3, widths=WIDTHS, fc_sizes=(8, 8), contrast_norm=False, remove=("conv3", "conv4"), input_size=71)
    else:
        raise ValueError(kind)
    return model.double().eval()


@pytest.mark.parametrize(
    "kind, layers",
    [
        ("zfnet", ["conv1", "conv2", "conv3", "conv4", "conv5"]),
        ("zfnet-norm", ["conv2", "conv5"]),
        ("krizhevsky", ["conv1", "conv2", "conv5"]),
        ("remove-3-4", ["conv5"]),
    ],
)
@pytest.mark.parametrize("mode", ["max", "map"])
def test_deconvnet_equals_deconvolution_gradient(kind: str, layers: list[str], mode: str) -> None:
    model = _model(kind)
    torch.manual_seed(1)
    images = torch.randn(3, 3, model.input_size, model.input_size, dtype=torch.float64)
    deconvnet = Deconvnet(model, max_batch=4)  # several chunks per call
    for layer in layers:
        channels = [0, model.layer(layer).spec.out_channels - 1, 2]
        recon = deconvnet.project(images, layer, channels, mode=mode)
        assert recon.shape == (3, 3, *images.shape[1:])
        expected = oracle(model, images, layer, channels, mode)
        assert expected.abs().max() > 0
        torch.testing.assert_close(recon, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))


def test_project_at_matches_project_and_oracle_at_other_positions() -> None:
    model = _model("zfnet")
    torch.manual_seed(2)
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    deconvnet = Deconvnet(model)
    act = model.layer("conv3").relu(model.layer("conv3").conv(forward_to(model, images, "conv2")))
    # The strongest position reproduces project(mode="max").
    flat = act[:, 1].flatten(1).argmax(1)
    ys, xs = flat // act.shape[-1], flat % act.shape[-1]
    at = deconvnet.project_at(images, "conv3", [1, 1], ys, xs)
    torch.testing.assert_close(at, deconvnet.project(images, "conv3", [1])[:, 0])
    # An arbitrary active position equals the single-unit oracle gradient times its value.
    pos = act[0, 3].flatten().nonzero()[0, 0]
    y, x = int(pos) // act.shape[-1], int(pos) % act.shape[-1]
    recon = deconvnet.project_at(images[:1], "conv3", [3], [y], [x])[0]
    x_in = images[:1].clone().requires_grad_(True)
    handles = [m.register_full_backward_hook(lambda mod, gin, gout: (gout[0].clamp_min(0),))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        unit = model.layer("conv3").relu(model.layer("conv3").conv(forward_to(model, x_in, "conv2")))[0, 3, y, x]
        (grad,) = torch.autograd.grad(unit, x_in)
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(recon, grad[0] * unit.detach())


def test_hooks_are_released_and_state_cleared() -> None:
    model = _model("zfnet")
    deconvnet = Deconvnet(model)
    deconvnet.project(torch.randn(1, 3, 64, 64, dtype=torch.float64), "conv5", [0])
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert not deconvnet._activation and not deconvnet._switches
    with deconvnet:
        with pytest.raises(RuntimeError):
            deconvnet.__enter__()
