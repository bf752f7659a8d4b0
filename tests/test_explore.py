"""``zfnet explore`` against a real tiny run: the top-9 index, the real server on a free port (started
by the real command in a subprocess), every safety behaviour, the static export, and a model
explored on a folder of images (index computed on first request, then cached).

The run is the tiny profile trained for 3 epochs (milestones 1, 2, 3) by the training loop, indexed
by :func:`zfnet.viz.index.write_index` as the visualize stage does (without its matplotlib figures,
which other tests cover). The browser test (``test_explore_browser.py``) runs on the real ``dvc repro``.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import conftest
from zfnet.config import from_dict
from zfnet.data.shards import ShardDataset, load_mean
from zfnet.paths import TOP9_INDEX
from zfnet.train.loop import fit
from zfnet.viz.index import Evolution, Top9Index, write_index
from zfnet.viz.network import from_checkpoint
from zfnet.viz.receptive import crop, receptive_field
from zfnet.viz.top9 import Images, project_top, top9

UPLOAD_MB = 1  # the server's upload limit in these tests


def index_run(root: Path) -> None:
    """``root/results/top9_index`` of ``root/models`` on the val split, with the milestones' evolution."""
    prepared = root / "data/prepared"
    network = from_checkpoint(root / "models/model.pt")
    val = ShardDataset(prepared / "val")
    data, train = Images(val, network.inputs, 64), Images(ShardDataset(prepared / "train"), network.inputs, 64)
    evolution = Evolution(train)
    for path in sorted((root / "models/milestones").glob("epoch-*.pt")):
        milestone = from_checkpoint(path)
        evolution.add(milestone.checkpoint.epoch, milestone.model, top9(milestone.model, train))
    write_index(root / TOP9_INDEX, network.model, top9(network.model, data), data, val.labels(), val.class_names,
                val.paths(), evolution, meta={"model": "models/model.pt", "split": "val", "evolution_split": "train"})


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_prepared) -> Path:
    """A tiny pipeline run's project folder: params.yaml, data/prepared, models/, results/top9_index."""
    raw = conftest.tiny_raw()
    root = conftest.tiny_project(tmp_path_factory.mktemp("explore") / "run", tiny_prepared, raw)
    prepared = root / "data/prepared"
    train, val = ShardDataset(prepared / "train"), ShardDataset(prepared / "val")
    fit(from_dict(raw), train, val, load_mean(prepared), root / ".zfnet/state/train", root / "models",
        meta={"classes": train.classes, "class_names": train.class_names}, progress=False)
    index_run(root)
    return root


