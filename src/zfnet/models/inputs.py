"""How a model sees an image: :class:`InputSpec`, carried with every model the visualisations run on.

One formula covers both conventions in use: an image file is decoded, its smallest side resized to
``resize`` and the centre ``resize x resize`` crop kept (uint8, 0..255); the model input is the
centre ``size x size`` crop of ``(pixels - mean) * scale``, channels in the model's colour order.

- **ours** (the paper's, Sec. 3): ``mean`` the per-pixel training mean image ``(3, S, S)``, ``scale``
  the checkpoint's ``input_scale`` (:meth:`InputSpec.mean_image`);
- **torchvision**: ``Resize(256) -> CenterCrop(224) -> ToTensor() -> Normalize(mean, std)`` is
  ``mean = 255 * m`` and ``scale = 1 / (255 * s)`` per channel (:meth:`InputSpec.normalized`).

Grey, the occluder and the fill of the invariance transforms, is the mean: 0 in model units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from zfnet.data.transforms import center_crop

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's Normalize for its ImageNet models, [0, 1] units
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class InputSpec:
    """What a model takes as input (module docstring).

    Attributes:
        size: side of the square model input (224 in the paper).
        resize: images are resized (smallest side) and centre-cropped to ``resize x resize`` first.
        mean: ``(3, 1, 1)`` per channel or ``(3, resize, resize)`` per pixel, 0..255 units, model colour order.
        scale: ``(3, 1, 1)`` per-channel factor applied after the mean is subtracted.
        bgr: the model takes channels in BGR order (Caffe-style); images are RGB.
    """

    size: int
    resize: int
    mean: torch.Tensor
    scale: torch.Tensor
    bgr: bool = False

    @classmethod
    def mean_image(cls, mean: torch.Tensor | None, scale: float, size: int) -> "InputSpec":
        """Ours: ``(pixels - mean) * scale`` with the per-pixel mean ``(3, S, S)`` (None: no mean, ``S = size``)."""
        mean = torch.zeros(3, 1, 1) if mean is None else mean.float()
        resize = mean.shape[-1] if mean.shape[-1] > 1 else size
        return cls(size, resize, mean, torch.full((3, 1, 1), float(scale)))

    @classmethod
    def normalized(cls, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   size: int = 224, resize: int | None = None, bgr: bool = False) -> "InputSpec":
        """torchvision's ``Normalize(mean, std)`` on ``[0, 1]`` images; ``resize`` defaults to ``size * 256 / 224``."""
        m = torch.tensor([float(v) for v in mean]).view(3, 1, 1)
        s = torch.tensor([float(v) for v in std]).view(3, 1, 1)
        return cls(size, resize or round(size * 256 / 224), 255 * m, 1 / (255 * s), bgr)

    @property
    def offset(self) -> int:
        """Row (and column) of the model input's top-left pixel in the ``resize x resize`` image."""
        return (self.resize - self.size) // 2

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (or 0..255 float) RGB ``(N, 3, h, w)``, centred in the ``resize`` image -> model units ``(N, 3, h, w)``."""
        pixels = pixels.flip(1) if self.bgr else pixels
        mean = center_crop(self.mean, pixels.shape[-1]) if self.mean.shape[-1] > 1 else self.mean
        return (pixels.float() - mean.to(pixels.device)) * self.scale.to(pixels.device)

    def model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, resize, resize)`` images -> the model's ``(N, 3, size, size)`` input."""
        return self.normalize(center_crop(pixels, self.size))

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model units ``(N, 3, h, w)`` (centred in the ``resize`` image) -> displayable RGB in ``[0, 1]``."""
        mean = center_crop(self.mean, x.shape[-1]) if self.mean.shape[-1] > 1 else self.mean
        rgb = x / self.scale.to(x.device) + mean.to(x.device)
        return ((rgb.flip(1) if self.bgr else rgb) / 255).clamp(0, 1)

    def decode(self, data: bytes, max_pixels: int | None = None) -> torch.Tensor:
        """An image file's bytes as the ``resize x resize`` uint8 crop ``(1, 3, resize, resize)``, decoded
        as the pipeline does (a large one shrunk while decoding, up to ``max_pixels``). Raises ``BadImage``."""
        import numpy as np

        from zfnet.data.images import decode_rgb, resize_center_crop

        crop, _ = resize_center_crop(decode_rgb(data, max_pixels, shrink_to=self.resize), self.resize)
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]

    def load(self, path: str | Path, max_pixels: int | None = None) -> torch.Tensor:
        """One image file as :meth:`decode` reads it. Raises ``BadImage`` naming the file."""
        from zfnet.data.images import BadImage, read_bytes

        try:
            return self.decode(read_bytes(path), max_pixels)
        except BadImage as exc:
            hint = " (--max-pixels raises the limit)" if exc.reason.startswith("decompression bomb") else ""
            raise BadImage(f"{path}: {exc.reason}{hint}") from None
