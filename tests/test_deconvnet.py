"""The deconvnet on any model, against itself and an independent oracle: Captum's ``NeuronDeconvolution``.

For a conv/ReLU/max-pool net, the deconvnet projection of an activation equals the gradient of
that activation w.r.t. the input with ReLU applied to the backward signal at every ReLU (Captum's
deconvolution rule), times the activation value. Checked for both of our paths (explicit and
autograd, :mod:`zfnet.viz.deconvnet`): in float64 on ZFNet (every layer, both modes, pool padding 0
and 1, the Krizhevsky 11x11/4 geometry, ablation variants, and with the contrast-normalisation
backward replaced by identity in the oracle the normalised ZFNet), on torchvision's AlexNet and
VGG-11 (in-place ReLUs, classifier layers) and ResNet-18 (the autograd path only: residual adds);
and the two paths against each other in float32 at 224 on ZFNet, AlexNet and VGG-11.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from captum.attr import NeuronDeconvolution
from torch import nn

from zfnet.models import krizhevsky, zfnet
from zfnet.viz import Deconvnet
from zfnet.viz.layers import LayerError, Tap, resolve, sequential_chain

WIDTHS = (4, 6, 6, 6, 5)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Captum announces its ReLU hooks


def _selector(channel: int, mode: str):
    """Captum's neuron: ``sum(a * stopgrad(seed))`` over map ``channel`` of the layer's output ``a``;
    its deconvolution-rule gradient is the projection of ``seed`` (the strongest activation, or the map)."""

    def select(out: torch.Tensor) -> torch.Tensor:
        a = out[:, channel].reshape(len(out), -1)
        seed = a.detach()
        if mode == "max":
            seed = torch.zeros_like(seed).scatter_(1, seed.argmax(1, keepdim=True), seed.max(1, keepdim=True).values)
        return (a * seed).sum(1)

    return select


def oracle(model: nn.Module, images: torch.Tensor, layer: str, channels: list[int], mode: str) -> torch.Tensor:
    """``(N, K, 3, H, W)`` by Captum's NeuronDeconvolution on a copy of ``model`` (ReLUs made
    out-of-place, as Captum's hooks need), contrast normalisation's backward the identity."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
        if isinstance(module, nn.LocalResponseNorm):
            module.register_full_backward_hook(lambda mod, gin, gout: (gout[0],))
    attribution = NeuronDeconvolution(model, model.get_submodule(resolve(model, layer)))
    return torch.stack([attribution.attribute(images.clone(), _selector(c, mode)) for c in channels], 1)


def _zfnet(kind: str) -> nn.Module:
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


