"""Hostile data through preprocessing and the transfer readers: every valid image kept, every bad file
listed with its reason (symlink loops and dangling links included), hostile VOC XML refused, a
wrong layout stopped with an error naming what was expected where, and tar links that climb out of
the destination only in combination refused. The files are those of
``test_images.write_zoo`` (zero-byte, truncated, PNG named .JPEG, CMYK, grayscale, 16-bit, alpha,
palette, text, decompression bomb) plus the ones below."""

from __future__ import annotations

import csv
import io
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_images import write_zoo

from zfnet.data import caltech, voc
from zfnet.data.archives import ArchiveError, extract
from zfnet.data.folder import ImageFiles
from zfnet.data.imagenet import LayoutError, count_split, iter_split
from zfnet.data.preprocess import preprocess
from zfnet.experiments.transfer import load_crops

LOOP = "unreadable (Too many levels of symbolic links)"
DANGLING = "unreadable (No such file or directory)"
CORRUPT = "corrupt JPEG (broken data stream when reading image file)"


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width x height`` (a decompression bomb: a few bytes on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def write_hostile(folder: Path, ext: str = ".JPEG") -> tuple[list[str], dict[str, str]]:
    """Every kind of file into ``folder``: ``(valid file names, {bad file name: skip reason})``.

    The zoo of ``test_images`` (its 100 x 100 "bomb" is valid under PIL's default limit), a
    corrupt JPEG (scan data overwritten), two decompression bombs (over PIL's limit, and over its
    hard limit), a symlink to itself, a dangling symlink, and a folder symlink looping to its parent
    (never listed, never followed).
    """
    files = write_zoo(folder)
    valid = sorted(p.name for p, reason in files.values() if reason is None or p.name == "bomb.JPEG")
    bad = {p.name: reason for p, reason in files.values() if reason is not None and p.name != "bomb.JPEG"}
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 40, 3), np.uint8)).save(data, "JPEG")
    corrupt = bytearray(data.getvalue())
    scan = corrupt.find(b"\xff\xda")
    corrupt[scan + 20 : scan + 60] = b"\xff" * 40
    (folder / f"corrupt{ext}").write_bytes(corrupt)
    png_header(folder / f"bomb_soft{ext}", 10_000, 10_000)
    png_header(folder / f"bomb_hard{ext}", 100_000, 100_000)
    os.symlink(f"loop{ext}", folder / f"loop{ext}")
    os.symlink(f"gone{ext}", folder / f"dangling{ext}")
    os.symlink(".", folder / "again")
    bad |= {f"corrupt{ext}": CORRUPT, f"loop{ext}": LOOP, f"dangling{ext}": DANGLING,
            f"bomb_soft{ext}": f"decompression bomb (100000000 pixels > {Image.MAX_IMAGE_PIXELS})",
            f"bomb_hard{ext}": "decompression bomb (over PIL's hard limit)"}
    return valid, bad


def test_preprocessing_keeps_every_valid_image_and_lists_every_bad_one(tmp_path):
    root = tmp_path / "imagenet"
    valid, bad = write_hostile(root / "train/n00000001")
    for split in ("train", "val"):
        folder = root / split / "n00000002"
        folder.mkdir(parents=True)
        Image.new("RGB", (30, 20), "blue").save(folder / "ok.JPEG")
    (root / "val/n00000001").mkdir()
    Image.new("L", (20, 30), 90).save(root / "val/n00000001/gray.JPEG")
    assert count_split(root, "train") == len(valid) + len(bad) + 1

    manifests = preprocess(root, tmp_path / "prepared", 16, 4, workers=2, progress=False)  # as the stage calls it
    train = manifests["train"]
    assert (train["found"], train["count"], train["skipped"]) == (len(valid) + len(bad) + 1, len(valid) + 1, len(bad))
    with open(tmp_path / "prepared/train/skipped.csv", newline="") as fh:
        skipped = {Path(row["path"]).name: row["reason"] for row in csv.DictReader(fh)}
    assert skipped == bad
    with open(tmp_path / "prepared/train/index.csv", newline="") as fh:
        kept = sorted(Path(row["path"]).name for row in csv.DictReader(fh))
    assert kept == sorted(valid + ["ok.JPEG"])
    assert manifests["val"]["count"] == 2 and manifests["val"]["skipped"] == 0


