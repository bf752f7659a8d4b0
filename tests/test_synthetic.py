"""The synthetic generator: ImageNet layout, valid JPEGs, true boxes, determinism, atomic writes."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder, ImageNet

from zfnet.config import ConfigError, SyntheticConfig
from zfnet.data import synthetic
from zfnet.data.synthetic import CLASS_NAMES, render_image, wnid_for, write_imagenet

CFG = SyntheticConfig(classes=3, train_per_class=4, val_per_class=2, min_side=40, max_side=56, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("syn") / "imagenet"
    return root, write_imagenet(root, CFG, progress=False)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def solution(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["ImageId", "PredictionString"]
    return {image_id: prediction.split() for image_id, prediction in rows[1:]}


def test_classes_are_distinct_shapes_with_wellformed_wnids():
    assert len(CLASS_NAMES) >= 12 and len(set(CLASS_NAMES)) == len(CLASS_NAMES)
    assert set(CLASS_NAMES) == set(synthetic.SHAPES)
    assert wnid_for(0) == "n99000001"
    assert all(re.fullmatch(r"n\d{8}", wnid_for(i)) for i in range(len(CLASS_NAMES)))


def test_layout_file_names_and_summary(dataset):
    root, summary = dataset
    wnids = [wnid_for(i) for i in range(3)]
    assert summary["classes"] == 3 and summary["train"] == 12 and summary["val"] == 6
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["train", "val", "LOC_synset_mapping.txt", "LOC_train_solution.csv", "LOC_val_solution.csv", "meta.bin"])
    assert (root / "LOC_synset_mapping.txt").read_text().splitlines() == [
        f"{w} {name}" for w, name in zip(wnids, CLASS_NAMES)]
    for w in wnids:
        assert sorted(p.name for p in (root / "train" / w).iterdir()) == sorted(f"{w}_{k}.JPEG" for k in range(1, 5))
    val = sorted(p.relative_to(root / "val") for p in (root / "val").rglob("*.JPEG"))
    assert sorted(p.name for p in val) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]
    val_wnids = [str(p.parent) for p in sorted(val, key=lambda p: p.name)]
    assert sorted(val_wnids) == sorted(wnids * 2) and val_wnids != sorted(val_wnids)  # classes interleaved
    assert not list(root.parent.glob(".*partial*"))


def test_images_are_jpegs_within_the_size_range_with_boxes_inside(dataset):
    root, _ = dataset
    for split in ("train", "val"):
        boxes = solution(root / f"LOC_{split}_solution.csv")
        paths = sorted((root / split).rglob("*.JPEG"))
        assert sorted(p.stem for p in paths) == sorted(boxes)
        for path in paths:
            with Image.open(path) as im:
                assert im.format == "JPEG" and im.mode == "RGB"
                w, h = im.size
            wnid, *box = boxes[path.stem]
            assert wnid == path.parent.name
            x0, y0, x1, y1 = map(int, box)
            assert CFG.min_side <= w <= CFG.max_side and CFG.min_side <= h <= CFG.max_side
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            # the object is large: 40-70% of the shorter side, plus an outline of up to 2 px a side and
            # the anti-aliased edge pixel
            side = max(x1 - x0, y1 - y0) / min(w, h)
            assert 0.35 <= side <= 0.7 + 6 / min(w, h), (path.name, side)


@pytest.mark.parametrize("shape", ["disc", "square", "hexagon"])
def test_box_holds_the_object(shape):
    """For filled convex shapes the box centre is the object's colour, which fills the box and little else."""
    for i in range(4):
        image, (x0, y0, x1, y1) = render_image(np.random.default_rng([11, i]), shape, (72, 64))
        pixels = np.asarray(image, dtype=np.float32)
        cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
        colour = pixels[cy - 1 : cy + 2, cx - 1 : cx + 2].mean(axis=(0, 1))
        close = np.linalg.norm(pixels - colour, axis=2) < 45
        inside = np.zeros_like(close)
        inside[y0:y1, x0:x1] = True
        assert close[inside].mean() > 0.45, (shape, i)
        assert close[~inside].mean() < 0.1, (shape, i)


def test_same_config_gives_identical_bytes_also_in_parallel(dataset, tmp_path):
    root, _ = dataset
    write_imagenet(tmp_path / "again", CFG, progress=False, workers=2)
    assert files(tmp_path / "again") == files(root)


def test_other_seed_gives_other_images(dataset, tmp_path):
    root, _ = dataset
    other = SyntheticConfig(**{**CFG.__dict__, "seed": 4})
    write_imagenet(tmp_path / "other", other, progress=False)
    a, b = files(root / "train"), files(tmp_path / "other" / "train")
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)


