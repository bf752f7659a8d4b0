"""Invariance (Fig. 5): the transforms, the distances and the summary, on a small real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zfnet.data.synthetic import CLASS_NAMES, render_image
from zfnet.models import zfnet
from zfnet.viz.invariance import amounts, invariance, invariance_figure, spread_classes, transform


def test_transforms_move_pixels_as_named():
    img = torch.zeros(1, 3, 16, 16)
    img[0, :, 4, 8] = 1.0
    down = transform(img, "translation", 3.0)
    assert down[0, 0, 7, 8] == pytest.approx(1.0) and down.sum() == pytest.approx(3.0)
    assert torch.allclose(transform(img, "rotation", 0.0), img, atol=1e-5)
    assert torch.allclose(transform(img, "scale", 1.0), img, atol=1e-5)
    quarter = transform(img, "rotation", 90.0)  # a quarter turn about the centre (7.5, 7.5)
    assert quarter[0, 0].round().nonzero().tolist() in ([[8, 11]], [[7, 4]])  # (4, 8) turned about (7.5, 7.5)
    assert torch.allclose(transform(quarter, "rotation", 270.0), img, atol=1e-5)
    big = transform(torch.ones(1, 3, 16, 16), "scale", 0.5)  # shrunk: the border comes from outside = 0
    assert big[0, 0, 0, 0] == 0 and big[0, 0, 8, 8] == 1


def test_amounts_scale_the_papers_translation_to_the_input():
    a = amounts(60.0, [0.5, 1.8], 90.0, 5, 112)
    assert a["translation"].tolist() == [-30.0, -15.0, 0.0, 15.0, 30.0]
    assert a["rotation"].tolist() == [0.0, 90.0, 180.0, 270.0, 360.0]
    assert 1.0 in a["scale"].tolist() and a["scale"][0] == 0.5 and a["scale"][-1] == 1.8


def test_curves_are_zero_at_the_identity_and_layer7_is_the_last_hidden_layer(tmp_path):
    torch.manual_seed(0)
    model = zfnet(4, widths=[6, 8, 8, 8, 6], fc_sizes=(16, 16), input_size=56, remove=["fc7"]).eval()
    rng = np.random.default_rng(0)
    pics = np.stack([np.asarray(render_image(rng, CLASS_NAMES[i], (64, 64))[0]) for i in range(3)])
    x = (torch.from_numpy(pics).permute(0, 3, 1, 2).float() - 128) / 64
    labels = torch.tensor([0, 1, 2])
    curves = invariance(model, x, labels, 56, amounts(60.0, [0.5, 1.8], 90.0, 3, 56))
    assert curves.layer7 == "fc6"
    assert curves.l1["rotation"].shape == (5, 3)
    for kind, zero in (("translation", 1), ("scale", list(curves.amounts["scale"]).index(1.0)), ("rotation", 0)):
        assert torch.allclose(curves.l1[kind][zero], torch.zeros(3), atol=1e-4)
        assert curves.l7_norm[kind].max() > 0
    torch.testing.assert_close(curves.l1["rotation"][0], curves.l1["rotation"][-1], atol=1e-3, rtol=0)
    summary = curves.summary()
    assert set(summary) == {"translation", "scale", "rotation"}
    assert all(s["l1_over_l7"] > 0 and 0 <= s["mean_prob"] <= 1 for s in summary.values())
    assert invariance_figure(curves, x[0], ["a", "b", "c"], tmp_path / "f.png", 56).stat().st_size > 10_000


def test_spread_classes_picks_distinct_classes_across_the_range():
    labels = np.array([3, 0, 1, 2, 0, 3, 1])
    assert spread_classes(labels, 4, 4) == [1, 2, 3, 0]
    assert spread_classes(labels, 4, 2) == [1, 0]  # classes 0 and 3
    assert spread_classes(labels, 4, 5) == [1, 2, 3, 0]  # classes 0, 1, 2, 2, 3: class 2 has one image
