"""``zfnet explore``'s speed: pages served from the top-9 index and an upload analysed, over real HTTP.

A run is laid out in the scratch folder as the pipeline lays it out (``data/prepared``,
``models/model.pt``: the default profile's model, freshly initialised, on ``device``;
``results/top9_index`` written by :func:`zfnet.viz.index.write_index` over the validation split,
every conv layer, or with ``--quick`` only the top one), and the real app
(:func:`zfnet.explore.app.create_app`) is served by uvicorn on a free localhost port in a thread.
Timed, best of ``rounds``, and the first request of each separately (the first page reads
``index.json``, the first picture of a layer decodes its sprite):

- the overview, a layer page (the top layer, every map) and a channel page, HTML only; and every
  picture on the layer and the channel page, fetched one after the other (a browser fetches six
  at a time), on the first visit (the channel's patches cut from the images) and at best;
- ``POST /api/analyze`` of a 500 x 400 JPEG: decode, predictions, the occlusion maps (the
  pipeline's ``analyze.occlusion`` square and stride) and a projection, with the PNGs.

Targets (issue 16): a layer or channel page in under 300 ms, an upload in under 3 s on the CPU.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from zfnet.bench.timing import Rounds, race, target, timed

PAGE_TARGET_S = 0.3
UPLOAD_TARGET_S = 3.0


def _run_folder(root: Path, prepared: Path, cfg, device: torch.device, all_layers: bool) -> tuple[float, int]:
    """Lay out a run in ``root`` (module docstring; ``all_layers`` False: only the top layer indexed);
    returns the index's seconds and bytes."""
    from zfnet.bench.train import make_model
    from zfnet.data.shards import ShardDataset, load_mean
    from zfnet.paths import TOP9_INDEX
    from zfnet.train.checkpoint import Checkpoint
    from zfnet.viz.index import write_index
    from zfnet.viz.top9 import Images, default_layers, top9

    (root / "data").mkdir(parents=True)
    (root / "data/prepared").symlink_to(prepared.resolve())
    train, val = ShardDataset(prepared / "train"), ShardDataset(prepared / "val")
    model = make_model(cfg.model, train.num_classes, cfg.train.crop, cfg.train, device).eval()
    checkpoint = Checkpoint.of(model, asdict(cfg.model), mean=load_mean(prepared), classes=train.classes,
                               class_names=train.class_names)
    checkpoint.save(root / "models/model.pt")
    data = Images(val, checkpoint.inputs, cfg.viz.batch_size, device=device)
    start = time.perf_counter()
    layers = default_layers(model) if all_layers else default_layers(model)[-1:]
    write_index(root / TOP9_INDEX, model, top9(model, data, layers), data, val.labels(), val.class_names, val.paths(),
                max_batch=cfg.viz.max_batch, meta={"model": "models/model.pt", "split": "val"})
    seconds = time.perf_counter() - start
    return seconds, sum(p.stat().st_size for p in (root / TOP9_INDEX).iterdir())


class _Server:
    """The app on a free localhost port, served by uvicorn in a thread (``with``: started, then stopped)."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as resp:
        return resp.read()


def _post(url: str, data: bytes) -> bytes:
    boundary = "zfnet-bench"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        return resp.read()


def photo(width: int = 500, height: int = 400) -> bytes:
    """A 500 x 400 JPEG (ImageNet's typical size): a drawn shape on noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(40, 220, (height, width, 3), dtype=np.uint8)
    pixels[height // 4: 3 * height // 4, width // 3: 2 * width // 3] = (220, 60, 60)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def bench_explore(scratch, device: torch.device, rounds: Rounds, all_layers: bool = True) -> tuple[dict, list[dict]]:
    """Time the explorer on a run laid out in ``scratch`` (:class:`~zfnet.bench.data.Scratch`: its
    prepared data and config; ``all_layers`` False, as ``--quick``: only the top layer is indexed).
    Returns the seconds and sizes, and the page and upload targets."""
    from zfnet.explore.app import create_app
    from zfnet.explore.source import of_run

    cfg, root = scratch.cfg, scratch.dir / "explore-run"
    index_s, index_bytes = _run_folder(root, scratch.prepared(), cfg, device, all_layers)
    explorer = of_run(root, mlflow_ui="", device=device)
    layer = list(explorer.index.layers)[-1]
    o = cfg.analyze.occlusion
    pages = {"overview": "/", "layer": f"/layer/{layer}", "channel": f"/layer/{layer}/0"}
    jpeg = photo()
    with _Server(create_app(explorer, patch=o.patch, stride=o.stride)) as base:
        first = {name: timed(lambda p=path: _get(base + p), device, Rounds(1, warmup=0)) for name, path in pages.items()}
        best = race({name: lambda p=path: _get(base + p) for name, path in pages.items()}, device, rounds)
        tiles, with_tiles = {}, {}
        for name in ("layer", "channel"):  # every picture on the page, one after the other: first visit, then best
            tiles[name] = re.findall(r'<img [^>]*src="([^"]+)"', _get(base + pages[name]).decode())
            fetch = lambda urls=tiles[name]: [_get(base + url) for url in urls]  # noqa: E731
            with_tiles[name] = (timed(fetch, device, Rounds(1, warmup=0)), timed(fetch, device, rounds))
        upload_first = timed(lambda: _post(base + "/api/analyze", jpeg), device, Rounds(1, warmup=0))
        upload = timed(lambda: _post(base + "/api/analyze", jpeg), device, rounds)
    result = {"layer": layer, "maps": explorer.index.layers[layer]["channels"], "images": explorer.index.data["images"],
              "index_s": index_s, "index_bytes": index_bytes,
              **{f"{name}_page_first_s": s for name, s in first.items()},
              **{f"{name}_page_s": s for name, s in best.items()},
              **{f"{name}_page_pictures": len(urls) for name, urls in tiles.items()},
              **{f"{name}_page_pictures_first_s": first_s for name, (first_s, _) in with_tiles.items()},
              **{f"{name}_page_pictures_s": best_s for name, (_, best_s) in with_tiles.items()},
              "upload_first_s": upload_first, "upload_s": upload, "upload_jpeg_bytes": len(jpeg)}
    checks = [target(f"explore: {name} page ({layer}, from the index)", best[name], "<=", PAGE_TARGET_S, "s")
              for name in ("layer", "channel")]
    checks.append(target("explore: 500x400 JPEG analysed", upload, "<=", UPLOAD_TARGET_S, "s"))
    return result, checks
