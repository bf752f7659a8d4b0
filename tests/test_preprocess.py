"""Preprocessing into shards and reading them back, on a tiny ImageNet-layout folder of real files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_images import BOMB_LIMIT, write_zoo

from zfnet.data.imagenet import Sample, iter_split, read_classes
from zfnet.data.images import load_rgb, map_box, resize_center_crop
from zfnet.data.preprocess import preprocess, preprocess_split
from zfnet.data.shards import ShardDataset, ShardError, load_mean

S = 16
SHARD = 3
WNIDS = ("n00000001", "n00000002")
BOXES = {"rgb": (0.0, 0.0, 48.0, 32.0), "png_named": (3.0, 4.0, 27.0, 40.0)}  # source pixels


def _write_dataset(root: Path) -> None:
    """train: the zoo (7 valid, 4 bad) in class 0, two images in class 1; val: one image per class."""
    write_zoo(root / "train" / WNIDS[0])
    rng = np.random.default_rng(1)
    for split, name, wnid, (w, h) in [
        ("train", "b1.JPEG", WNIDS[1], (40, 28)),
        ("train", "b2.JPEG", WNIDS[1], (20, 36)),
        ("val", "v1.JPEG", WNIDS[0], (30, 30)),
        ("val", "v2.JPEG", WNIDS[1], (50, 26)),
    ]:
        (root / split / wnid).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(root / split / wnid / name)
    with open(root / "LOC_train_solution.csv", "w", newline="") as fh:
        rows = [[stem, f"{WNIDS[0]} " + " ".join(str(int(v)) for v in box)] for stem, box in BOXES.items()]
        csv.writer(fh).writerows([["ImageId", "PredictionString"], *rows])


def _run(root: Path, out: Path, workers: int, samples=None) -> dict:
    samples = iter_split(root, "train") if samples is None else samples
    return preprocess_split(samples, root, out / "train", S, SHARD, workers, read_classes(root),
                            progress=False, mean=True, max_pixels=BOMB_LIMIT)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("imagenet")
    _write_dataset(root)
    out = tmp_path_factory.mktemp("prepared")
    return root, out, _run(root, out, workers=1)


def test_counts_add_up_and_bad_files_are_listed(prepared):
    root, out, manifest = prepared
    assert (manifest["found"], manifest["count"], manifest["skipped"]) == (13, 9, 4)
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 3]
    assert manifest["classes"] == list(WNIDS) and manifest["size"] == S and manifest["mean"] == "mean.npy"
    assert json.loads((out / "train" / "manifest.json").read_text()) == manifest
    with open(out / "train" / "skipped.csv", newline="") as fh:
        skipped = {row["path"]: row["reason"] for row in csv.DictReader(fh)}
    expected = {
        f"train/{WNIDS[0]}/empty.JPEG": "empty file",
        f"train/{WNIDS[0]}/truncated.JPEG": "truncated JPEG",
        f"train/{WNIDS[0]}/text.JPEG": "not an image",
        f"train/{WNIDS[0]}/bomb.JPEG": f"decompression bomb (10000 pixels > {BOMB_LIMIT})",
    }
    assert skipped == expected


def test_shards_hold_the_centre_crops_labels_boxes_and_mean(prepared):
    root, out, _ = prepared
    data = ShardDataset(out / "train")
    paths = data.paths()
    valid = [s for s in iter_split(root, "train") if s.path.relative_to(root).as_posix() in paths]
    assert [s.path.relative_to(root).as_posix() for s in valid] == paths  # dataset order, none lost
    crops, boxes = [], []
    for sample in valid:
        crop, transform = resize_center_crop(load_rgb(sample.path), S)
        crops.append(crop.transpose(2, 0, 1))
        boxes.append(map_box(sample.box, transform) if sample.box else (np.nan,) * 4)
    images, labels = data.get_batch(range(len(data)))
    assert images.dtype == torch.uint8 and images.shape == (9, 3, S, S)
    assert np.array_equal(images.numpy(), np.stack(crops))
    assert labels.tolist() == [s.label for s in valid] == data.labels().tolist()
    np.testing.assert_array_equal(data.boxes(), np.array(boxes, np.float32))
    assert data.boxes()[paths.index(f"train/{WNIDS[0]}/rgb.JPEG")].tolist() == [0, 0, S, S]  # whole image
    direct_mean = np.stack(crops).astype(np.float64).mean(0)
    np.testing.assert_allclose(load_mean(out).numpy(), direct_mean, rtol=0, atol=1e-4)
    assert load_mean(out).shape == (3, S, S)


def test_output_is_identical_for_any_number_of_workers(prepared, tmp_path):
    root, out, manifest = prepared
    assert _run(root, tmp_path, workers=2) == manifest
    one, two = sorted((out / "train").iterdir()), sorted((tmp_path / "train").iterdir())
    assert [f.name for f in one] == [f.name for f in two]
    for a, b in zip(one, two):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_shard_dataset_batches_in_the_order_asked(prepared):
    _, out, _ = prepared
    data = ShardDataset(out / "train")
    assert (len(data), data.num_classes, data.size) == (9, 2, S)
    everything, all_labels = data.get_batch(list(range(9)))
    order = [8, 0, 4, 4, 2, 6]  # across all three shards, with a repeat
    images, labels = data.get_batch(order)
    assert torch.equal(images, everything[order]) and torch.equal(labels, all_labels[order])
    image, label = data[7]
    assert torch.equal(image, everything[7]) and label == int(all_labels[7])
    with pytest.raises(IndexError):
        data.get_batch([9])


def test_preprocess_runs_train_and_val(prepared, tmp_path):
    root, _, _ = prepared
    manifests = preprocess(root, tmp_path, S, SHARD, workers=1, progress=False)
    assert manifests["val"]["count"] == 2 and manifests["val"]["mean"] is None
    assert not (tmp_path / "val" / "mean.npy").exists()
    # the default decompression-bomb limit is PIL's: the 100 x 100 image is kept here
    assert (manifests["train"]["count"], manifests["train"]["skipped"]) == (10, 3)
    assert ShardDataset(tmp_path / "val").class_names == list(WNIDS)


def test_missing_or_wrong_manifest_is_a_shard_error(prepared, tmp_path):
    with pytest.raises(ShardError, match=f"{tmp_path / 'train'}: no manifest.json"):
        ShardDataset(tmp_path / "train")
    _, out, manifest = prepared
    split = tmp_path / "train"
    split.mkdir()
    for f in (out / "train").iterdir():
        (split / f.name).write_bytes(f.read_bytes())
    (split / "manifest.json").write_text(json.dumps({**manifest, "format": "zfnet-shards-v0"}))
    with pytest.raises(ShardError, match="format"):
        ShardDataset(split)
    (split / "manifest.json").write_text(json.dumps({**manifest, "count": 10}))
    with pytest.raises(ShardError, match="do not add up"):
        ShardDataset(split)


def test_a_crash_leaves_no_manifest_and_no_stale_shards(prepared, tmp_path):
    root, out, _ = prepared
    _run(root, tmp_path, workers=1)
    (tmp_path / "train" / "shard-00042.images.npy").write_bytes(b"stale")

    def crashing():
        for n, sample in enumerate(iter_split(root, "train")):
            if n == 5:
                raise KeyboardInterrupt
            yield sample

    with pytest.raises(KeyboardInterrupt):
        _run(root, tmp_path, workers=2, samples=crashing())
    assert not (tmp_path / "train" / "manifest.json").exists()
    assert not (tmp_path / "train" / "shard-00042.images.npy").exists()
    with pytest.raises(ShardError, match="did not complete"):
        ShardDataset(tmp_path / "train")
    assert not (tmp_path / "train" / "shard-00002.images.npy").exists()


def test_labels_outside_the_classes_are_refused(prepared, tmp_path):
    root, _, _ = prepared
    bad = [Sample(root / "train" / WNIDS[1] / "b1.JPEG", 2, None)]
    with pytest.raises(ValueError, match="label 2"):
        _run(root, tmp_path, workers=2, samples=bad)  # the pool is stopped, nothing hangs
