"""Readers of the ImageNet layouts, on small datasets written by the synthetic generator."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zfnet.config import SyntheticConfig
from zfnet.data.imagenet import LayoutError, Sample, count_split, iter_split, read_classes
from zfnet.data.synthetic import CLASS_NAMES, wnid_for, write_imagenet

CFG = SyntheticConfig(classes=3, train_per_class=3, val_per_class=2, min_side=32, max_side=40, seed=5)
WNIDS = [wnid_for(i) for i in range(3)]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """The same images in the foldered and the flat val layout."""
    base = tmp_path_factory.mktemp("imagenet")
    roots = {}
    for layout in ("folders", "flat"):
        roots[layout] = base / layout
        write_imagenet(roots[layout], SyntheticConfig(**{**CFG.__dict__, "val_layout": layout}), progress=False)
    return roots


@pytest.fixture
def copy(written, tmp_path):
    """A writable copy of one written layout."""
    return lambda layout: Path(shutil.copytree(written[layout], tmp_path / layout))


def by_stem(samples) -> dict[str, tuple[int, tuple | None]]:
    return {s.path.stem: (s.label, s.box) for s in samples}


def test_classes_from_the_synset_mapping_or_the_train_folders(written, copy):
    assert read_classes(written["folders"]) == list(zip(WNIDS, CLASS_NAMES[:3]))
    root = copy("folders")
    (root / "LOC_synset_mapping.txt").unlink()
    assert read_classes(root) == [(w, w) for w in WNIDS]


def test_train_samples_sorted_with_labels_and_boxes(written):
    root = written["folders"]
    samples = list(iter_split(root, "train"))
    assert all(isinstance(s, Sample) for s in samples)
    assert len(samples) == count_split(root, "train") == 9
    assert [s.path for s in samples] == sorted(s.path for s in samples)
    assert [s.label for s in samples] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for s in samples:
        assert s.path.parent.name == WNIDS[s.label]
        x0, y0, x1, y1 = s.box
        assert 0 <= x0 < x1 <= CFG.max_side and 0 <= y0 < y1 <= CFG.max_side
    assert list(iter_split(root, "train")) == samples


def test_flat_val_labelled_by_the_solution_csv_matches_the_foldered_val(written):
    folders, flat = list(iter_split(written["folders"], "val")), list(iter_split(written["flat"], "val"))
    assert len(flat) == count_split(written["flat"], "val") == count_split(written["folders"], "val") == 6
    assert all(s.path.parent.name == "val" for s in flat)
    assert [s.path.name for s in flat] == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]
    assert by_stem(flat) == by_stem(folders)
    assert all(s.box is not None for s in flat)


@pytest.mark.parametrize("where", ["root", "val"])
def test_flat_val_labelled_by_a_caffe_val_txt(written, copy, where):
    root = copy("flat")
    (root / "LOC_val_solution.csv").unlink()
    expected = by_stem(iter_split(written["flat"], "val"))
    lines = [f"{stem}.JPEG {label}\n" for stem, (label, _) in expected.items()]  # wnids sorted = class order here
    (root / ("val.txt" if where == "root" else "val/val.txt")).write_text("".join(lines))
    samples = list(iter_split(root, "val"))
    labels = {stem: label for stem, (label, _) in by_stem(samples).items()}
    assert labels == {stem: label for stem, (label, _) in expected.items()}
    assert all(s.box is None for s in samples) and count_split(root, "val") == 6


def test_every_visible_file_is_yielded_and_hidden_ones_skipped(copy):
    root = copy("folders")
    cls = root / "train" / WNIDS[1]
    (cls / "broken.txt").write_text("not an image")
    (cls / "photo.png").write_bytes(b"")
    (cls / ".DS_Store").write_text("")
    names = [s.path.name for s in iter_split(root, "train") if s.label == 1]
    assert names == sorted([f"{WNIDS[1]}_{k}.JPEG" for k in (1, 2, 3)] + ["broken.txt", "photo.png"])
    assert count_split(root, "train") == 11


def test_kaggle_download_folder(written, tmp_path):
    root = tmp_path / "kaggle"
    images = root / "ILSVRC" / "Data" / "CLS-LOC"
    shutil.copytree(written["flat"], root)
    images.mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).rename(images / split)
    assert count_split(root, "train") == 9
    assert by_stem(iter_split(root, "val")) == by_stem(iter_split(written["flat"], "val"))
    assert all(images in s.path.parents for s in iter_split(root, "train"))


def test_images_directly_in_train_are_a_layout_error(copy):
    root = copy("folders")
    for folder in (root / "train").iterdir():
        for f in folder.iterdir():
            f.rename(root / "train" / f.name)
        folder.rmdir()
    (root / "LOC_synset_mapping.txt").unlink()
    expected = r"train: expected one folder per class \(train/<wnid>/\*\.JPEG\), found none; found 9 files"
    with pytest.raises(LayoutError, match=expected):
        read_classes(root)


def test_flat_val_without_a_label_names_the_file_and_the_label_files(copy):
    root = copy("flat")
    (root / "LOC_val_solution.csv").unlink()
    with pytest.raises(LayoutError) as err:
        list(iter_split(root, "val"))
    msg = str(err.value)
    assert "ILSVRC2012_val_00000001.JPEG: flat val image without a label" in msg
    assert "LOC_val_solution.csv" in msg and "val.txt" in msg


def test_unknown_class_folder_and_missing_split_are_layout_errors(copy):
    root = copy("folders")
    (root / "train" / "n12345678").mkdir()
    with pytest.raises(LayoutError, match="class folder 'n12345678' is not one of the 3 class wnids"):
        list(iter_split(root, "train"))
    shutil.rmtree(root / "val")
    with pytest.raises(LayoutError, match="expected the val folder"):
        count_split(root, "val")
    with pytest.raises(ValueError, match="split must be one of"):
        list(iter_split(root, "test"))
