"""Synthetic Caltech-101/256 and VOC 2012 layouts, our readers and torchvision's on them, archives of them."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import VOCDetection, Caltech101, Caltech256

from zfnet.config import ConfigError, TransferSyntheticConfig
from zfnet.data import caltech, voc
from zfnet.data.imagenet import LayoutError
from zfnet.data.synthetic import CLASS_NAMES
from zfnet.data.synthetic_transfer import transfer_classes, write_transfer
from zfnet.experiments.transfer import load_crops
from zfnet.stages.transfer_data import locate

CFG = TransferSyntheticConfig(caltech101_classes=3, caltech256_classes=4, caltech101_images=[4, 6],
                              caltech256_images=[4, 5], background_images=2, voc_images=12, grayscale=0.5,
                              min_side=40, max_side=48, seed=5)
PRETRAINING = CLASS_NAMES[:10]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("transfer") / "transfer"
    return root, write_transfer(root, CFG, PRETRAINING, progress=False)


def test_transfer_classes_are_not_pretraining_classes():
    names = transfer_classes(40, PRETRAINING)
    assert len(set(names)) == 40 and not set(names) & set(PRETRAINING)
    assert names[:2] == [CLASS_NAMES[10], CLASS_NAMES[11]]  # unused plain shapes first
    with pytest.raises(ConfigError, match="at most"):
        transfer_classes(1000, PRETRAINING)


def test_caltech_readers_exclude_background_and_agree_with_torchvision(written):
    root, summary = written
    c101 = caltech.read_caltech101(root)
    assert c101.classes == sorted(summary["caltech101"]["classes"])
    assert "BACKGROUND_Google" not in c101.classes and (root / "caltech101/101_ObjectCategories/BACKGROUND_Google").is_dir()
    assert len(c101.samples) == summary["caltech101"]["images"]
    tv = Caltech101(str(root), target_type="category", download=False)  # <root>/caltech101/101_ObjectCategories
    assert len(tv) == len(c101.samples) and [tv[i][1] for i in range(len(tv))] == c101.labels()
    img, _ = tv[0]
    assert img.size == Image.open(c101.samples[0].path).size

    c256 = caltech.read_caltech256(root / "caltech256")
    assert len(c256.classes) == 4 and "clutter" not in c256.classes
    folders = sorted(p.name for p in (root / "caltech256/256_ObjectCategories").iterdir())
    assert folders[-1] == "005.clutter" and folders[0].startswith("001.")
    tv256 = Caltech256(str(root), download=False)
    kept = [tv256.y[i] for i in range(len(tv256)) if tv256.categories[tv256.y[i]] != "005.clutter"]
    assert kept == c256.labels()
    assert tv256[len(tv256) - 1][1] == 4  # clutter images load too (file names follow the folder numbers)


def test_some_caltech_images_are_grayscale_and_decode_to_rgb(written):
    root, _ = written
    c101 = caltech.read_caltech101(root)
    modes = {Image.open(s.path).mode for s in c101.samples}
    assert modes == {"L", "RGB"}
    crops = load_crops([s.path for s in c101.samples], 32)
    assert crops.images.shape == (len(c101.samples), 3, 32, 32) and not crops.skipped


def test_voc_labels_match_annotations_and_torchvision(written):
    root, summary = written
    train, val, both = (voc.read_split(root, s) for s in ("train", "val", "trainval"))
    assert len(train.ids) + len(val.ids) == len(both.ids) == CFG.voc_images
    assert train.classes == voc.VOC_CLASSES and train.targets.shape == (len(train.ids), 20)
    n_objects = 0
    for image_id, path, target in zip(both.ids, both.paths, both.targets):
        objects = voc.read_annotation(path.parent.parent / "Annotations" / f"{image_id}.xml")
        n_objects += len(objects)
        assert 1 <= len(objects) <= 3
        w, h = Image.open(path).size
        for o in objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        for c, name in enumerate(voc.VOC_CLASSES):
            flags = [o.difficult for o in objects if o.name == name]
            assert target[c] == (-1 if not flags else 0 if all(flags) else 1)
    assert n_objects == summary["voc2012"]["objects"]
    tv = VOCDetection(str(root), year="2012", image_set="train", download=False)
    ann = tv[0][1]["annotation"]
    assert len(tv) == len(train.ids) and ann["filename"] == f"{train.ids[0]}.jpg"
    assert {o["name"] for o in ann["object"]} == {voc.VOC_CLASSES[c] for c in np.nonzero(train.targets[0] >= 0)[0]}


def test_layout_errors_name_what_is_missing(tmp_path, written):
    root, _ = written
    with pytest.raises(LayoutError, match="101_ObjectCategories"):
        caltech.read_caltech101(tmp_path)
    with pytest.raises(LayoutError, match="train.txt"):
        (tmp_path / "VOC2012").mkdir()
        voc.read_split(tmp_path, "train")
    bad = tmp_path / "voc" / "VOC2012"
    main = bad / "ImageSets/Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("a\n")
    for name in voc.VOC_CLASSES:
        (main / f"{name}_train.txt").write_text("a  1\n" if name != "cat" else "b 1\n")
    with pytest.raises(LayoutError, match="cat_train.txt:1"):
        voc.read_split(tmp_path / "voc", "train")


def test_stray_files_are_listed_then_skipped_with_a_reason(tmp_path, written):
    root, _ = written
    folder = tmp_path / "256_ObjectCategories"
    for d in ("001.a", "002.b"):
        (folder / d).mkdir(parents=True)
        Image.new("RGB", (20, 30), "red").save(folder / d / f"{d[:3]}_0001.jpg")
    (folder / "001.a" / "RENAME2").write_text("not an image")
    data = caltech.read_caltech256(tmp_path)
    assert data.classes == ["a", "b"] and len(data.samples) == 3
    crops = load_crops([s.path for s in data.samples], 16)
    assert crops.kept == [0, 2] and crops.skipped[0][0].endswith("RENAME2")


def test_archives_of_the_layouts_are_located_and_unpacked(tmp_path, written):
    root, _ = written
    inner = tmp_path / "101_ObjectCategories.tar.gz"
    with tarfile.open(inner, "w:gz") as tar:
        tar.add(root / "caltech101" / "101_ObjectCategories", arcname="101_ObjectCategories")
    outer = tmp_path / "caltech-101.zip"  # as the real download: a zip holding the tar.gz
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "caltech-101/101_ObjectCategories.tar.gz")
    found = locate(outer, "caltech101", tmp_path / "out101")
    assert caltech.read_caltech101(found).labels() == caltech.read_caltech101(root).labels()

    voc_tar = tmp_path / "VOCtrainval.tar"
    with tarfile.open(voc_tar, "w") as tar:
        tar.add(root / "VOCdevkit", arcname="VOCdevkit")
    found = locate(voc_tar, "voc2012", tmp_path / "outvoc")
    assert voc.read_split(found, "val").ids == voc.read_split(root, "val").ids
    assert locate(root, "caltech256", tmp_path / "unused") == root  # a folder is read in place


def test_writing_is_deterministic(tmp_path):
    cfg = TransferSyntheticConfig(caltech101_classes=2, caltech256_classes=2, caltech101_images=[2, 2],
                                  caltech256_images=[2, 2], background_images=1, voc_images=2, min_side=32, max_side=36)
    a, b = tmp_path / "a", tmp_path / "b"
    write_transfer(a, cfg, PRETRAINING, progress=False)
    write_transfer(b, cfg, PRETRAINING, workers=2, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
