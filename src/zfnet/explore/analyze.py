"""An uploaded image, analysed live: predictions, the three occlusion maps of Fig. 7 and a projection.

:func:`analyze` decodes the upload as the pipeline decodes images (:meth:`InputSpec.decode
<zfnet.models.inputs.InputSpec.decode>`: by content, large photographs shrunk while decoding,
decompression bombs refused above ``max_pixels``), then runs, under the explorer's model lock:

- the top-5 predictions;
- occlusion (:func:`zfnet.viz.analysis.occlusion_with_figure`, Sec. 4.2): (b) the total activity of
  the occlusion layer's strongest map, (d) the probability of the predicted class, (e) the most
  probable class, with the grey square at each position;
- the deconvnet projection (Sec. 2.1) of the strongest activation of a chosen map of a chosen layer
  (by default the layer's strongest map on this image).

Every picture comes back as PNG bytes (:class:`Analysis`); the app serves them under the
analysis' id and answers with JSON naming their URLs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from zfnet.data.transforms import center_crop
from zfnet.viz.grids import png_bytes
from zfnet.viz.network import Network

UPLOAD_MAX_BYTES = 20 * 2**20  # an upload larger than this is refused (413) before it is decoded
UPLOAD_MAX_PIXELS = 50_000_000  # a file declaring more pixels is a decompression bomb (400)
MAP_SIDE = 224  # occlusion maps are drawn at this side, as the image (nearest neighbour: a block per square position)


def png(pixels: np.ndarray) -> bytes:
    """``(h, w, 3)`` uint8 -> PNG bytes, quickly compressed (what the explorer serves)."""
    return png_bytes(pixels, fast=True)


def coloured(values: torch.Tensor, cmap: str, low: float | None = None, high: float | None = None) -> np.ndarray:
    """A ``(Gh, Gw)`` map through a matplotlib colour map (``low..high``, default its own range):
    ``(Gh, Gw, 3)`` in [0, 1]."""
    import matplotlib

    v = values.float().cpu()
    lo = float(v.min()) if low is None else low
    hi = float(v.max()) if high is None else high
    return matplotlib.colormaps[cmap](((v - lo) / max(hi - lo, 1e-12)).clamp(0, 1).numpy())[..., :3]


def on_the_image(cells: np.ndarray, maps, size: int, side: int = MAP_SIDE) -> np.ndarray:
    """Occlusion-map cells ``(Gh, Gw, 3)`` in [0, 1] drawn where the grey square's centre was on the
    ``size x size`` model input (each cell ``stride`` pixels wide around it, white where no centre
    falls), enlarged to ``side`` pixels: ``(side, side, 3)`` uint8, so the maps line up with the image."""
    stride = int(maps.ys[1] - maps.ys[0]) if len(maps.ys) > 1 else maps.patch
    block = np.repeat(np.repeat(cells, stride, 0), stride, 1)
    top = max(maps.patch // 2 - stride // 2, 0)
    canvas = np.ones((size, size, 3))
    h, w = min(block.shape[0], size - top), min(block.shape[1], size - top)
    canvas[top:top + h, top:top + w] = block[:h, :w]
    x = torch.nn.functional.interpolate(torch.from_numpy(canvas).permute(2, 0, 1)[None].float(), size=(side, side),
                                        mode="nearest")[0]
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def palette() -> np.ndarray:
    """The argmax map's class colours, ``(20, 3)`` in [0, 1] (matplotlib's ``tab20``; class ``c`` has colour ``c % 20``)."""
    import matplotlib

    return matplotlib.colormaps["tab20"](np.arange(20))[:, :3]


def class_colour(c: int) -> str:
    """The argmax map's colour of class ``c`` as ``#rrggbb``."""
    return "#" + "".join(f"{round(v * 255):02x}" for v in palette()[c % 20])