def test_caltech_reader_lists_every_file_and_decoding_keeps_the_valid_ones(tmp_path):
    folder = tmp_path / "caltech-101/101_ObjectCategories"
    valid, bad = write_hostile(folder / "awkward", ".jpg")
    (folder / "plain").mkdir()
    Image.new("RGB", (24, 24), "red").save(folder / "plain/image_0001.jpg")
    data = caltech.read_caltech101(tmp_path)
    assert data.classes == ["awkward", "plain"]
    names = [s.path.name for s in data.samples]
    assert sorted(names) == sorted(valid + list(bad) + ["image_0001.jpg"])  # the folder loop is not listed
    crops = load_crops([s.path for s in data.samples], 16)
    assert sorted(names[i] for i in crops.kept) == sorted(valid + ["image_0001.jpg"])
    assert {Path(p).name: reason for p, reason in crops.skipped} == bad
    assert crops.images.shape == (len(valid) + 1, 3, 16, 16)


def test_image_folder_lists_links_and_survives_a_folder_loop(tmp_path):
    valid, bad = write_hostile(tmp_path / "mine", ".jpg")
    files = ImageFiles(tmp_path, 16)  # searched recursively: the folder loop is not followed
    assert sorted(Path(p).name for p in files.paths()) == valid
    assert {Path(p).name: reason for p, reason in files.skipped} == bad


def voc_layout(root: Path, ids: list[str]) -> Path:
    """A VOC2012 folder whose ImageSets list ``ids`` (every image labelled ``cat``); no images yet."""
    main = root / "VOCdevkit/VOC2012/ImageSets/Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    for name in voc.VOC_CLASSES:
        (main / f"{name}_train.txt").write_text("".join(f"{i} {1 if name == 'cat' else -1}\n" for i in ids))
    (root / "VOCdevkit/VOC2012/JPEGImages").mkdir()
    (root / "VOCdevkit/VOC2012/Annotations").mkdir()
    return root / "VOCdevkit/VOC2012"


def test_voc_images_that_cannot_be_read_are_listed_with_their_reason(tmp_path):
    ids = ["2012_000001", "2012_000002", "2012_000003", "2012_000004", "2012_000005", "2012_000006"]
    images = voc_layout(tmp_path, ids) / "JPEGImages"
    Image.new("RGB", (40, 30), "red").save(images / f"{ids[0]}.jpg")
    Image.new("CMYK", (30, 30), (0, 255, 0, 0)).save(images / f"{ids[1]}.jpg")
    (images / f"{ids[2]}.jpg").write_bytes(b"")
    os.symlink(f"{ids[3]}.jpg", images / f"{ids[3]}.jpg")
    Image.fromarray(np.zeros((20, 20, 4), np.uint8), "RGBA").save(images / f"{ids[4]}.jpg", format="PNG")
    split = voc.read_split(tmp_path, "train")  # ids[5] has no image at all
    assert split.ids == ids and split.targets[:, voc.VOC_CLASSES.index("cat")].tolist() == [1] * 6
    crops = load_crops(split.paths, 16)
    assert crops.kept == [0, 1, 4]
    assert {Path(p).stem: reason for p, reason in crops.skipped} == {
        ids[2]: "empty file", ids[3]: LOOP, ids[5]: DANGLING}


HOSTILE_XML = {
    "billion-laughs": ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                       '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
                       "<annotation><object><name>&lol2;</name></object></annotation>", "hostile"),
    "external-entity": ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                        "<annotation><object><name>&xxe;</name></object></annotation>", "hostile"),
    "truncated": ("<annotation><object><name>cat</name><bndbox><xmin>1</xmin>", "not a readable VOC annotation"),
    "not-xml": ("2012_000001 cat 1 1 10 10\n", "not a readable VOC annotation"),
    "empty": ("", "not a readable VOC annotation"),
    "wrong-root": ("<html><object/></html>", "expected a VOC annotation (<annotation> root), found <html>"),
    "no-box": ("<annotation><object><name>cat</name></object></annotation>", "object without a numeric bndbox"),
    "text-box": ("<annotation><object><name>cat</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax>"
                 "<ymax>3</ymax></bndbox></object></annotation>", "object without a numeric bndbox"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_XML))
def test_malformed_or_hostile_voc_xml_is_refused_naming_the_file(tmp_path, kind):
    text, reason = HOSTILE_XML[kind]
    path = tmp_path / f"{kind}.xml"
    path.write_text(text)
    with pytest.raises(LayoutError) as err:
        voc.read_annotation(path)
    assert str(err.value).startswith(f"{path}: ") and reason in str(err.value)


