"""The named architecture variants of Tables 2 and 3 (docs/paper.md), as changes to the configured model.

A variant is a change of the configured model or training recipe, expressed relative to it so that
the same names work on every profile (``fc_wide`` doubles whatever fc6/fc7 width the profile has):

=========================  ===========================================  ===========================
variant                    change (the paper's words)                   paper row (Table 3)
=========================  ===========================================  ===========================
``zfnet``                  ZFNet as configured (the baseline)           "Our Model (as per Fig. 3)"
``no_fc7``                 remove layer 7                               "Removed layer 7"
``no_fc6_fc7``             remove layers 6, 7                           "Removed layers 6,7"
``no_conv3_conv4``         remove layers 3, 4                           "Removed layers 3,4"
``no_conv3_conv4_fc6_fc7`` remove layers 3, 4, 6, 7                     "Removed layer 3,4,6,7"
``fc_narrow``              fc6/7 at half width (2048 of 4096)           "Adjust layers 6,7: 2048 units"
``fc_wide``                fc6/7 at twice the width (8192 of 4096)      "Adjust layers 6,7: 8192 units"
``conv_wide``              conv3-5 at x4/3, x8/3, x2 (512/1024/512)     "Adjust layers 3,4,5: 512,1024,512 maps"
``conv_wide_fc_wide``      both of the above                            "... 8192 units and layers 3,4,5 ..."
``krizhevsky``             layer 1 11x11 stride 4 (the AlexNet replica)  "Our replication of Krizhevsky et al."
``no_renorm``              no filter RMS renormalisation (Fig. 6)       none (Fig. 6 compares filters)
=========================  ===========================================  ===========================

The paper removes layers from its Krizhevsky replica; here every change applies to ZFNet (the
configured model), so each row compares with the same baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from zfnet.config import Config, ConfigError, from_dict, to_dict


@dataclass(frozen=True)
class Variant:
    """One row of Table 3: a change of the configured model/recipe and the paper's numbers for it.

    Attributes:
        change: the change in the paper's words.
        paper_row: the row of Table 3 it reproduces ("" when the paper has none).
        paper_base: the network the paper changed ("ZFNet" or "Krizhevsky replica").
        paper: the paper's (train top-1, val top-1, val top-5) error in %, or None.
        remove: layers removed (``conv3``, ``conv4``, ``fc6``, ``fc7``).
        fc_scale: factor on the fc6/fc7 widths.
        conv_scale: factors on the conv3, conv4, conv5 widths.
        krizhevsky: layer 1 11x11 stride 4 (and the replica's layer 2), instead of ZFNet's 7x7/2.
        renormalize: filter RMS renormalisation on (as in the paper) or off.
    """

    change: str
    paper_row: str = ""
    paper_base: str = "ZFNet"
    paper: tuple[float, float, float] | None = None
    remove: tuple[str, ...] = ()
    fc_scale: float = 1.0
    conv_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    krizhevsky: bool = False
    renormalize: bool = True


_WIDE_CONV = (512 / 384, 1024 / 384, 512 / 256)
_KRIZHEVSKY = "Krizhevsky replica"

VARIANTS: dict[str, Variant] = {
    "zfnet": Variant("ZFNet (baseline)", "Our Model (as per Fig. 3)", paper=(33.1, 38.4, 16.5)),
    "no_fc7": Variant("remove layer 7", "Removed layer 7", _KRIZHEVSKY, (27.4, 40.0, 18.4), remove=("fc7",)),
    "no_fc6_fc7": Variant("remove layers 6, 7", "Removed layers 6,7", _KRIZHEVSKY, (27.4, 44.8, 22.4),
                          remove=("fc6", "fc7")),
    "no_conv3_conv4": Variant("remove layers 3, 4", "Removed layers 3,4", _KRIZHEVSKY, (41.8, 45.4, 22.1),
                              remove=("conv3", "conv4")),
    "no_conv3_conv4_fc6_fc7": Variant("remove layers 3, 4, 6, 7", "Removed layer 3,4,6,7", _KRIZHEVSKY,
                                      (71.1, 71.3, 50.1), remove=("conv3", "conv4", "fc6", "fc7")),
    "fc_narrow": Variant("fc6/7 at 0.5x width", "Adjust layers 6,7: 2048 units", paper=(38.2, 40.2, 17.6),
                         fc_scale=0.5),
    "fc_wide": Variant("fc6/7 at 2x width", "Adjust layers 6,7: 8192 units", paper=(22.0, 38.8, 17.0), fc_scale=2.0),
    "conv_wide": Variant("conv3-5 widened (x4/3, x8/3, x2)", "Adjust layers 3,4,5: 512,1024,512 maps",
                         paper=(18.8, 37.5, 16.0), conv_scale=_WIDE_CONV),
    "conv_wide_fc_wide": Variant("conv3-5 widened and fc6/7 at 2x", "Adjust layers 6,7: 8192 units and layers "
                                 "3,4,5: 512,1024,512 maps", paper=(10.0, 38.3, 16.9), fc_scale=2.0,
                                 conv_scale=_WIDE_CONV),
    "krizhevsky": Variant("layer 1 11x11 stride 4 (Krizhevsky et al.)", "Our replication of Krizhevsky et al., "
                          "1 convnet", _KRIZHEVSKY, (35.1, 40.5, 18.1), krizhevsky=True),
    "no_renorm": Variant("ZFNet without filter renormalisation", renormalize=False),
}


def _fits(model_cfg: Any, size: int) -> bool:
    """Whether the architecture of ``model_cfg`` accepts ``size`` x ``size`` inputs (built at width 1: cheap)."""
    from zfnet.models import build  # torch: only once a variant is built

    try:
        build(replace(model_cfg, widths=[1] * 5, fc_sizes=[1, 1]), 2, size)
    except (ValueError, RuntimeError):
        return False
    return True


def variant_overrides(cfg: Config, name: str) -> dict[str, Any]:
    """The config changes that turn ``cfg`` into variant ``name``: ``{"model.remove": ["fc7"], ...}``.

    Only keys whose value changes are listed (``zfnet`` -> ``{}``). Widths are scaled from ``cfg``'s.
    If the variant's layer 1 needs larger inputs than ``train.crop`` (the 11x11/4 replica on small
    crops), ``train.crop`` becomes ``preprocess.size``, the largest the prepared images allow.
    Raises ``KeyError`` for an unknown name.
    """
    v = VARIANTS[name]
    m, t = cfg.model, cfg.train
    new = {
        "model.remove": sorted(set(m.remove) | set(v.remove)),
        "model.fc_sizes": [max(1, round(w * v.fc_scale)) for w in m.fc_sizes],
        "model.widths": list(m.widths[:2]) + [max(1, round(w * f)) for w, f in zip(m.widths[2:], v.conv_scale)],
        "model.arch": "krizhevsky" if v.krizhevsky else m.arch,
        "model.conv1_kernel": 11 if v.krizhevsky else m.conv1_kernel,
        "model.conv1_stride": 4 if v.krizhevsky else m.conv1_stride,
        "train.renormalize": t.renormalize and v.renormalize,
    }
    old = {"model.remove": sorted(m.remove), "model.fc_sizes": list(m.fc_sizes), "model.widths": list(m.widths),
           "model.arch": m.arch, "model.conv1_kernel": m.conv1_kernel, "model.conv1_stride": m.conv1_stride,
           "train.renormalize": t.renormalize}
    changes = {k: value for k, value in new.items() if value != old[k]}
    model = replace(m, arch=new["model.arch"], remove=new["model.remove"], conv1_kernel=new["model.conv1_kernel"],
                    conv1_stride=new["model.conv1_stride"])
    if not _fits(model, t.crop):
        if not _fits(model, cfg.preprocess.size):
            raise ConfigError(f"ablation variant {name}: its layer 1 needs inputs larger than preprocess.size "
                              f"({cfg.preprocess.size})")
        changes["train.crop"] = cfg.preprocess.size
    return changes


def hydra_overrides(changes: dict[str, Any]) -> list[str]:
    """``{"model.remove": ["fc7"], "train.renormalize": False}`` -> ``["model.remove=[fc7]", "train.renormalize=false"]``."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(value(x) for x in v) + "]"
        return str(v)

    return [f"{k}={value(v)}" for k, v in changes.items()]


def apply(cfg: Config, changes: dict[str, Any], source: str) -> Config:
    """``cfg`` with dotted-key ``changes`` applied, validated again (:func:`zfnet.config.from_dict`)."""
    raw = to_dict(cfg)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = raw
        for p in parents:
            node = node[p]
        node[leaf] = value
    return from_dict(raw, source)


def variant_config(cfg: Config, name: str) -> Config:
    """``cfg`` turned into variant ``name`` (see :func:`variant_overrides`), validated."""
    return apply(cfg, variant_overrides(cfg, name), f"ablation variant {name}")


def check_variants(cfg: Config, source: str) -> None:
    """Every name in ``ablation.variants`` is a variant of :data:`VARIANTS`; else a
    :class:`~zfnet.config.ConfigError` ``"<source>: ablation.variants[<i>]: must be one of [...], got
    '<name>'"``. Applied wherever the pipeline's config is loaded (:func:`zfnet.stages.common.load_config`,
    which says why :func:`zfnet.config.validate` cannot)."""
    for i, name in enumerate(cfg.ablation.variants):
        if name not in VARIANTS:
            raise ConfigError(f"{source}: ablation.variants[{i}]: must be one of {list(VARIANTS)}, got {name!r}")
