"""Robust decoding, resize + centre crop and box mapping, on small real files of every awkward kind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zfnet.data.images import BadImage, load_rgb, map_box, resize_center_crop

BOMB_LIMIT = 5000  # pixels: the "bomb" below has 10,000, every valid image fewer than 2,000


def _ramp(w: int, h: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 with distinct values per row and column."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def write_zoo(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """Write one file of every kind real datasets contain; name -> (path, skip reason or None if valid)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, str | None]] = {}

    def add(name: str, reason: str | None = None) -> Path:
        files[name[: name.index(".")]] = (folder / name, reason)
        return folder / name

    Image.fromarray(_ramp(48, 32)).save(add("rgb.JPEG"), quality=95)
    Image.fromarray(_ramp(32, 40)[..., 0]).save(add("gray.JPEG"))
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(add("cmyk.JPEG"))
    rgba = np.zeros((36, 30, 4), np.uint8)
    rgba[:, 15:] = (0, 0, 255, 255)  # left half fully transparent, right half opaque blue
    Image.fromarray(rgba, "RGBA").save(add("rgba.png"))
    Image.fromarray(_ramp(30, 44)).save(add("png_named.JPEG"), format="PNG")
    gray16 = np.zeros((30, 36), np.uint16)
    gray16[:, 12:24], gray16[:, 24:] = 128 * 257, 65535
    Image.fromarray(gray16).save(add("gray16.png"))
    palette = Image.new("P", (34, 34), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (17, 0, 34, 34))  # right half index 1 (red); index 0 is the transparent colour
    palette.save(add("palette.png"), transparency=0)
    add("empty.JPEG", "empty file").write_bytes(b"")
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (44, 44, 3), np.uint8)).save(noisy, "JPEG")
    add("truncated.JPEG", "truncated JPEG").write_bytes(noisy.getvalue()[: len(noisy.getvalue()) // 2])
    add("text.JPEG", "not an image").write_text("n01440764 tench, Tinca tinca\n")
    Image.fromarray(_ramp(100, 100)).save(add("bomb.JPEG", f"decompression bomb (10000 pixels > {BOMB_LIMIT})"))
    return files


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, tuple[Path, str | None]]:
    return write_zoo(tmp_path_factory.mktemp("zoo"))


def test_every_valid_kind_decodes_to_rgb(zoo):
    for name, (path, reason) in zoo.items():
        if reason is None:
            img = load_rgb(path, BOMB_LIMIT)
            assert img.mode == "RGB", name
            assert img.size == Image.open(path).size, name


def test_conversions_keep_the_content(zoo):
    gray = np.asarray(load_rgb(zoo["gray"][0]), np.int16)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 0] == gray[..., 2]).all()
    cmyk = np.asarray(load_rgb(zoo["cmyk"][0]), np.int16)
    assert (cmyk[..., 0] > 220).all() and (cmyk[..., 1:] < 40).all()  # CMYK (0, 255, 255, 0) is red
    rgba = np.asarray(load_rgb(zoo["rgba"][0]))
    assert (rgba[:, :15] == 128).all() and (rgba[:, 15:] == (0, 0, 255)).all()  # composited on mid-grey
    gray16 = np.asarray(load_rgb(zoo["gray16"][0]))
    assert Image.open(zoo["gray16"][0]).mode.startswith("I")
    assert (gray16[:, :12] == 0).all() and (gray16[:, 12:24] == 128).all() and (gray16[:, 24:] == 255).all()
    palette = np.asarray(load_rgb(zoo["palette"][0]))
    assert (palette[:, :17] == 128).all() and (palette[:, 17:] == (255, 0, 0)).all()
    png_named = load_rgb(zoo["png_named"][0])
    assert (np.asarray(png_named) == _ramp(30, 44)).all()  # decoded by content (lossless PNG)


def test_bad_files_raise_bad_image_with_reason(zoo):
    for name, (path, reason) in zoo.items():
        if reason is not None:
            with pytest.raises(BadImage) as info:
                load_rgb(path, BOMB_LIMIT)
            assert info.value.reason == reason, name


def test_default_bomb_limit_is_pils(zoo, monkeypatch):
    path = zoo["bomb"][0]
    assert load_rgb(path).size == (100, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
    with pytest.raises(BadImage, match="decompression bomb"):
        load_rgb(path)


def test_unreadable_path_is_bad_image(tmp_path):
    with pytest.raises(BadImage, match="unreadable"):
        load_rgb(tmp_path / "missing.JPEG")


def _bands(w: int, h: int) -> Image.Image:
    """Red outer quarters, green centre half along the long side."""
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = 255
    if w >= h:
        a[:, w // 4 : 3 * w // 4] = (0, 255, 0)
    else:
        a[h // 4 : 3 * h // 4] = (0, 255, 0)
    return Image.fromarray(a)


@pytest.mark.parametrize("w,h", [(40, 20), (20, 40), (30, 30)])
def test_resize_center_crop_keeps_the_centre(w, h):
    crop, t = resize_center_crop(_bands(w, h), 10)
    assert crop.shape == (10, 10, 3) and crop.dtype == np.uint8
    if w != h:  # the long side is twice the short one: the centre half is all that remains
        assert (crop[..., 1] > 200).all() and (crop[..., 0] < 60).all()
    assert min(t.scale_x * w, t.scale_y * h) == 10


def test_map_box():
    _, t = resize_center_crop(_bands(40, 20), 10)  # resized to 20 x 10, crop x from 5 to 15
    assert (t.scale_x, t.scale_y, t.left, t.top) == (0.5, 0.5, 5, 0)
    assert map_box((0, 0, 40, 20), t) == (0.0, 0.0, 10.0, 10.0)  # whole image -> whole crop (clipped)
    assert map_box((10, 5, 30, 15), t) == (0.0, 2.5, 10.0, 7.5)
    assert map_box((16, 2, 24, 6), t) == (3.0, 1.0, 7.0, 3.0)
    x0, _, x1, _ = map_box((0, 0, 6, 6), t)  # left of the crop: zero width
    assert x0 == x1 == 0.0


def test_shrink_to_decodes_a_large_jpeg_at_a_fraction_of_its_pixels(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_ramp(4000, 3000)).save(path, quality=90)
    small = load_rgb(path, max_pixels=300_000, shrink_to=72)  # 12 MP declared; draft mode decodes 1/8 of each side
    assert min(small.size) >= 72 and small.size[0] * small.size[1] < 300_000
    assert abs(small.size[0] / small.size[1] - 4 / 3) < 0.05
    assert load_rgb(path, shrink_to=None).size == (4000, 3000)  # the pipeline's decode is unchanged
    with pytest.raises(BadImage, match="decompression bomb"):
        load_rgb(path, max_pixels=300_000)


def test_shrink_to_reduces_other_formats_after_decoding(tmp_path):
    path = tmp_path / "scan.png"
    Image.fromarray(_ramp(900, 600)).save(path)
    img = load_rgb(path, shrink_to=100)
    assert img.mode == "RGB" and img.size == (150, 100)  # reduced by 6: short side still >= 100


def test_an_explicit_limit_above_pils_hard_limit_is_the_only_one(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(_ramp(100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's hard limit (2000) is below the image
    with pytest.raises(BadImage, match="over PIL's hard limit"):
        load_rgb(path)
    assert load_rgb(path, max_pixels=20_000).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
