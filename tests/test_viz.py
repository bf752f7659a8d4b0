"""Receptive fields, the top-9 pass and the figures (Figs. 2, 4, 6), on small real models and images:
ours and torchvision's (random weights), and ``zfnet visualize`` on a folder of images with either."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import torchvision
from torch import nn

from zfnet.config import ModelConfig
from zfnet.data.synthetic import CLASS_NAMES, render_image
from zfnet.models import build, krizhevsky, zfnet
from zfnet.train.checkpoint import Checkpoint
from zfnet.viz.evolution import converged_epoch, evolution, lower_layers_first, settled
from zfnet.viz.filters import band_shares, filter_stats, filters
from zfnet.viz.layers import LayerError, Tap
from zfnet.viz.receptive import crop, receptive_field
from zfnet.viz.top9 import top9, top9_figures

WIDTHS = [6, 8, 8, 8, 6]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """40 synthetic 64x64 images (drawn shapes on clutter), mean-subtracted and scaled as in training."""
    rng = np.random.default_rng(0)
    pics = [np.asarray(render_image(rng, CLASS_NAMES[i % 4], (64, 64))[0]) for i in range(40)]
    x = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).float()
    return (x - x.mean(0)) / 64


def _batches(x: torch.Tensor, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], torch.arange(i, min(i + size, len(x)))) for i in range(0, len(x), size)]


def _acts(model: nn.Module, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """The feature maps of ``layers`` for ``x``."""
    out = {}
    tap = Tap(model, list(layers), out.__setitem__, stop=False)
    with tap:
        tap.run(x)
    return out


def _model(arch: str, size: int) -> nn.Module:
    torch.manual_seed(0)
    if arch in ("zfnet", "krizhevsky"):
        return (zfnet if arch == "zfnet" else krizhevsky)(3, widths=WIDTHS, fc_sizes=(8, 8), input_size=size).double()
    return torchvision.models.get_model(arch, weights=None).double().eval()


@pytest.mark.parametrize("arch, size, layers", [
    ("zfnet", 64, ("conv1", "conv2", "conv3", "conv5")),
    ("krizhevsky", 67, ("conv1", "conv2", "conv3", "conv5")),
    ("alexnet", 96, ("features.1", "features.4", "features.11")),
    ("resnet18", 64, ("maxpool", "layer1", "layer2.0")),  # the last two: measured (residual adds)
])
def test_receptive_field_is_the_gradient_support(arch: str, size: int, layers) -> None:
    model = _model(arch, size)
    x = torch.randn(16, 3, size, size, dtype=torch.float64, requires_grad=True)
    acts = _acts(model, x, layers)
    for layer in layers:
        act = acts[layer]
        field = receptive_field(model, layer, size)
        last = act.shape[-1] - 1
        for y, xx in [(0, 0), (last // 2, last), (last, last // 2)]:
            (grad,) = torch.autograd.grad(act[:, :, y, xx].sum(), x, retain_graph=True)
            support = grad.abs().sum((0, 1)) > 0  # union over 16 images and all maps
            rows, cols = support.any(1).nonzero().flatten(), support.any(0).nonzero().flatten()
            seen = [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1]
            assert field.boxes([y], [xx], (size, size))[0].tolist() == seen, (arch, layer, y, xx)
    with pytest.raises(LayerError, match="whole image"):
        receptive_field(model, "fc6" if arch in ("zfnet", "krizhevsky") else "avgpool", size)


def test_receptive_fields_of_the_papers_and_torchvisions_nets() -> None:
    assert (receptive_field(zfnet(10), "conv5").size, receptive_field(zfnet(10), "conv5").stride) == (139, 16)
    alexnet = torchvision.models.alexnet(weights=None)
    assert (receptive_field(alexnet, "features.11").size, receptive_field(alexnet, "features.11").stride) == (163, 16)
    resnet = torchvision.models.resnet18(weights=None).eval()
    field = receptive_field(resnet, "layer3", 64)  # measured on a probe grown until the field fits inside it
    assert (field.size, field.stride) == (211, 16)


def test_crop_cuts_the_unclipped_field_with_zeros_outside() -> None:
    model = zfnet(3, widths=WIDTHS, fc_sizes=(8, 8), input_size=64)
    field = receptive_field(model, "conv2")  # 27 px, stride 8, offset -3
    image = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).view(2, 3, 64, 64) + 1
    patches = crop(image, field, torch.tensor([0, 2]), torch.tensor([1, 5]))
    assert patches.shape == (2, 3, 27, 27)
    assert (patches[0, :, :3] == 0).all() and (patches[0, :, 3:, :] > 0).all()  # rows -3..-1 are outside
    torch.testing.assert_close(patches[1], image[1, :, 13:40, 37:64])


@pytest.mark.parametrize("arch, layers", [
    ("zfnet", None),
    ("alexnet", ["features.4", "features.11"]),
    ("resnet18", ["layer1", "layer2.0.relu"]),  # a ReLU called twice per forward
])
def test_top9_streaming_pass_equals_brute_force(images: torch.Tensor, arch: str, layers) -> None:
    torch.manual_seed(0)
    model = zfnet(4, widths=WIDTHS, fc_sizes=(8, 8), input_size=64) if arch == "zfnet" else \
        torchvision.models.get_model(arch, weights=None)
    model.eval()
    if arch == "resnet18":
        with pytest.raises(LayerError, match="more than once per forward"):
            top9(model, _batches(images, 7), layers)
        layers = layers[:1]
    streamed = top9(model, _batches(images, 7), layers)
    assert list(streamed) == (layers or ["conv1", "conv2", "conv3", "conv4", "conv5"])
    with torch.no_grad():
        acts = _acts(model, images, streamed)
    for layer, top in streamed.items():
        per_image, _ = acts[layer].flatten(2).max(2)  # (N, C)
        expected = per_image.T.topk(9, dim=1)
        torch.testing.assert_close(top.values, expected.values)
        live = top.values[:, -1] > 0  # all-zero maps tie; their indices are arbitrary
        assert torch.equal(top.images[live], expected.indices[live])
        assert all(len(set(row.tolist())) == 9 for row in top.images)  # 9 different images
        chosen = acts[layer][top.images, torch.arange(len(top.values))[:, None], top.ys, top.xs]
        torch.testing.assert_close(chosen, top.values)  # (y, x) point at the recorded value
    first = list(streamed)[0]
    one_layer = top9(model, _batches(images, 40), layers=[first], k=3)
    torch.testing.assert_close(one_layer[first].values, streamed[first].values[:, :3])


def test_top9_figures_write_one_png_per_layer(images: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build(ModelConfig(widths=WIDTHS, fc_sizes=[8, 8], remove=["conv4"]), 4, 64).eval()
    tops = top9(model, _batches(images, 16))
    paths = top9_figures(model, tops, lambda idx: images[idx], tmp_path, maps=4)
    assert sorted(paths) == ["conv1", "conv2", "conv3", "conv5"]
    for layer, path in paths.items():
        with Image.open(path) as png:
            assert png.size[0] > 200 and png.size[1] > 100


def test_filter_stats_bands_and_dead_filters(tmp_path: Path) -> None:
    k = 7
    yy, xx = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    flat = torch.ones(3, k, k)
    checker = ((yy + xx) % 2 * 2 - 1).float().expand(3, k, k)
    stripes = torch.cos(2 * torch.pi * xx / 4).float().expand(3, k, k)  # 1/4 cycle/px = r 0.5: mid
    shares = band_shares(torch.stack([flat, checker, stripes]))
    assert shares.argmax(1).tolist() == [0, 2, 1]
    torch.testing.assert_close(shares.sum(1), torch.ones(3))
    torch.manual_seed(0)
    weight = torch.randn(10, 3, k, k)
    weight[:2] *= 0.01
    stats = filter_stats(weight)
    assert stats["dead"] == 2 and stats["dead_fraction"] == pytest.approx(0.2)
    assert sum(stats["band_energy"].values()) == pytest.approx(1.0)
    model = krizhevsky(4, widths=WIDTHS, fc_sizes=(8, 8), input_size=67)
    out = filters(model, tmp_path / "filters.png")
    assert Path(out["figure"]).is_file() and out["filters"] == WIDTHS[0]


def test_cka_centring_is_the_centring_matrix_product() -> None:
    """:func:`zfnet.viz.evolution.centre` (row and column means, O(n^2)) is ``H K H`` to rounding,
    so the CKA values and their bootstrap error are the definition's."""
    from zfnet.viz.evolution import centre, cka, gram

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(50, 30, generator=gen)
    k, l = gram(x), gram(x @ torch.randn(30, 20, generator=gen) + torch.randn(50, 20, generator=gen))
    h = torch.eye(50, dtype=torch.float64) - 1 / 50
    assert torch.allclose(centre(k), h @ k @ h, rtol=0, atol=1e-10 * k.abs().max())
    kc, lc = h @ k @ h, h @ l @ h
    assert abs(cka(k, l) - float((kc * lc).sum() / (kc.norm() * lc.norm()))) < 1e-12
    assert abs(cka(k, k) - 1) < 1e-12