def test_a_missing_voc_xml_is_refused_and_a_good_one_reads(tmp_path):
    with pytest.raises(LayoutError, match="missing.xml: not a readable VOC annotation"):
        voc.read_annotation(tmp_path / "missing.xml")
    good = tmp_path / "good.xml"
    good.write_text("<annotation><object><name>cat</name><difficult>1</difficult><bndbox><xmin>1</xmin>"
                    "<ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>")
    assert voc.read_annotation(good) == [voc.VocObject("cat", True, (0.0, 1.0, 10.0, 20.0))]


def test_wrong_layouts_name_what_was_expected_where(tmp_path):
    loose = tmp_path / "c101/101_ObjectCategories"
    loose.mkdir(parents=True)
    for k in range(3):
        Image.new("RGB", (20, 20)).save(loose / f"image_{k:04d}.jpg")
    with pytest.raises(LayoutError) as err:
        caltech.read_caltech101(tmp_path / "c101")
    assert str(err.value) == (f"{loose}: expected at least 2 class folders of images "
                              "(101_ObjectCategories/<class>/<image>), found 0; found 3 files directly in 101_ObjectCategories/")
    with pytest.raises(LayoutError, match=r"nowhere: expected a folder 256_ObjectCategories/ \(at most 3 levels down\)"):
        caltech.read_caltech256(tmp_path / "nowhere")

    root = voc_layout(tmp_path / "voc", ["2012_000001"])
    (root / "JPEGImages").rmdir()
    with pytest.raises(LayoutError, match="VOC2012: expected the images as JPEGImages/<id>.jpg, found no JPEGImages folder"):
        voc.read_split(tmp_path / "voc", "train")
    (root / "ImageSets/Main/cat_train.txt").unlink()
    with pytest.raises(LayoutError, match="VOC2012: expected ImageSets/Main/cat_train.txt, found none"):
        voc.read_split(tmp_path / "voc", "train")

    imagenet = tmp_path / "imagenet"
    (imagenet / "train").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(imagenet / "train/a.JPEG")
    with pytest.raises(LayoutError, match=r"train: expected one folder per class \(train/<wnid>/\*\.JPEG\), found none; "
                                          "found 1 files directly in train/"):
        list(iter_split(imagenet, "train"))


def _tar(path: Path, members: list[tuple[str, str, str | None]]) -> Path:
    """A tar of ``(name, kind, link target)``: kind ``file`` (holding b"x"), ``dir`` or ``sym``."""
    with tarfile.open(path, "w") as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            else:
                info.size = 1
            tar.addfile(info, io.BytesIO(b"x") if kind == "file" else None)
    return path


@pytest.mark.parametrize("members, refused", [
    ([("a", "dir", None), ("a/up", "sym", ".."), ("a/up2", "sym", "up/..")], "symlink 'a/up2' -> 'up/..'"),
    ([("l", "sym", "."), ("l/l/../../evil.txt", "file", None)], "member 'l/l/../../evil.txt'"),
    ([("d", "dir", None), ("d/out", "sym", "../d/../.."), ("d/ok.txt", "file", None)], "symlink 'd/out'"),
    ([("x", "sym", "y"), ("y", "sym", "x"), ("x/file.txt", "file", None)], "symlink 'x' -> 'y'"),
], ids=["link-chain", "write-through-link", "dotdot-after-link", "link-loop"])
def test_tar_links_that_climb_out_only_in_combination_are_refused(tmp_path, members, refused):
    """Each link stays inside on its own; followed as the file system will, they escape (or loop)."""
    archive = _tar(tmp_path / "chain.tar", [("ok/first.txt", "file", None), *members])
    with pytest.raises(ArchiveError) as err:
        extract(archive, tmp_path / "out" / "dest")
    assert refused in str(err.value) and "outside the destination" in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_tar_link_chains_that_stay_inside_extract(tmp_path):
    archive = _tar(tmp_path / "fine.tar", [("c", "dir", None), ("c/img.jpg", "file", None), ("a", "dir", None),
                                            ("a/b", "sym", "../c"), ("d", "sym", "a/b"), ("e", "sym", "d/img.jpg")])
    out = extract(archive, tmp_path / "out")
    assert (out / "e").read_bytes() == b"x" and (out / "e").resolve() == (out / "c/img.jpg").resolve()
