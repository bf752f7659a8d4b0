"""The training recipe's parts: the schedule reaches its floor, input-scale consistency of contrast
normalisation and renormalisation, mean before crop, the 10 sub-crops, the filter measures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from zfnet.config import AnnealConfig, TrainConfig, compose, from_dict
from zfnet.data.transforms import (Windows, crop_batch, crop_normalize, normalize, random_crops, random_windows,
                                   ten_crops, ten_windows)
from zfnet.models import zfnet
from zfnet.models.filters import at_radius, filter_rms, renormalize_filters, spatial_autocorrelation
from zfnet.models.zfnet import ContrastNorm, contrast_norm_alpha
from zfnet.train.loop import init_weights
from zfnet.train.schedule import Schedule

REPO = Path(__file__).resolve().parents[1]


def optimizer() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_cosine_schedule_warms_up_then_reaches_its_floor_at_the_last_epoch():
    t = TrainConfig(lr=0.02, epochs=64, warmup_epochs=2, schedule="cosine", anneal=AnnealConfig(min_lr=1e-4))
    s = Schedule(optimizer(), t)
    rates = [s.start_epoch(e) for e in range(1, 65)]
    assert rates[0] == pytest.approx(0.02 / 3) and rates[1] == pytest.approx(0.04 / 3)
    assert rates[2] == pytest.approx(0.02) and rates[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:]))  # never rises after the warm-up
    assert rates[-2] <= 0.02 / 10  # at most a tenth of the peak before the last epoch


def test_plateau_schedule_anneals_after_patience_epochs_without_improvement_and_resumes():
    t = TrainConfig(lr=0.01, epochs=20, schedule="plateau", anneal=AnnealConfig(factor=0.1, patience=2, min_lr=1e-4))
    s = Schedule(optimizer(), t)
    for epoch, err in enumerate([50, 40, 41, 42, 43, 39], 1):
        s.start_epoch(epoch)
        s.end_epoch(epoch, err)
    assert s.lr(7) == pytest.approx(0.001)  # 3 epochs without a new best (> patience 2): x0.1
    resumed = Schedule(optimizer(), t)
    resumed.load_state_dict(s.state_dict())
    assert resumed.lr(7) == s.lr(7) and resumed.state_dict() == s.state_dict()


def test_the_default_profile_anneals_and_the_paper_keeps_its_plateau_rule():
    default = from_dict(compose([], REPO / "conf")).train
    paper = from_dict(compose(["experiment=paper"], REPO / "conf")).train
    assert default.schedule == "cosine" and default.anneal.min_lr <= default.lr / 10
    assert paper.schedule == "plateau" and paper.crops == "ten" and paper.init == "paper"


def test_contrast_norm_alpha_scaled_by_the_input_scale_normalises_as_on_raw_pixels():
    """b(s a; alpha / s^2) = s b(a; alpha): the derivation in contrast_norm_alpha's docstring."""
    s = 1 / 64
    a = torch.rand(2, 16, 5, 5) * 300  # activations on raw pixels
    raw = ContrastNorm(5, alpha=contrast_norm_alpha(1.0), beta=0.75, k=2.0)
    scaled = ContrastNorm(5, alpha=contrast_norm_alpha(s), beta=0.75, k=2.0)
    assert torch.allclose(scaled(a * s), raw(a) * s, rtol=1e-5)
    factor = raw(a) / a  # it normalises, it is not a constant
    assert factor.std() / factor.mean() > 0.1


def test_a_net_fed_scaled_inputs_with_biases_scaled_computes_scaled_activations():
    """The same weights, biases x s, inputs x s: every activation below fc8 is s times the raw net's,
    so the renormalisation radius (a bound on weights) needs no rescaling."""
    s = 1 / 64
    torch.manual_seed(0)
    raw = zfnet(4, widths=(8, 16, 16, 16, 8), fc_sizes=(16, 16), input_size=64, input_scale=1.0).eval()
    scaled = zfnet(4, widths=(8, 16, 16, 16, 8), fc_sizes=(16, 16), input_size=64, input_scale=s).eval()
    for name, m in raw.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and not name.endswith("fc8"):
            m.bias.data.uniform_(0, 1)
    state = {k: v * s if k.endswith("bias") and "fc8" not in k else v for k, v in raw.state_dict().items()}
    scaled.load_state_dict(state)
    x = torch.rand(2, 3, 64, 64) * 255
    assert torch.allclose(scaled.features(x * s), raw.features(x) * s, rtol=1e-4, atol=1e-6)