def test_torchvision_imagenet_and_imagefolder_accept_the_layout(dataset):
    root, _ = dataset
    train, val = ImageNet(str(root), split="train"), ImageNet(str(root), split="val")
    assert len(train) == 12 and len(val) == 6
    assert train.wnids == [wnid_for(i) for i in range(3)] and train.classes == [(n,) for n in CLASS_NAMES[:3]]
    wnid_to_classes, val_wnids = torch.load(root / "meta.bin", weights_only=True)
    by_name = sorted((Path(path).name, val.wnids[target]) for path, target in val.samples)
    assert [wnid for _, wnid in by_name] == val_wnids
    image, target = train[5]
    assert image.mode == "RGB" and target == 1
    folder = ImageFolder(str(root / "train"))
    assert folder.classes == train.wnids and len(folder) == 12


def test_flat_val_layout(tmp_path):
    cfg = SyntheticConfig(**{**CFG.__dict__, "val_layout": "flat"})
    write_imagenet(tmp_path / "flat", cfg, progress=False)
    val = tmp_path / "flat" / "val"
    assert sorted(p.name for p in val.iterdir()) == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]


def test_interrupted_write_leaves_no_dataset(tmp_path, monkeypatch):
    root = tmp_path / "imagenet"
    write_imagenet(root, CFG, progress=False)
    drawn = []

    def fail_on_the_third(rng, shape, size):
        drawn.append(shape)
        if len(drawn) == 3:
            raise RuntimeError("interrupted")
        return render_image(rng, shape, size)

    monkeypatch.setattr(synthetic, "render_image", fail_on_the_third)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_imagenet(root, CFG, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_invalid_config_fails_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="data.synthetic.classes"):
        write_imagenet(tmp_path / "x", SyntheticConfig(classes=len(CLASS_NAMES) + 1), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_default_classes_are_controls_upright_shapes_face_breeds_and_textures():
    from zfnet.config import SyntheticConfig

    default = CLASS_NAMES[: SyntheticConfig().classes]
    assert {"disc", "ring"} <= set(default) and set(synthetic.FACES) <= set(default)
    assert set(synthetic.UPRIGHT) <= set(default) and set(synthetic.TEXTURES) <= set(default)
    symmetric = [n for n in default if synthetic.ROTATION_SYMMETRY.get(n, -1) == 0]
    assert len(symmetric) >= 2 and not set(symmetric) & set(synthetic.UPRIGHT)


def test_face_breeds_differ_only_in_the_parts_and_the_parts_are_opaque_and_the_same_colour():
    size = (140, 132)
    drawn = {b: synthetic.render_face(np.random.default_rng(7), size, breed=b) for b in synthetic.FACES}
    images = {b: np.asarray(im, dtype=float) for b, (im, _, _) in drawn.items()}
    boxes = {b: box for b, (_, box, _) in drawn.items()}
    parts = drawn[synthetic.FACES[0]][2]
    assert len(set(boxes.values())) == 1  # same seed: the same head, placed the same
    outside = np.ones(size[::-1], bool)
    for x0, y0, x1, y1 in parts.values():
        outside[int(y0) - 2 : int(np.ceil(y1)) + 2, int(x0) - 2 : int(np.ceil(x1)) + 2] = False
    a, b = images[synthetic.FACES[0]], images[synthetic.FACES[1]]
    assert np.abs(a - b)[outside].max() < 1 and np.abs(a - b)[~outside].max() > 60
    for seed in range(5):  # an eye's light colour whatever the head's colour
        image, _, parts = synthetic.render_face(np.random.default_rng([seed, 1]), size)
        x0, y0, x1, y1 = parts["left_eye"]
        ring = np.asarray(image, dtype=float)[int(y0 + 0.15 * (y1 - y0)), int(x0 + 0.15 * (x1 - x0)) : int(x0 + 0.3 * (x1 - x0))]
        assert np.abs(ring.mean(0) - synthetic.EYE).max() < 40, (seed, ring.mean(0))


def test_texture_classes_carry_fine_periodic_energy_that_plain_discs_lack():
    def high_freq(name: str) -> float:
        rng = np.random.default_rng(3)
        image, (x0, y0, x1, y1) = render_image(rng, name, (140, 140))
        gray = np.asarray(image.convert("L"), dtype=float)[y0 + 20 : y1 - 20, x0 + 20 : x1 - 20]
        return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())

    assert high_freq("stripes") > 3 * high_freq("disc") and high_freq("checks") > 3 * high_freq("disc")
