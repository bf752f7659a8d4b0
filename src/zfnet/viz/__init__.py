"""Visualising the trained convnet: the deconvnet and the figures built on it (docs/paper.md Figs. 2, 4, 6), and occlusion sensitivity (Fig. 7)."""

from zfnet.viz.deconvnet import Deconvnet
from zfnet.viz.occlusion import occlusion

__all__ = ["Deconvnet", "occlusion"]