def _display(projection: torch.Tensor) -> np.ndarray:
    """A raw deconvnet projection ``(1, 3, h, w)`` -> ``(h, w, 3)`` uint8, zero at mid-grey."""
    from zfnet.viz.grids import normalize_signed

    return (normalize_signed(projection)[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


@dataclass
class Analysis:
    """One upload's results: ``numbers`` (JSON-ready) and ``pictures`` ``{name: PNG bytes}``."""

    numbers: dict
    pictures: dict[str, bytes]


def _predictions(network: Network, x: torch.Tensor, layer: str, top: int = 5):
    """Softmax of ``x`` ``(1, 3, s, s)`` and the activations ``(1, C, h, w)`` of ``layer``, in one forward."""
    from zfnet.viz.features import LayerOutputs
    from zfnet.viz.layers import resolve

    maps_of = resolve(network.model, layer)
    with torch.no_grad(), LayerOutputs(network.model, [maps_of]) as rec:
        probs = rec.run(x).softmax(1)[0]
        act = rec.outputs[maps_of]
    p, c = probs.topk(min(top, len(probs)))
    return [{"class": network.class_names[int(i)], "index": int(i), "probability": round(float(v), 4)}
            for v, i in zip(p, c)], act


def analyze(network: Network, pixels: torch.Tensor, layer: str, channel: int | None, occlusion_layer: str,
            patch: int = 16, stride: int = 8, max_batch: int = 256) -> Analysis:
    """Analyse one image, ``pixels`` uint8 ``(1, 3, resize, resize)`` (:meth:`InputSpec.decode`).

    ``layer``/``channel``: the map whose strongest activation is projected (``channel`` None: the
    layer's strongest map on this image); ``occlusion_layer``: whose strongest map gives map (b);
    ``patch``, ``stride``: the grey square and its step, model-input pixels (the square is made to fit).
    Callers hold the explorer's model lock. Raises ``ValueError`` for a channel the layer lacks.
    """
    from zfnet.viz.analysis import occlusion_with_figure
    from zfnet.viz.deconvnet import Deconvnet

    model, inputs = network.model, network.inputs
    device = next(model.parameters()).device
    full = inputs.normalize(pixels.to(device))
    x = center_crop(full, inputs.size)
    predictions, act = _predictions(network, x, layer)
    strongest = int(act[0].flatten(1).amax(1).argmax())
    chosen = strongest if channel is None else channel
    if not 0 <= chosen < act.shape[1]:
        raise ValueError(f"channel {chosen} is not in layer {layer!r} (0..{act.shape[1] - 1})")
    label = torch.tensor([predictions[0]["index"]], device=device)
    patch = min(patch, inputs.size)
    with torch.no_grad():
        maps, projections = occlusion_with_figure(model, inputs, full, label, network.class_names, patch, stride,
                                                  occlusion_layer, max_batch, None)
    projection = Deconvnet(model).project(x, layer, [chosen], "max")[:, 0]
    present = sorted(set(maps.argmax[0].flatten().tolist()))
    pictures = {
        "image": png((inputs.pixels(x)[0] * 255).round().byte().permute(1, 2, 0).cpu().numpy()),
        "feature": png(on_the_image(coloured(maps.feature[0], "viridis"), maps, inputs.size)),
        "probability": png(on_the_image(coloured(maps.prob[0], "jet", 0.0, 1.0), maps, inputs.size)),
        "argmax": png(on_the_image(palette()[maps.argmax[0].cpu().numpy() % 20], maps, inputs.size)),
        "occlusion_projection": png(_display(projections)),
        "projection": png(_display(projection)),
    }
    numbers = {
        "predictions": predictions,
        "occlusion": {"layer": occlusion_layer, "channel": int(maps.channel[0]), "patch": patch, "stride": stride,
                      "probability": round(float(maps.base_prob[0]), 4),
                      "min_probability": round(float(maps.prob[0].min()), 4),
                      "classes": [{"class": network.class_names[c], "colour": class_colour(c)} for c in present]},
        "projection": {"layer": layer, "channel": chosen, "strongest": chosen == strongest,
                       "activation": round(float(act[0, chosen].max()), 4)},
    }
    return Analysis(numbers, pictures)
