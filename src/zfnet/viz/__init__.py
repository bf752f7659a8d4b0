"""Visualising the trained convnet: the deconvnet and the figures built on it (PAPER.md Figs. 2, 4, 6)."""

from zfnet.viz.deconvnet import Deconvnet

__all__ = ["Deconvnet"]