def start(argv: list[str], cwd: Path, port: int) -> subprocess.Popen:
    """``zfnet explore ARGV --port PORT`` in a subprocess, returned once ``/api/progress`` answers."""
    proc = subprocess.Popen([sys.executable, "-m", "zfnet.cli", "explore", *argv, "--port", str(port)], cwd=cwd,
                            env=conftest.clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/progress", timeout=5):
                return proc
        except OSError:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "zfnet explore did not come up in 120 s"
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> str:
    """Stop the server started by :func:`start`; returns its stderr."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return err


@pytest.fixture(scope="module")
def server(run):
    """``(base URL, process)`` of ``zfnet explore --run RUN`` on a free port, upload limit :data:`UPLOAD_MB`."""
    port = conftest.free_port()
    proc = start(["--run", str(run), "--max-upload-mb", str(UPLOAD_MB)], run, port)
    yield f"http://127.0.0.1:{port}", proc
    stop(proc)


def get(url: str) -> tuple[int, bytes, str]:
    """``(status, body, content type)`` of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, resp.read(), resp.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def raw_get(base: str, path: str) -> int:
    """The status of a GET of ``path`` sent as is (no client-side normalisation of ``..``)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def post(base: str, data: bytes, filename: str = "photo.jpg", fields: dict | None = None,
         chunked: bool = False) -> tuple[int, dict]:
    """POST ``data`` as the multipart field ``image`` to ``/api/analyze``; ``(status, JSON answer)``."""
    boundary = "zfnet-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in (fields or {}).items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if chunked:
        conn.request("POST", "/api/analyze", (body[i:i + 65536] for i in range(0, len(body), 65536)), headers,
                     encode_chunked=True)
    else:
        conn.request("POST", "/api/analyze", body, headers)
    resp = conn.getresponse()
    answer = resp.status, json.loads(resp.read())
    conn.close()
    return answer


def jpeg(width: int = 500, height: int = 400) -> bytes:
    """A photograph-sized JPEG: a drawn disc on noise."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(60, 200, (height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    pixels[(yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (height / 4) ** 2] = (230, 200, 40)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_bomb(side: int = 30000) -> bytes:
    """A 5 kB PNG whose header declares ``side`` x ``side`` RGB pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (3 * side + 1) * 64)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def decodes(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.size


# --- the index ---------------------------------------------------------------------------------------


def test_index_holds_every_map_and_its_tiles_are_the_deconvnet_projections(run):
    index = Top9Index(run / TOP9_INDEX)
    network = from_checkpoint(run / "models/model.pt")
    widths = from_dict(conftest.tiny_raw()).model.widths
    assert [e["channels"] for e in index.layers.values()] == widths and list(index.layers) == [f"conv{i}" for i in range(1, 6)]
    assert index.data["epochs"] == [1, 2, 3] and index.data["images"] == 32 and index.data["k"] == 9
    conv3 = index.layers["conv3"]
    assert all(len(row) == 9 and row == sorted(row, reverse=True) for row in conv3["values"])
    assert len(conv3["evolution"][0]) == 3 and conv3["labels"][0][0] in range(4)
    assert index.layers["conv1"]["filters"] and not conv3["filters"]
    # a tile is the projection of that recorded activation (the deconvnet, cropped to its field), as stored
    val = ShardDataset(run / "data/prepared/val")
    data = Images(val, network.inputs)
    field = receptive_field(network.model, "conv3", network.inputs.size)
    assert index.field("conv3") == field
    entry = {k: torch.tensor(conv3[k]) for k in ("values", "images", "ys", "xs")}
    from zfnet.viz.top9 import TopActivations

    recon, _ = project_top(network.model, "conv3", TopActivations(**entry), torch.tensor([5]), data.fetch, 64, field)
    from zfnet.viz.grids import normalize_signed, resize

    expected = (normalize_signed(resize(recon[0, 2:3], conv3["tile"])).clamp(0, 1) * 255).round()[0].permute(1, 2, 0)
    assert np.abs(index.tile("projections", "conv3", 5, 2).astype(int) - expected.numpy().astype(int)).max() <= 1
    # a patch is the image's receptive field, cut at full size
    pixels, _ = val.get_batch([conv3["images"][5][2]])
    from zfnet.data.transforms import center_crop

    cut = crop(center_crop(pixels, network.inputs.size), field, torch.tensor([conv3["ys"][5][2]]), torch.tensor([conv3["xs"][5][2]]))
    assert np.array_equal(index.patches("conv3", 5, val)[2], cut[0].permute(1, 2, 0).numpy())
    size = sum(p.stat().st_size for p in (run / TOP9_INDEX).iterdir())
    assert size < 2e6, f"index of the tiny run: {size} bytes"


# --- the server ----------------------------------------------------------------------------------------


def test_every_page_serves_and_every_image_on_it_decodes(server):
    base, _ = server
    for path in ("/", "/layer/conv1", "/layer/conv2", "/layer/conv5/3"):
        status, body, kind = get(base + path)
        assert status == 200 and kind.startswith("text/html"), (path, status)
        html = body.decode()
        sources = re.findall(r'<img [^>]*src="([^"]+)"', html)
        assert sources, path
        for src in sources:
            status, data, kind = get(base + src)
            assert status == 200 and kind == "image/png", (path, src, status)
            assert min(decodes(data)) > 0
        for href in re.findall(r'<link [^>]*href="(/[^"]+)"|<script src="([^"]+)"', html):
            assert get(base + "".join(href))[0] == 200
    layer = get(base + "/layer/conv1")[1].decode()
    assert layer.count("data-channel=") == 8 and layer.count("/tile/filter/conv1/") == 8  # tiny conv1: 8 maps, their filters
    channel = get(base + "/layer/conv5/3")[1].decode()
    assert channel.count("/tile/projection/conv5/3/") == 9 and channel.count("/tile/patch/conv5/3/") == 9
    assert channel.count("/tile/evolution/conv5/3/") == 3 and "epoch 3" in channel


def test_unknown_layer_or_channel_is_a_404_naming_the_valid_ones(server):
    base, _ = server
    for path, words in (("/layer/conv9", ["no layer 'conv9'", "conv1", "conv5"]),
                        ("/layer/conv2/16", ["no channel '16' in layer 'conv2'", "0..15"]),
                        ("/layer/conv2/-1", ["no channel '-1'", "0..15"]),
                        ("/layer/conv2/x", ["no channel 'x'", "0..15"]),
                        ("/tile/projection/conv2/3/9.png", ["no projection tile '9'", "0..8"]),
                        ("/tile/filter/conv2/3/0.png", ["no filter tile"]),
                        ("/tile/weights/conv2/3/0.png", ["no tile kind 'weights'", "projection"]),
                        ("/no/such/page", ["no page '/no/such/page'"])):
        status, body, _ = get(base + path)
        assert status == 404, (path, status)
        text = body.decode()
        assert all(w.replace("'", "&#39;") in text for w in words), (path, text[-800:])


@pytest.mark.parametrize("path", ["/figures/../params.yaml", "/figures/..%2Fparams.yaml", "/figures/%2e%2e%2fparams.yaml",
                                  "/static/../../../params.yaml", "/static/..%2F..%2Fapp.py", "/figures//etc/passwd",
                                  "/tile/projection/..%2F..%2Fparams.yaml/0/0.png", "/../params.yaml",
                                  "/figures/%2Fetc%2Fpasswd", "/static/explore.css/../../pages.py"])
def test_path_traversal_is_a_404(server, path):
    base, _ = server
    assert raw_get(base, path) == 404


def test_only_the_runs_figures_and_the_packages_static_files_are_served(server, run):
    base, _ = server
    figures = run / "figures/visualize"
    figures.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(figures / "top9_conv1.png")
    (figures / "notes.txt").write_text("not a figure")
    assert get(base + "/figures/top9_conv1.png")[0] == 200
    for path in ("/figures/notes.txt", "/figures/params.yaml", "/static/__init__.py", "/static/app.py"):
        assert get(base + path)[0] == 404, path
    assert get(base + "/static/explore.css")[0] == 200 and get(base + "/static/explore.js")[0] == 200


def test_an_upload_is_analysed(server):
    base, _ = server
    status, answer = post(base, jpeg(), fields={"layer": "conv3", "channel": "4"})
    assert status == 200, answer
    assert len(answer["predictions"]) == 4 and abs(sum(p["probability"] for p in answer["predictions"]) - 1) < 1e-3
    assert answer["occlusion"]["layer"] == "conv5"  # the highest indexed layer
    assert (answer["projection"]["layer"], answer["projection"]["channel"]) == ("conv3", 4)
    assert set(answer["urls"]) == {"image", "feature", "probability", "argmax", "occlusion_projection", "projection"}
    for url in answer["urls"].values():
        status, data, kind = get(base + url)
        assert status == 200 and kind == "image/png" and min(decodes(data)) > 0
    status, answer = post(base, jpeg())
    assert status == 200 and answer["projection"]["strongest"] and answer["projection"]["layer"] == "conv5"


@pytest.mark.parametrize("data, fields, words", [
    (b"hello, not an image", {}, "not a usable image: not an image"),
    (b"", {}, "not a usable image: empty file"),
    (jpeg()[:3000], {}, "not a usable image: truncated JPEG"),
    (png_bomb(), {}, "not a usable image: decompression bomb (900000000 pixels > 50000000)"),
    (jpeg(), {"layer": "conv9"}, "no layer 'conv9'; valid: conv1, conv2, conv3, conv4, conv5"),
    (jpeg(), {"layer": "conv2", "channel": "16"}, "channel 16 is not in layer 'conv2' (0..15)"),
    (jpeg(), {"channel": "-2"}, "channel must be a whole number >= 0, got '-2'"),
], ids=["text", "empty", "truncated", "bomb", "layer", "channel", "negative"])
def test_a_bad_upload_is_a_400_with_a_one_line_reason(server, data, fields, words):
    base, _ = server
    status, answer = post(base, data, fields=fields)
    assert status == 400 and words in answer["error"], answer
    assert "\n" not in answer["error"]


def test_an_upload_over_the_limit_is_refused_before_it_is_read(server):
    base, proc = server
    big = os.urandom(UPLOAD_MB * 2**20 + 1000)
    for chunked in (False, True):  # a declared length over the limit; bytes counted as they arrive
        status, answer = post(base, big, chunked=chunked)
        assert status == 413 and answer["error"].startswith(f"upload too large: over {UPLOAD_MB} MiB"), answer
    status, body, _ = get(base + "/")
    assert status == 200 and proc.poll() is None


def test_the_form_without_an_image_is_a_400(server):
    base, _ = server
    req = urllib.request.Request(base + "/api/analyze", data=b"layer=conv1", method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        urllib.request.urlopen(req, timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and json.loads(exc.read())["error"].startswith("no image")
    else:
        raise AssertionError("accepted a form without an image")


def test_a_crashing_request_does_not_take_the_server_down(server, run):
    """A sprite damaged on disk makes its tile request fail (500, one line); the server goes on."""
    base, proc = server
    sprite = run / TOP9_INDEX / "evolution_conv4.png"
    good = sprite.read_bytes()
    sprite.write_bytes(b"damaged")
    try:
        status, body, _ = get(base + "/tile/evolution/conv4/0/0.png")
    finally:
        sprite.write_bytes(good)
    message = re.search(r'<p class="error" id="message">(.*?)</p>', body.decode(), re.S).group(1)
    assert status == 500 and message.startswith("UnidentifiedImageError: ") and "\n" not in message, message
    for path in ("/", "/layer/conv4", "/tile/projection/conv4/0/0.png"):
        assert get(base + path)[0] == 200
    assert proc.poll() is None


def test_it_binds_this_machine_only_unless_told_and_then_warns(run):
    from zfnet.cli import build_parser

    assert build_parser().parse_args(["explore"]).host == "127.0.0.1"
    port = conftest.free_port()
    proc = start(["--run", str(run), "--host", "0.0.0.0"], run, port)
    err = stop(proc)
    assert "reachable from other machines: the explorer has no login" in err, err


# --- the static export and a model on a folder of images -------------------------------------------------


def test_static_export_links_only_files_it_wrote(run, tmp_path, capsys):
    from zfnet.cli import main

    assert main(["explore", "--run", str(run), "--export", str(tmp_path / "site")]) == 0
    site = tmp_path / "site"
    written = json.loads(capsys.readouterr().out)
    assert written["pages"] == 1 + 5 + sum(from_dict(conftest.tiny_raw()).model.widths)
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == written["pages"] and "/api/analyze" not in (site / "index.html").read_text()
    for page in pages:
        for link in re.findall(r'(?:src|href)="([^"#]+)"', page.read_text()):
            if not link.startswith(("http:", "https:", "data:")):
                assert (page.parent / link).resolve().is_file(), (page, link)
    tile = site / "tile/patch/conv2/1/0.png"
    assert min(decodes(tile.read_bytes())) > 0
    # a second export replaces the first whole; a folder that is not an export is never written into
    (site / "stale.html").write_text("from before")
    assert main(["explore", "--run", str(run), "--export", str(site)]) == 0
    assert not (site / "stale.html").exists() and (site / "index.html").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no temp folder left beside it
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep")
    assert main(["explore", "--run", str(run), "--export", str(tmp_path / "mine")]) == 2
    assert "mine: not empty and not a previous export (choose a new folder)" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_checkpoint_on_a_folder_of_images_is_indexed_on_first_request_then_cached(run, tmp_path):
    from zfnet.data.synthetic import CLASS_NAMES, render_image
    from zfnet.explore.source import of_network

    rng = np.random.default_rng(1)
    (tmp_path / "mine/sub").mkdir(parents=True)
    for i in range(10):
        render_image(rng, CLASS_NAMES[i % 4], (90 + 7 * i, 80))[0].save(tmp_path / "mine" / ("sub" if i % 2 else "")
                                                                        / f"{i}.jpg")
    (tmp_path / "mine/notes.txt").write_text("not an image")
    checkpoint = tmp_path / "alone" / "model.pt"  # no milestones/ beside it: no evolution (faster)
    checkpoint.parent.mkdir()
    checkpoint.write_bytes((run / "models/model.pt").read_bytes())
    network = from_checkpoint(checkpoint)
    default = of_network(network, [checkpoint], tmp_path / "mine", layers=["conv2", "conv4"])
    assert default.index_dir.parent.parent == Path("outputs/explore") and default.progress.steps == []
    explorer = of_network(network, [checkpoint], tmp_path / "mine", cache=tmp_path / "cache", layers=["conv2", "conv4"])
    assert not explorer.ready  # the first request starts the computation in the background
    explorer.wait()
    steps = [what for _, what in explorer.progress.steps]
    assert steps[0] == "top-9 pass over 10 images" and steps[-1] == "done", steps
    assert list(explorer.index.layers) == ["conv2", "conv4"] and explorer.index.data["split"] == "folder"
    names = explorer.index.data["image_names"]
    assert sorted(names) == sorted([f"{i}.jpg" for i in range(0, 10, 2)] + [f"sub/{i}.jpg" for i in range(1, 10, 2)])
    from zfnet.explore.pages import Links, channel_page, tile_png

    first = names[explorer.index.layers["conv2"]["images"][0][0]]
    assert first in channel_page(explorer, "conv2", 0, Links())
    assert min(decodes(tile_png(explorer, "patch", "conv4", 1, 0))) > 0
    again = of_network(network, [checkpoint], tmp_path / "mine", cache=tmp_path / "cache", layers=["conv2", "conv4"])
    assert again.ready and again.progress.steps == []  # found in the cache: nothing computed