def test_lower_layers_first_falls_back_to_settledness_when_epochs_tie() -> None:
    assert settled([9, 9, 9], 9) == 1.0 and settled([0, 9, 9], 9) == 0.5 and settled([9], 9) == 1.0
    assert lower_layers_first([1, 2, 2, 5, 10], [1.0, 0.9, 0.8, 0.5, 0.4]) == (True, "converged_epoch")
    assert lower_layers_first([1, 5, 2, 10, 10], [1.0, 0.9, 0.8, 0.5, 0.4]) == (False, "converged_epoch")
    assert lower_layers_first([40] * 5, [0.8, 0.7, 0.7, 0.5, 0.2]) == (True, "settled")
    assert lower_layers_first([40] * 5, [0.5, 0.7, 0.7, 0.5, 0.2]) == (False, "settled")


def test_converged_epoch_needs_all_later_milestones_stable() -> None:
    assert converged_epoch([1, 2, 5, 10], [3, 8, 6, 9], stable=7) == 10
    assert converged_epoch([1, 2, 5, 10], [3, 8, 7, 9], stable=7) == 2
    assert converged_epoch([1, 2, 5, 10], [9, 9, 9, 9], stable=7) == 1


def test_evolution_on_trained_milestones(images: torch.Tensor, tmp_path: Path) -> None:
    cfg = ModelConfig(widths=WIDTHS, fc_sizes=[16, 16], dropout=0.0)
    labels = torch.arange(len(images)) % 4
    torch.manual_seed(0)
    model = build(cfg, 4, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    paths = []
    for epoch in (1, 2, 3):
        for x, idx in _batches(images, 8) if epoch < 3 else []:  # epoch 3 = epoch 2: converged by 2
            optimizer.zero_grad()
            F.cross_entropy(model(x), labels[idx]).backward()
            optimizer.step()
        path = tmp_path / f"epoch-{epoch:03d}.pt"
        Checkpoint.of(model, asdict(cfg), epoch=epoch).save(path)
        paths.append(path)
    result = evolution(paths, _batches(images, 20), lambda idx: images[idx], tmp_path / "evolution.png", maps=2)
    assert result["epochs"] == [1, 2, 3] and Path(result["figure"]).is_file()
    assert set(result["converged_epoch"]) == {"conv1", "conv2", "conv3", "conv4", "conv5"}
    assert all(o[-1] == 9.0 for o in result["overlap"].values())
    assert all(o[1] == 9.0 for o in result["overlap"].values())
    assert all(e <= 2 for e in result["converged_epoch"].values())
    assert isinstance(result["lower_layers_first"], bool) and result["decided_by"] in ("converged_epoch", "settled")
    assert all(0.0 <= f <= 1.0 for f in result["settled"].values())
    with pytest.raises(ValueError, match="ascending"):
        evolution(paths[::-1], _batches(images, 20), lambda idx: images[idx], tmp_path / "bad.png")


def test_visualize_command_on_prepared_shards(tmp_path: Path) -> None:
    """``zfnet visualize`` end to end: synthetic ImageNet layout -> shards -> milestones -> all figures."""
    from zfnet.cli import main
    from zfnet.config import SyntheticConfig
    from zfnet.data.preprocess import preprocess
    from zfnet.data.shards import ShardDataset, load_mean
    from zfnet.data.synthetic import write_imagenet
    from zfnet.data.transforms import center_crop, normalize

    write_imagenet(tmp_path / "raw", SyntheticConfig(classes=2, train_per_class=8, val_per_class=6,
                                                      min_side=72, max_side=80), progress=False)
    preprocess(tmp_path / "raw", tmp_path / "prepared", size=72, shard_size=8, workers=1, progress=False)
    mean, train = load_mean(tmp_path / "prepared"), ShardDataset(tmp_path / "prepared" / "train")
    cfg = ModelConfig(widths=WIDTHS, fc_sizes=[16, 16])
    torch.manual_seed(0)
    model = build(cfg, 2, 64, 1 / 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pixels, labels = train.get_batch(list(range(len(train))))
    x = normalize(center_crop(pixels, 64), center_crop(mean, 64), 1 / 64)
    for epoch in (1, 2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()
        Checkpoint.of(model, asdict(cfg), epoch=epoch, classes=train.classes, class_names=train.class_names,
                      mean=mean).save(tmp_path / "milestones" / f"epoch-{epoch:03d}.pt")
    out = tmp_path / "figures"
    assert main(["visualize", "--checkpoint", str(tmp_path / "milestones" / "epoch-002.pt"),
                 "--prepared", str(tmp_path / "prepared"), "--out", str(out), "--milestones",
                 str(tmp_path / "milestones"), "--maps", "3", "--evolution-maps", "1", "--device", "cpu",
                 "--compare", f"early={tmp_path / 'milestones' / 'epoch-001.pt'}"]) == 0
    names = {p.name for p in out.glob("*.png")}
    assert names == {f"top9_conv{i}.png" for i in range(1, 6)} | {"filters_conv1.png", "filters_early.png",
                                                                    "evolution.png"}
    # the same on a folder of the user's own image files (one unreadable file among them)
    own = tmp_path / "own"
    own.mkdir()
    for i, src in enumerate(sorted((tmp_path / "raw" / "val").rglob("*.JPEG"))[:5]):
        (own / f"photo{i}.jpg").write_bytes(src.read_bytes())
    (own / "readme.txt").write_text("not an image")
    folder_out = tmp_path / "own_figures"
    assert main(["visualize", "--checkpoint", str(tmp_path / "milestones" / "epoch-002.pt"), "--images", str(own),
                 "--out", str(folder_out), "--maps", "2", "--device", "cpu"]) == 0
    assert {p.name for p in folder_out.glob("*.png")} == {f"top9_conv{i}.png" for i in range(1, 6)} | {
        "filters_conv1.png"}
    assert main(["visualize", "--images", str(tmp_path / "missing"), "--checkpoint",
                 str(tmp_path / "milestones" / "epoch-002.pt")]) == 2
