"""Safe extraction: good archives unpack; traversal, absolute names, links out and devices are refused."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from zfnet.data.archives import ArchiveError, extract, is_archive


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_tar_gz_and_zip_extract_with_inner_links(tmp_path):
    archive = _tar(tmp_path / "caltech.tar.gz", [
        _file("101_ObjectCategories/tee/image_0001.jpg", b"jpeg"),
        _link("101_ObjectCategories/tee/image_0002.jpg", "image_0001.jpg", tarfile.SYMTYPE),
        _link("101_ObjectCategories/tee/image_0003.jpg", "101_ObjectCategories/tee/image_0001.jpg", tarfile.LNKTYPE),
    ])
    assert is_archive(archive)
    out = extract(archive, tmp_path / "out")
    folder = out / "101_ObjectCategories" / "tee"
    assert [(folder / f"image_000{i}.jpg").read_bytes() for i in (1, 2, 3)] == [b"jpeg"] * 3

    zpath = tmp_path / "voc.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("VOCdevkit/VOC2012/ImageSets/Main/train.txt", "2012_000001\n")
    assert (extract(zpath, tmp_path / "z") / "VOCdevkit/VOC2012/ImageSets/Main/train.txt").read_text() == "2012_000001\n"


@pytest.mark.parametrize("member", [
    _file("../evil.txt"),
    _file("a/../../evil.txt"),
    _file("/tmp/evil.txt"),
    _link("a/link", "../../outside", tarfile.SYMTYPE),
    _link("a/link", "/etc/passwd", tarfile.SYMTYPE),
    _link("a/hard", "../outside", tarfile.LNKTYPE),
    _link("a/dev", "", tarfile.CHRTYPE),
    _link("a/fifo", "", tarfile.FIFOTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out", "device", "fifo"])
def test_unsafe_tar_members_are_refused_before_anything_is_written(tmp_path, member):
    archive = _tar(tmp_path / "bad.tar", [_file("ok/first.txt"), member], mode="w")
    with pytest.raises(ArchiveError, match=repr(member[0].name).strip("'")):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_unsafe_zip_and_garbage_are_refused(tmp_path):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../../evil.txt", "bad")
    with pytest.raises(ArchiveError, match="outside the destination"):
        extract(zpath, tmp_path / "out")
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("a/link")
        info.external_attr = (0o120777 << 16)  # a symlink entry
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="link or special"):
        extract(link, tmp_path / "out")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive at all")
    with pytest.raises(ArchiveError, match="not a readable"):
        extract(junk, tmp_path / "out")
    assert not (tmp_path / "out").exists()