def test_mixed_init_starts_conv1_as_small_white_noise_inside_the_radius():
    torch.manual_seed(0)
    model = zfnet(10, widths=(24, 64, 96, 96, 64), fc_sizes=(512, 512), input_size=112)
    init_weights(model, "mixed", 0.01)
    conv1 = model.layer("conv1").conv.weight
    assert filter_rms(conv1).mean() == pytest.approx(0.01, rel=0.1)
    assert abs(float(spatial_autocorrelation(conv1).median())) < 0.1
    assert at_radius(model, 0.1)["all"] == 0.0 and renormalize_filters(model, 0.1) == 0
    conv3 = model.layer("conv3").conv.weight
    assert filter_rms(conv3).mean() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.1)  # He
    init_weights(model, "kaiming", 0.01)
    assert at_radius(model, 0.1)["features.conv1.conv"] > 0.5  # He would put conv1 at the radius from step 0


def test_spatial_autocorrelation_tells_smooth_filters_from_noise():
    torch.manual_seed(0)
    noise = torch.randn(200, 3, 7, 7)
    ys, xs = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
    gabor = (torch.cos(xs * 0.6) * torch.exp(-((xs - 3) ** 2 + (ys - 3) ** 2) / 8)).expand(1, 3, 7, 7)
    assert abs(float(spatial_autocorrelation(noise).mean())) < 0.05
    assert float(spatial_autocorrelation(gabor)[0]) > 0.5
    checker = ((xs + ys) % 2 * 2 - 1).expand(1, 3, 7, 7)
    assert float(spatial_autocorrelation(checker)[0]) < -0.9


def test_crops_are_one_gather_equal_to_slicing_and_the_ten_crops_are_the_papers():
    images = torch.randint(0, 255, (6, 3, 20, 20), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    ys, xs = torch.randint(0, 5, (6,), generator=gen), torch.randint(0, 5, (6,), generator=gen)
    flips = torch.rand(6, generator=gen) < 0.5
    expected = torch.stack([images[i, :, y : y + 16, x : x + 16] for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))])
    expected[flips] = expected[flips].flip(-1)
    assert torch.equal(crop_batch(images, Windows(ys, xs, flips), 16), expected)
    assert torch.equal(random_crops(images, 16, torch.Generator().manual_seed(0)), expected)
    ten = ten_crops(images, 16)
    choice = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(1))
    drawn = crop_batch(images, ten_windows(6, 20, 16, torch.Generator().manual_seed(1)), 16)
    assert all(torch.equal(drawn[i], ten[choice[i], i]) for i in range(6))


@pytest.mark.parametrize("draw", [random_windows, ten_windows])
def test_cropping_uint8_then_normalising_equals_normalising_the_whole_image_first(draw):
    """The data path cuts uint8 images and the mean at the same windows (on the model's device): the
    same numbers, bit for bit, as the mean subtracted from the whole image and the result cropped."""
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (32, 3, 72, 72), dtype=torch.uint8, generator=gen)
    mean = torch.rand(3, 72, 72, generator=gen) * 255
    windows = draw(32, 72, 64, gen)
    x = crop_normalize(images, mean, windows, 64, 1 / 64)
    assert x.dtype == torch.float32 and x.shape == (32, 3, 64, 64)
    assert torch.equal(x, crop_batch(normalize(images, mean, 1 / 64), windows, 64))
    half = slice(16, 32)  # a rank's slice of the global batch
    assert torch.equal(crop_normalize(images[half], mean, windows.part(half), 64, 1 / 64), x[half])


def test_the_mean_is_subtracted_before_the_crop():
    """A corner crop gets the mean of its own pixels subtracted, not the centre crop's."""
    images = torch.zeros(1, 3, 8, 8)
    mean = torch.arange(64.0).view(1, 8, 8).expand(3, 8, 8)
    corner = crop_batch(normalize(images, mean, 1.0), Windows(torch.tensor([0]), torch.tensor([0]), torch.tensor([False])), 4)
    assert torch.equal(corner[0], -mean[:, :4, :4])
