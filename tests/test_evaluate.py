"""The paper's 10-crop evaluation compared with the centre crop on the same images (the ``trains``
finding's paired statistic): hand-made probabilities, then a real tiny model where the paired sums
must agree with two separate evaluations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import conftest
from zfnet.config import from_dict
from zfnet.data.shards import ShardDataset, load_mean
from zfnet.train.loop import evaluate, fit, paired_with_centre


def test_paired_sums_on_hand_made_probabilities():
    labels = torch.tensor([0, 1, 2])
    crops = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])  # right, right, wrong
    centre = torch.tensor([[0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])  # wrong, right, right
    gain, squares, fixed, broken = paired_with_centre(crops, centre, labels)
    per_image = [math.log(0.6 / 0.3), math.log(0.7 / 0.8), math.log(0.4 / 0.6)]
    assert gain == pytest.approx(sum(per_image)) and squares == pytest.approx(sum(g * g for g in per_image))
    assert (fixed, broken) == (1, 1)


def test_ten_crops_paired_with_the_centre_crop_agree_with_two_evaluations(tmp_path_factory, tiny_prepared):
    root = conftest.tiny_project(tmp_path_factory.mktemp("evaluate"), tiny_prepared)
    cfg = from_dict(conftest.tiny_raw("train.epochs=2", "train.milestones=[2]"))
    prepared: Path = root / "data/prepared"
    train, val = ShardDataset(prepared / "train"), ShardDataset(prepared / "val")
    model = fit(cfg, train, val, load_mean(prepared), root / "state", root / "out",
                meta={"classes": train.classes, "class_names": train.class_names}, progress=False)["model"]
    device = torch.device("cpu")
    centre = evaluate(model, val, load_mean(prepared), cfg.train, device)
    ten = evaluate(model, val, load_mean(prepared), cfg.train, device, crops=10)
    n = len(val)
    assert "val_crops_nll_gain" not in centre
    # the mean paired gain is the drop in the mean NLL; fixed minus broken the drop in errors
    assert ten["val_crops_nll_gain"] == pytest.approx(centre["val_loss"] - ten["val_loss"], abs=1e-5)
    assert ten["val_crops_fixed"] - ten["val_crops_broken"] == round(n * (centre["val_top1_error"] - ten["val_top1_error"]) / 100)
    assert ten["val_crops_nll_gain_se"] > 0