def _torchvision(name: str) -> nn.Module:
    """torchvision's ``name`` with random weights; AlexNet's and VGG's classifier at width 64 (its
    layers as they are; 60-120 million fewer weights to copy)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    if name in ("alexnet", "vgg11"):
        first = next(i for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear))
        wide = model.classifier[first].in_features
        model.classifier = nn.Sequential(*[nn.Linear(wide if i == first else 64, 64) if isinstance(m, nn.Linear) else m
                                           for i, m in enumerate(model.classifier)])
    return model.eval()


def _check(model: nn.Module, images: torch.Tensor, layers: list[str], mode: str, paths: tuple[str, ...]) -> None:
    """Every path's projections of three maps of each layer equal the oracle's (float64)."""
    for layer in layers:
        out = {}
        tap = Tap(model, [layer], out.__setitem__, stop=False)
        with torch.no_grad(), tap:
            tap.run(images[:1])
        channels = [0, out[layer].shape[1] - 1, 2]
        expected = oracle(model, images, layer, channels, mode)
        assert expected.abs().max() > 0, layer
        for path in paths:
            recon = Deconvnet(model, max_batch=4, path=path).project(images, layer, channels, mode=mode)  # several chunks
            assert recon.shape == (len(images), len(channels), *images.shape[1:]), (layer, path)
            torch.testing.assert_close(recon, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()),
                                       msg=lambda m: f"{layer} ({path}): {m}")


@pytest.mark.parametrize(
    "kind, layers",
    [
        ("zfnet", ["conv1", "conv2", "conv3", "conv4", "conv5"]),
        ("zfnet-norm", ["conv2", "conv5", "fc6"]),
        ("krizhevsky", ["conv1", "conv2", "conv5"]),
        ("remove-3-4", ["conv5"]),
    ],
)
@pytest.mark.parametrize("mode", ["max", "map"])
def test_zfnet_projections_equal_captums_deconvolution_on_both_paths(kind: str, layers: list[str], mode: str) -> None:
    model = _zfnet(kind)
    torch.manual_seed(1)
    images = torch.randn(3, 3, model.input_size, model.input_size, dtype=torch.float64)
    _check(model, images, layers, mode, ("explicit", "autograd"))


@pytest.mark.parametrize("name, size, layers, paths", [
    ("alexnet", 96, ["features.11", "features.4", "features.12", "classifier.5"], ("explicit", "autograd")),
    ("vgg11", 64, ["features.19", "features.9"], ("explicit", "autograd")),
    ("resnet18", 64, ["layer2", "layer1.0.bn1"], ("autograd", "auto")),
])
def test_torchvision_projections_equal_captums_deconvolution(name, size, layers, paths) -> None:
    model = _torchvision(name).double()
    torch.manual_seed(1)
    _check(model, torch.randn(2, 3, size, size, dtype=torch.float64), layers, "max", paths)


@pytest.mark.parametrize("model, layers", [
    (lambda: zfnet(10, input_size=224).eval(), ["conv1", "conv2", "conv5"]),
    (lambda: _torchvision("alexnet"), ["features.1", "features.11", "classifier.2"]),
    (lambda: _torchvision("vgg11"), ["features.4", "features.19"]),
])
def test_explicit_and_autograd_paths_agree_at_224_in_float32(model, layers) -> None:
    model = model()
    torch.manual_seed(2)
    images = torch.randn(2, 3, 224, 224)
    for layer in layers:
        a = Deconvnet(model, path="explicit").project(images, layer, [0, 5], mode="max")
        b = Deconvnet(model, path="autograd").project(images, layer, [0, 5], mode="max")
        assert float((a - b).abs().max() / b.abs().max()) < 1e-4, layer


def test_the_path_is_chosen_by_the_graph() -> None:
    alexnet, resnet = _torchvision("alexnet"), _torchvision("resnet18")
    probe = torch.zeros(1, 3, 64, 64)
    assert sequential_chain(alexnet, "features.2", probe) == ["features.0", "features.1", "features.2"]
    assert sequential_chain(alexnet, "classifier.1", probe)[-3:] == ["avgpool", "classifier.0", "classifier.1"]
    assert sequential_chain(resnet, "layer1.0.conv1", probe) == ["conv1", "bn1", "relu", "maxpool", "layer1.0.conv1"]
    assert sequential_chain(resnet, "layer1.1.conv1", probe) is None  # after a residual add
    assert sequential_chain(resnet, "layer2", probe) is None
    with pytest.raises(ValueError, match="sequence of invertible modules"):
        Deconvnet(resnet, path="explicit").project(torch.randn(1, 3, 64, 64), "layer2", [0])
    with pytest.raises(LayerError, match="called 2 times"):
        Deconvnet(resnet).project(torch.randn(1, 3, 64, 64), "layer1.0.relu", [0])
    with pytest.raises(LayerError, match="has no layer 'conv5'.*features.0"):
        Deconvnet(alexnet).project(torch.randn(1, 3, 64, 64), "conv5", [0])


def test_a_functional_relu_is_refused_on_the_autograd_path() -> None:
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.conv2(torch.relu(self.conv1(x)))

    with pytest.raises(ValueError, match="outside an nn.ReLU module"):
        Deconvnet(Functional()).project(torch.randn(1, 3, 8, 8), "conv2", [0])


def test_project_at_matches_project_and_the_oracle_at_other_positions() -> None:
    model = _zfnet("zfnet")
    torch.manual_seed(2)
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    deconvnet = Deconvnet(model)
    act = {}
    tap = Tap(model, ["conv3"], act.__setitem__)
    with torch.no_grad(), tap:
        tap.run(images)
    act = act["conv3"]
    # The strongest position reproduces project(mode="max").
    flat = act[:, 1].flatten(1).argmax(1)
    ys, xs = flat // act.shape[-1], flat % act.shape[-1]
    at = deconvnet.project_at(images, "conv3", [1, 1], ys, xs)
    torch.testing.assert_close(at, deconvnet.project(images, "conv3", [1])[:, 0])
    # An arbitrary active position, and several items of one image, on both paths.
    pos = act[0, 3].flatten().nonzero()[:2, 0]
    y, x = (pos // act.shape[-1]).tolist(), (pos % act.shape[-1]).tolist()
    explicit = deconvnet.project_at(images[[0, 0]], "conv3", [3, 3], y, x)
    autograd = Deconvnet(model, path="autograd").project_at(images[[0, 0]], "conv3", [3, 3], y, x)
    torch.testing.assert_close(explicit, autograd)
    x_in = images[:1].clone().requires_grad_(True)
    model_copy = copy.deepcopy(model)
    handles = [m.register_full_backward_hook(lambda mod, gin, gout: (gout[0].clamp_min(0),))
               for m in model_copy.modules() if isinstance(m, nn.ReLU)]
    unit = {}
    tap = Tap(model_copy, ["conv3"], unit.__setitem__)
    with tap:
        tap.run(x_in)
    value = unit["conv3"][0, 3, y[1], x[1]]
    (grad,) = torch.autograd.grad(value, x_in)
    for h in handles:
        h.remove()
    torch.testing.assert_close(explicit[1], grad[0] * value.detach())


def test_hooks_are_released_and_in_place_relus_left_as_they_were() -> None:
    models = [_zfnet("zfnet"), _torchvision("alexnet")]
    for model, layer, path in [(models[0], "conv5", "explicit"), (models[1], "features.9", "autograd")]:
        Deconvnet(model, path=path).project(torch.randn(1, 3, 64, 64, dtype=next(model.parameters()).dtype), layer, [0])
        for module in model.modules():
            assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks
    assert all(m.inplace for m in models[1].modules() if isinstance(m, nn.ReLU))


@pytest.mark.parametrize("size", [224, 64])  # ZFNet's conv5 field (139 px) inside the image, and larger than it
def test_receptive_field_patches_are_the_crops_of_the_projections(size: int) -> None:
    from zfnet.viz.receptive import crop, receptive_field

    torch.manual_seed(3)
    model = zfnet(10, widths=(8, 16, 16, 16, 12), fc_sizes=(8, 8), input_size=size).eval()
    images = torch.randn(2, 3, size, size)
    field = receptive_field(model, "conv5")
    h = {224: 13, 64: 3}[size]
    ys, xs, image = torch.tensor([0, h - 1, h // 2]), torch.tensor([h - 1, 0, h // 2]), torch.tensor([0, 1, 1])
    for path in ("explicit", "autograd"):
        deconvnet = Deconvnet(model, path=path)
        patches = deconvnet.project_at(images, "conv5", [1, 2, 3], ys, xs, image, field)
        full = deconvnet.project_at(images, "conv5", [1, 2, 3], ys, xs, image)
        assert patches.shape == (3, 3, field.size, field.size)
        torch.testing.assert_close(patches, crop(full, field, ys, xs), rtol=1e-5, atol=1e-6 * float(full.abs().max()))
