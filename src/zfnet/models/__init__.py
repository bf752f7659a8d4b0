"""Models of the paper: ZFNet, the Krizhevsky replica and their ablation variants."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zfnet.models.zfnet import CONV_LAYERS, FC_LAYERS, LAYERS, ConvNet, ConvSpec, krizhevsky, zfnet

if TYPE_CHECKING:
    from zfnet.config import ModelConfig

__all__ = ["CONV_LAYERS", "FC_LAYERS", "LAYERS", "ConvNet", "ConvSpec", "build", "krizhevsky", "zfnet"]


def build(cfg: "ModelConfig", num_classes: int, input_size: int, input_scale: float = 1.0) -> ConvNet:
    """The model a :class:`~zfnet.config.ModelConfig` describes, for ``num_classes`` and square
    inputs of side ``input_size`` scaled by ``input_scale`` (``train.input_scale``)."""
    common = dict(
        input_scale=input_scale,
        widths=tuple(cfg.widths),
        fc_sizes=tuple(cfg.fc_sizes),
        contrast_norm=cfg.contrast_norm,
        remove=tuple(cfg.remove),
        input_size=input_size,
        dropout=cfg.dropout,
    )
    if cfg.arch == "krizhevsky":
        return krizhevsky(num_classes, **common)
    return zfnet(num_classes, conv1_kernel=cfg.conv1_kernel, conv1_stride=cfg.conv1_stride, **common)
