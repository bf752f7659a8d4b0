"""Your own model: ``zfnet visualize``, ``occlude`` and ``invariance`` on torchvision's AlexNet, VGG-11,
ResNet-18 and a ``module:factory`` class (random weights saved with ``torch.save``, a folder of
synthetic images); the InputSpec against torchvision's ``Normalize``; the Checkpoint's round trip."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import zfnet
from PIL import Image

from zfnet.config import ModelConfig
from zfnet.data.synthetic import CLASS_NAMES, render_image
from zfnet.models import build
from zfnet.models.inputs import InputSpec
from zfnet.train.checkpoint import FORMAT, Checkpoint, atomic_save, load_model

FACTORY = '''
from torch import nn


def small():
    return nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1),
                         nn.BatchNorm2d(12), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(12, 5))
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """12 synthetic drawings as JPEGs of varied sizes, and the factory module ``mynets``."""
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(12):
        render_image(rng, CLASS_NAMES[i % 6], (int(rng.integers(100, 160)), int(rng.integers(100, 160))))[0].save(
            root / "images" / f"{i}.jpg")
    (root / "mynets.py").write_text(FACTORY)
    return root


def _weights(folder: Path, name: str) -> Path:
    path = folder / f"{name}.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
    return path


@pytest.mark.parametrize("name, layers", [
    ("alexnet", ["features.4", "features.11"]),
    ("resnet18", ["layer2", "layer3"]),  # residual adds: the deconvnet's autograd path, measured fields
    pytest.param("vgg11", ["features.9", "features.19"], marks=pytest.mark.slow),  # a 507 MB state dict
])
def test_visualize_your_torchvision_model_on_a_folder(folder: Path, tmp_path: Path, name: str, layers: list[str]):
    out, index = tmp_path / "figures", name == "alexnet"  # --index: every map's top-9 too (explore's)
    code, stdout, err = zfnet(["visualize", "--model", f"torchvision:{name}", "--weights", str(_weights(folder, name)),
                                   "--images", str(folder / "images"), "--layers", *layers, "--input-size", "112",
                                   "--maps", "2", "--out", str(out), *["--index"] * index], tmp_path)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["images"] == 12 and result["purity"] is None and set(result["top9"]) == set(layers)
    for layer in layers:
        with Image.open(out / f"top9_{layer}.png") as png:  # 2 maps: 3x3 projections | 3x3 patches each
            assert png.size[0] > 300 and png.size[1] > 100
    assert (out / "filters_conv1.png").is_file()
    assert (out / "index/index.json").is_file() == index
    if index:
        from zfnet.viz.index import Top9Index

        channels = {layer: Top9Index(out / "index").data["layers"][layer]["channels"] for layer in layers}
        assert channels == {"features.4": 192, "features.11": 256}  # every map, not the 2 shown


def test_your_own_class_by_module_and_factory(folder: Path, tmp_path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(folder))
    from mynets import small

    torch.manual_seed(0)
    torch.save(small().state_dict(), tmp_path / "small.pth")
    own = ["--model", "mynets:small", "--weights", str(tmp_path / "small.pth"), "--input-size", "64"]
    code, stdout, err = zfnet(["visualize", *own, "--images", str(folder / "images"), "--layers", "1", "5",
                                   "--maps", "3", "--out", str(tmp_path / "v")], tmp_path)
    assert code == 0, err
    assert {p.name for p in (tmp_path / "v").glob("top9_*.png")} == {"top9_1.png", "top9_5.png"}
    image = str(folder / "images" / "0.jpg")
    code, stdout, err = zfnet(["occlude", image, *own, "--layer", "5", "--patch", "8", "--out", str(tmp_path / "o")],
                                  tmp_path)
    assert code == 0, err
    assert json.loads(stdout)["label"] in [str(c) for c in range(5)] and (tmp_path / "o" / "occlusion.png").is_file()
    code, stdout, err = zfnet(["invariance", image, *own, "--layers", "1", "7", "--steps", "3", "--rotation-step",
                                   "120", "--label", "2", "--out", str(tmp_path / "i")], tmp_path)
    assert code == 0, err
    summary = json.loads(stdout)["summary"]
    assert set(summary) == {"translation", "scale", "rotation"} and summary["scale"]["l1_over_l7"] > 0


def test_occlude_and_invariance_on_torchvisions_alexnet(folder: Path, tmp_path: Path):
    own = ["--model", "torchvision:alexnet", "--weights", str(_weights(folder, "alexnet")), "--input-size", "112"]
    image = str(folder / "images" / "3.jpg")
    code, stdout, err = zfnet(["occlude", image, *own, "--layer", "features.11", "--stride", "16",
                                   "--out", str(tmp_path / "o")], tmp_path)
    assert code == 0, err
    assert 0 <= json.loads(stdout)["feature_map"] < 256 and "note:" not in err
    code, stdout, err = zfnet(["invariance", image, *own, "--layers", "features.1", "classifier.5", "--steps", "3",
                                   "--rotation-step", "180", "--out", str(tmp_path / "i")], tmp_path)
    assert code == 0, err
    assert (tmp_path / "i" / "invariance.csv").read_text().startswith("transform,amount,image,class,l1")


def test_input_spec_is_torchvisions_normalize_and_ours_the_mean_image():
    from torchvision.transforms import functional as TF

    pixels = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    spec = InputSpec.normalized()
    assert (spec.size, spec.resize, spec.offset) == (224, 256, 16)
    expected = torch.stack([TF.normalize(TF.center_crop(p, [224]).float() / 255, [0.485, 0.456, 0.406],
                                         [0.229, 0.224, 0.225]) for p in pixels])
    torch.testing.assert_close(spec.model_input(pixels), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(spec.pixels(spec.model_input(pixels)), TF.center_crop(pixels, [224]).float() / 255)
    bgr = InputSpec.normalized(mean=(0.406, 0.456, 0.485), std=(0.225, 0.224, 0.229), bgr=True)
    torch.testing.assert_close(bgr.model_input(pixels), spec.model_input(pixels).flip(1))
    mean = torch.rand(3, 72, 72) * 255
    ours = InputSpec.mean_image(mean, 1 / 64, 64)
    assert (ours.resize, ours.offset) == (72, 4)
    crop = pixels[:, :, :72, :72]
    torch.testing.assert_close(ours.model_input(crop), (crop[:, :, 4:68, 4:68].float() - mean[:, 4:68, 4:68]) / 64)
    torch.testing.assert_close(ours.normalize(crop)[:, :, 4:68, 4:68], ours.model_input(crop))


def test_checkpoint_round_trip_keeps_the_format_and_every_key(tmp_path: Path):
    cfg = ModelConfig(widths=[6, 8, 8, 8, 6], fc_sizes=[16, 16])
    torch.manual_seed(0)
    model = build(cfg, 4, 64, 1 / 64)
    mean = torch.full((3, 72, 72), 120.0)
    Checkpoint.of(model, asdict(cfg), epoch=3, classes=["a", "b", "c", "d"], class_names=list("abcd"), mean=mean,
                  extra={"variant": "zfnet"}).save(tmp_path / "m.pt")
    ckpt = Checkpoint.load(tmp_path / "m.pt")
    assert (ckpt.epoch, ckpt.input_size, ckpt.input_scale, ckpt.extra) == (3, 64, 1 / 64, {"variant": "zfnet"})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ckpt.build().state_dict().items())
    assert ckpt.inputs.resize == 72 and float(ckpt.inputs.scale[0]) == 1 / 64
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["variant"] == "zfnet" and set(raw) == {
        "format", "variant", "model", "model_config", "num_classes", "input_size", "epoch", "input_scale", "classes",
        "class_names", "mean"}
    # a checkpoint written by hand before there was a Checkpoint type (no input_scale) still loads
    atomic_save({"format": FORMAT, "epoch": 1, "model": model.state_dict(), "model_config": asdict(cfg),
                 "num_classes": 4, "input_size": 64, "classes": [], "class_names": [], "mean": None}, tmp_path / "old.pt")
    loaded, as_dict = load_model(tmp_path / "old.pt")
    assert as_dict["input_scale"] == 1.0 and Checkpoint.load(tmp_path / "old.pt").inputs.resize == 64
