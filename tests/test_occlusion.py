"""Occlusion maps (Fig. 7) against Captum's ``Occlusion`` and a direct per-position loop; the pointing game."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion

from zfnet.data.synthetic import CLASS_NAMES, render_image
from zfnet.models import zfnet
from zfnet.viz.occlusion import grid, occlusion, pointing_chance, pointing_game

SIZE = 64


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return zfnet(5, widths=[8, 16, 16, 16, 12], fc_sizes=(32, 32), input_size=SIZE).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """6 synthetic 64x64 images, mean-subtracted and scaled as in training."""
    rng = np.random.default_rng(0)
    pics = [np.asarray(render_image(rng, CLASS_NAMES[i % 5], (SIZE, SIZE))[0]) for i in range(6)]
    x = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).float()
    return (x - x.mean(0)) / 64


LABELS = torch.tensor([0, 1, 2, 3, 4, 0])


def probability(model):
    return lambda x: model(x).softmax(1)


def test_grid_positions_fit_inside_the_image():
    assert grid(64, 16, 8).tolist() == [0, 8, 16, 24, 32, 40, 48]
    assert grid(64, 16, 12).tolist() == [0, 12, 24, 36, 48]  # 60 + 16 > 64: not a position
    with pytest.raises(ValueError, match="patch"):
        grid(64, 65, 8)


@pytest.mark.parametrize("fill", [None, 0.7])
def test_probability_map_equals_captum_with_non_overlapping_squares(model, images, fill):
    """stride == patch: every pixel is covered by one window, so Captum's attribution there is exactly
    p(original) - p(occluded at that window)."""
    maps = occlusion(model, images, LABELS, patch=16, stride=16, fill=fill, max_batch=7)
    attr = Occlusion(probability(model)).attribute(
        images, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16),
        baselines=0.0 if fill is None else fill, target=LABELS, perturbations_per_eval=16,
    )
    expected = maps.base_prob[:, None, None] - attr[:, 0, ::16, ::16]
    assert maps.prob.shape == (6, 4, 4)
    torch.testing.assert_close(maps.prob, expected, rtol=0, atol=1e-6)
    assert (attr[:, 0].std() > 0) and not torch.allclose(maps.prob, maps.base_prob[:, None, None])


def test_overlapping_squares_reconstruct_captums_averaged_attribution(model, images):
    """stride < patch: Captum averages the drops of all windows covering a pixel; rebuild that from our map."""
    patch, stride = 16, 8
    maps = occlusion(model, images, LABELS, patch=patch, stride=stride, max_batch=50)
    attr = Occlusion(probability(model)).attribute(
        images, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride), baselines=0.0,
        target=LABELS, perturbations_per_eval=16,
    )
    drop = maps.base_prob[:, None, None] - maps.prob  # (N, Gh, Gw)
    total = torch.zeros(6, SIZE, SIZE, dtype=torch.float64)
    count = torch.zeros(SIZE, SIZE, dtype=torch.float64)
    for i, y in enumerate(maps.ys.tolist()):
        for j, x in enumerate(maps.xs.tolist()):
            total[:, y : y + patch, x : x + patch] += drop[:, i, j, None, None]
            count[y : y + patch, x : x + patch] += 1
    torch.testing.assert_close(attr[:, 0], (total / count).float(), rtol=0, atol=1e-6)


def test_feature_map_equals_captum_on_the_strongest_maps_total(model, images):
    """Map (b): Captum on a forward that returns each conv5 map's total activity, target = our channel."""
    conv5 = model.layer("conv5")

    def totals(x):
        return conv5.relu(conv5.conv(model.features[:4](x))).sum((2, 3))

    maps = occlusion(model, images, LABELS, patch=16, stride=16, fill=None)
    base = totals(images)
    strongest = conv5.relu(conv5.conv(model.features[:4](images))).flatten(2).amax(2).argmax(1)
    assert torch.equal(maps.channel, strongest)
    attr = Occlusion(totals).attribute(images, sliding_window_shapes=(3, 16, 16), strides=(3, 16, 16),
                                       baselines=0.0, target=maps.channel)
    torch.testing.assert_close(maps.base_feature, base.gather(1, maps.channel[:, None])[:, 0])
    torch.testing.assert_close(maps.feature, maps.base_feature[:, None, None] - attr[:, 0, ::16, ::16])


def test_all_three_maps_equal_a_direct_loop_over_positions(model, images):
    maps = occlusion(model, images[:2], LABELS[:2], patch=20, stride=21, fill=-0.5, max_batch=4)
    assert maps.ys.tolist() == [0, 21, 42]
    conv5 = model.layer("conv5")
    for i, y in enumerate(maps.ys.tolist()):
        for j, x in enumerate(maps.xs.tolist()):
            occluded = images[:2].clone()
            occluded[:, :, y : y + 20, x : x + 20] = -0.5
            p = model(occluded).softmax(1)
            act = conv5.relu(conv5.conv(model.features[:4](occluded)))
            assert torch.equal(maps.argmax[:, i, j], p.argmax(1))
            torch.testing.assert_close(maps.prob[:, i, j], p[[0, 1], LABELS[:2]])
            torch.testing.assert_close(maps.feature[:, i, j], act[[0, 1], maps.channel].sum((1, 2)))


def test_pointing_game_uses_the_square_centre_at_the_minimum(model, images):
    maps = occlusion(model, images[:2], LABELS[:2], patch=16, stride=8)
    maps.prob = torch.ones_like(maps.prob)
    maps.prob[0, 2, 5] = 0.0  # square at y 16..32, x 40..56: centre (x 48, y 24)
    maps.prob[1, 0, 0] = 0.0  # centre (8, 8)
    boxes = torch.tensor([[40.0, 20.0, 48.0, 30.0], [9.0, 0.0, 30.0, 30.0]])
    assert pointing_game(maps, boxes).tolist() == [True, False]
    # chance: centres 8, 16, ..., 56 on each axis; box 0 holds x in {40, 48} and y in {24}: 2 of 49
    torch.testing.assert_close(pointing_chance(maps, boxes)[0], torch.tensor(2 / 49))


def test_any_model_by_layer_name_even_before_an_in_place_relu(images):
    """torchvision's AlexNet, map (b) from ``features.10`` (conv5, whose output its in-place ReLU overwrites)."""
    import torchvision

    torch.manual_seed(0)
    alexnet = torchvision.models.alexnet(weights=None).eval()
    maps = occlusion(alexnet, images[:2], LABELS[:2], patch=24, stride=20, layer="features.10", max_batch=3)
    assert maps.ys.tolist() == [0, 20, 40]
    with torch.no_grad():
        conv5 = alexnet.features[:11](images[:2])  # up to and with conv5, before its ReLU
        assert torch.equal(maps.channel, conv5.flatten(2).amax(2).argmax(1))
        occluded = images[:2].clone()
        occluded[:, :, 20:44, 40:64] = 0.0
        expected = alexnet.features[:11](occluded)[[0, 1], maps.channel].sum((1, 2))
        p = alexnet(occluded).softmax(1)
    torch.testing.assert_close(maps.feature[:, 1, 2], expected)
    torch.testing.assert_close(maps.prob[:, 1, 2], p[[0, 1], LABELS[:2]])
