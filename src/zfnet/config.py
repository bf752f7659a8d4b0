"""Config schemas (dataclasses) and validation.

``conf/`` holds the Hydra config groups; DVC's Hydra integration composes them into
``params.yaml``. Stages load ``params.yaml`` with :func:`load_params`, which merges it onto
:class:`Config` (unknown keys and wrong types fail) and then checks values
(:func:`validate`). Every failure raises :class:`ConfigError` with one line naming the key,
before any work starts and before anything is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zfnet.errors import first_line
from zfnet.io import load_yaml


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key."""


@dataclass
class SyntheticConfig:
    """The procedural dataset written in the ImageNet layout (classes of drawn objects on clutter)."""

    classes: int = 14  # the first N of zfnet.data.synthetic.CLASS_NAMES (14: controls .. textures)
    train_per_class: int = 150
    val_per_class: int = 80
    min_side: int = 128  # raw images are W x H with both sides in [min_side, max_side]
    max_side: int = 152
    val_layout: str = "folders"  # folders: val/<wnid>/*.JPEG | flat: val/*.JPEG + LOC_val_solution.csv
    seed: int = 0


@dataclass
class DataConfig:
    source: str = "synthetic"  # synthetic: generate into data/raw/imagenet | imagenet: read the layout at root
    root: str = "data/imagenet"  # the real ImageNet folder (train/, val/); unused for synthetic
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    workers: int = 2  # processes drawing the synthetic images (the same bytes for any number)


@dataclass
class PreprocessConfig:
    size: int = 72  # S: smallest side resized to S, centre S x S crop kept (256 in the paper)
    shard_size: int = 1024  # images per shard file
    workers: int = 2  # decoding processes


@dataclass
class ModelConfig:
    arch: str = "zfnet"  # zfnet | krizhevsky
    widths: List[int] = field(default_factory=lambda: [96, 256, 384, 384, 256])
    fc_sizes: List[int] = field(default_factory=lambda: [4096, 4096])
    conv1_kernel: int = 7
    conv1_stride: int = 2
    contrast_norm: bool = True
    remove: List[str] = field(default_factory=list)
    dropout: float = 0.5


@dataclass
class AnnealConfig:
    """Learning-rate annealing (:mod:`zfnet.train.schedule`; the paper anneals by hand on plateaus)."""

    factor: float = 0.1  # plateau: the rate is multiplied by this ...
    patience: int = 3  # ... after this many epochs without a new best validation error
    min_lr: float = 1e-5  # plateau: never below this; cosine: the rate of the last epoch


@dataclass
class TrainConfig:
    crop: int = 224  # side of the random training crops and the 10 evaluation crops
    epochs: int = 70
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    # paper: N(0, init_std) weights | kaiming: He normal but fc8 | mixed: N(0, init_std) for conv1 and
    # fc8, He normal in between (zfnet.train.loop.init_weights); biases 0
    init: str = "paper"
    init_std: float = 0.01
    renormalize: bool = True  # filter RMS renormalisation
    renorm_radius: float = 0.1
    schedule: str = "plateau"  # plateau: anneal when the validation error plateaus (paper) | cosine: to anneal.min_lr
    anneal: AnnealConfig = field(default_factory=AnnealConfig)
    warmup_epochs: int = 0  # linear warm-up of the learning rate (0 = none, as in the paper)
    crops: str = "ten"  # training crops: ten: one of the paper's 10 sub-crops | random: any window, random flip
    milestones: List[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 30, 40, 64])
    # Crops averaged in the reported evaluation (after the last epoch): 10 = 4 corners + centre,
    # with flips (paper) | 1 = centre. The centre crop is also evaluated every val_every epochs and at
    # every milestone (curves, annealing).
    eval_crops: int = 10
    val_every: int = 1  # centre-crop validation every N epochs (0: only at milestones and the last); plateau needs 1
    # Threads reading training batches ahead (crops and normalisation run where the model is):
    # 0 = auto (on a GPU this rank's share of the cores but two; on a CPU one if the step leaves a core
    # free, else in line), N = always N (zfnet.train.runtime.reader_workers).
    workers: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # bf16 autocast: auto = where the device multiplies bf16 natively (a GPU with bf16 tensor cores, a
    # CPU with AMX or AVX512-BF16), fp32 where bf16 would be emulated | bf16 = always | fp32 = never
    amp: str = "auto"
    channels_last: bool = True  # NHWC layout for training and evaluation (a speed choice, not the recipe)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    input_scale: float = 1.0  # model input = (pixel - per-pixel mean) * input_scale; 1.0 = raw 0..255 (paper)


@dataclass
class VizConfig:
    """The deconvnet figures (docs/paper.md Figs. 2, 4, 6)."""

    split: str = "val"  # scanned for the top-9 (the paper: validation set)
    evolution_split: str = "train"  # scanned at every milestone (the paper: training set)
    max_images: int = 0  # images per split, 0 = all
    batch_size: int = 128
    maps: int = 16  # feature maps shown per layer in Fig. 2
    evolution_maps: int = 4  # maps per layer in Fig. 4
    stable: int = 7  # top-9 images shared with the final epoch that count as converged
    dead_ratio: float = 0.1  # a layer-1 filter is dead below this fraction of the median filter RMS
    max_batch: int = 256  # deconvnet projections per chunk
    device: str = "auto"
    compare: Dict[str, str] = field(default_factory=dict)  # {label: checkpoint} whose filters are drawn too
    out: str = "figures/visualize"


@dataclass
class RetrainConfig:
    """Scheduled retraining (``zfnet retrain``): register the new model as ``challenger``, promote it to ``champion`` if better."""

    model_name: str = "zfnet"  # registered model in the MLflow Model Registry
    target: str = "train"  # DVC stage reproduced (with its upstream stages) by `dvc exp run`
    margin: float = 0.5  # promote only if the held-out top-1 error drops by MORE than this (percentage points)
    eval_crops: int = 10  # crops averaged when challenger and champion are evaluated: 10 (paper) | 1 (centre)


@dataclass
class TransferSyntheticConfig:
    """The drawn transfer datasets (Caltech-101/256 and VOC 2012 layouts), classes distinct from pretraining."""

    caltech101_classes: int = 12
    caltech256_classes: int = 16
    caltech101_images: List[int] = field(default_factory=lambda: [50, 80])  # images per class: [min, max]
    caltech256_images: List[int] = field(default_factory=lambda: [80, 95])
    background_images: int = 20  # BACKGROUND_Google / clutter images (excluded from the experiments)
    voc_images: int = 400  # VOC scenes, half train, half val
    grayscale: float = 0.1  # fraction of Caltech images written as grayscale JPEGs
    min_side: int = 72  # image (Caltech) or grid cell (VOC) sides in [min_side, max_side]
    max_side: int = 96
    seed: int = 1


@dataclass
class ProbeConfig:
    """Per-layer linear probes (docs/paper.md Table 7)."""

    layers: List[str] = field(default_factory=lambda: ["conv1", "conv2", "conv3", "conv4", "conv5", "fc7"])
    caltech101_train: int = 30  # training images per class
    caltech256_train: int = 60


@dataclass
class TransferConfig:
    """Transfer of the trained layers 1-7 to Caltech-101/256 and VOC 2012 (docs/paper.md Tables 4-7, Fig. 9)."""

    source: str = "synthetic"  # synthetic: draw the three datasets | real: read them at the paths below
    caltech101: str = ""  # real: a folder holding 101_ObjectCategories (at any depth <= 3) or an archive of it
    caltech256: str = ""  # real: ... 256_ObjectCategories ...
    voc2012: str = ""  # real: ... VOCdevkit/VOC2012 (or VOC2012) ...
    synthetic: TransferSyntheticConfig = field(default_factory=TransferSyntheticConfig)
    caltech101_train: List[int] = field(default_factory=lambda: [15, 30])  # training images per class
    caltech256_train: List[int] = field(default_factory=lambda: [15, 30, 45, 60])
    test_per_class: int = 50  # test images per class: up to this many of the rest
    splits: int = 5  # random train/test splits
    l2: float = 1e-3  # L2 penalty of the new softmax (on standardised features)
    max_iter: int = 100  # L-BFGS iterations of the new softmax
    voc_views: int = 5  # VOC features: 1 = the centre crop (the paper), 5 = mean over the whole image and its 4 quadrants
    scratch_splits: int = 1  # splits on which the same net is also trained from scratch (the costly part)
    scratch_steps: int = 300  # SGD steps of each training from scratch, whatever the training-set size
    scratch_batch_size: int = 32
    batch_size: int = 256  # images per forward pass when extracting features
    workers: int = 2  # processes drawing the synthetic data
    device: str = "auto"
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    out: str = "figures/transfer"


@dataclass
class AblationConfig:
    """Tables 2, 3 and Fig. 6: the named variants (``zfnet.experiments.variants``), each retrained
    from scratch (``ablate@<variant>`` stages) with the same budget, the baseline ``zfnet`` included."""

    variants: List[str] = field(default_factory=lambda: [
        "zfnet", "no_fc7", "no_fc6_fc7", "no_conv3_conv4", "no_conv3_conv4_fc6_fc7", "fc_narrow", "fc_wide",
        "conv_wide", "conv_wide_fc_wide", "krizhevsky", "no_renorm"])
    epochs: int = 70  # training epochs per variant (train.epochs in the paper)
    seeds: int = 1  # trainings per variant, seeded seed * 1000 + 0, 1, ... (zfnet.experiments.ablation.ablation_seeds)
    size: int = 0  # image side the variants train on (the prepared images resized), 0 = preprocess.size
    crop: int = 0  # their training and test crop, 0 = train.crop
    workers: int = 0  # seeds trained at once (processes sharing the CPU threads), 0 = one per core, at most one per seed
    train_per_class: int = 0  # training images per class (a seeded subset), 0 = all
    maps: int = 8  # conv2 feature maps shown in the Fig. 6 aliasing view (top-9 per map)
    max_images: int = 0  # validation images scanned for that view, 0 = all


@dataclass
class ReportConfig:
    """The HTML report of every figure and table (``report`` stage, ``zfnet.report``)."""

    out: str = "reports"  # index.html + img/
    mlflow_ui: str = ""  # base URL of an MLflow UI (e.g. http://localhost:5000) to link runs; "" = ids only


@dataclass
class OcclusionConfig:
    """Occlusion sensitivity (docs/paper.md Fig. 7) and the pointing game on the known object boxes."""

    patch: int = 16  # side of the grey square, input pixels
    stride: int = 8  # step between square positions, input pixels
    layer: str = "conv5"  # whose strongest feature map gives map (b)
    images: int = 140  # validation images scored (pointing game, projection test), spread over the classes; 0 = all
    figure_images: int = 6  # images shown in the figure (classes spread over the label range)
    max_batch: int = 256  # occluded images per forward pass


@dataclass
class InvarianceConfig:
    """Feature invariance to translation, scale and rotation (docs/paper.md Fig. 5)."""

    images: int = 5  # validation images in the figure: upright and symmetric classes first, then spread
    test_images: int = 140  # validation images the findings are measured on, spread evenly over the classes
    translation: float = 60.0  # largest vertical shift in the paper's pixels at 224 (scaled to the input size)
    scale: List[float] = field(default_factory=lambda: [0.5, 1.8])  # [smallest, largest] scale ratio
    steps: int = 13  # amounts per translation and scale curve
    rotation_step: float = 10.0  # degrees between rotations, 0..360


@dataclass
class CorrespondenceConfig:
    """Correspondence of face parts across images (docs/paper.md Fig. 8, Table 1)."""

    sets: int = 60  # sets of faces (one breed per set, in turn); Delta is reported as mean +- std over sets
    per_set: int = 5  # faces per set (5 in the paper)
    margin: float = 1.0  # pixels added around each part's box when masking it


@dataclass
class AnalyzeConfig:
    """The ``analyze`` stage: occlusion, invariance and correspondence of the trained model."""

    occlusion: OcclusionConfig = field(default_factory=OcclusionConfig)
    invariance: InvarianceConfig = field(default_factory=InvarianceConfig)
    correspondence: CorrespondenceConfig = field(default_factory=CorrespondenceConfig)
    seed: int = 0  # draws the correspondence faces and random masks
    device: str = "auto"
    out: str = "figures/analyze"


@dataclass
class TrackingConfig:
    experiment: str = "zfnet"
    uri: Optional[str] = None  # None: sqlite at <repo>/mlflow.db; MLFLOW_TRACKING_URI wins over both
    log_model: bool = True


@dataclass
class Config:
    profile: str = MISSING
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    viz: VizConfig = field(default_factory=VizConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"{key}: {msg}")


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        _fail(key, f"must be one of {list(choices)}, got {value!r}")


def _check_positive(cfg: Any, prefix: str, names: str, allow_zero: bool = False) -> None:
    for name in names.split():
        value = getattr(cfg, name)
        if value < 0 or (value == 0 and not allow_zero):
            _fail(f"{prefix}.{name}", f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


INT_LIMIT = 2**31  # every count, size and seed fits in int32; larger values overflow inside torch and numpy


def _check_numbers(node: Any, prefix: str = "") -> None:
    """Every number in the config (lists included) is finite, every integer within +-2**31."""
    items = ((f.name, getattr(node, f.name)) for f in fields(node)) if is_dataclass(node) else node.items()
    for name, value in items:
        key = f"{prefix}{name}"
        values = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, v in values:
            where = key if i is None else f"{key}[{i}]"
            if is_dataclass(v) or isinstance(v, dict):
                _check_numbers(v, where + ".")
            elif isinstance(v, float) and not math.isfinite(v):
                _fail(where, f"must be a finite number, got {v}")
            elif isinstance(v, int) and not isinstance(v, bool) and not -INT_LIMIT <= v < INT_LIMIT:
                _fail(where, f"must be within +-2**31, got {v}")


def validate(cfg: Config) -> Config:
    """Check values beyond types, section by section; raise :class:`ConfigError` naming the first bad key."""
    _check_numbers(cfg)
    for key, seed in (("seed", cfg.seed), ("data.synthetic.seed", cfg.data.synthetic.seed),
                      ("transfer.synthetic.seed", cfg.transfer.synthetic.seed), ("analyze.seed", cfg.analyze.seed)):
        if seed < 0:
            _fail(key, f"must be >= 0 (numpy refuses negative seeds), got {seed}")
    _validate_data(cfg.data)
    _check_positive(cfg.preprocess, "preprocess", "size shard_size workers")
    _validate_model(cfg.model)
    _validate_train(cfg.train, cfg.preprocess.size)
    _validate_viz(cfg.viz)
    r = cfg.retrain
    for name in ("model_name", "target"):
        if not getattr(r, name).strip():
            _fail(f"retrain.{name}", "must not be empty")
    _check_positive(r, "retrain", "margin", allow_zero=True)
    _check_choice("retrain.eval_crops", r.eval_crops, (1, 10))
    _validate_transfer(cfg.transfer)
    _validate_ablation(cfg.ablation, cfg.preprocess.size, cfg.train.crop)
    if not cfg.report.out.strip():
        _fail("report.out", "must not be empty")
    if cfg.report.mlflow_ui and not cfg.report.mlflow_ui.startswith(("http://", "https://")):
        _fail("report.mlflow_ui", f"must be an http(s) URL or empty, got {cfg.report.mlflow_ui!r}")
    _validate_analyze(cfg.analyze, cfg.train.crop)
    return cfg


def _validate_data(d: DataConfig) -> None:
    _check_choice("data.source", d.source, ("synthetic", "imagenet"))
    _check_positive(d, "data", "workers")
    syn = d.synthetic
    _check_positive(syn, "data.synthetic", "train_per_class val_per_class min_side max_side")
    if syn.classes < 2:
        _fail("data.synthetic.classes", f"must be >= 2, got {syn.classes}")
    if syn.max_side < syn.min_side:
        _fail("data.synthetic.max_side", f"must be >= min_side ({syn.min_side}), got {syn.max_side}")
    _check_choice("data.synthetic.val_layout", syn.val_layout, ("folders", "flat"))


def _validate_model(m: ModelConfig) -> None:
    _check_choice("model.arch", m.arch, ("zfnet", "krizhevsky"))
    if len(m.widths) != 5 or any(w <= 0 for w in m.widths):
        _fail("model.widths", f"must be 5 positive conv widths (conv1..conv5), got {list(m.widths)}")
    if len(m.fc_sizes) != 2 or any(w <= 0 for w in m.fc_sizes):
        _fail("model.fc_sizes", f"must be 2 positive widths (fc6, fc7), got {list(m.fc_sizes)}")
    _check_positive(m, "model", "conv1_kernel conv1_stride")
    bad = sorted(set(m.remove) - {"conv3", "conv4", "fc6", "fc7"})
    if bad:
        _fail("model.remove", f"only conv3, conv4, fc6, fc7 can be removed, got {bad}")
    if not 0.0 <= m.dropout < 1.0:
        _fail("model.dropout", f"must be in [0, 1), got {m.dropout}")


def _validate_train(t: TrainConfig, size: int) -> None:
    """``size``: ``preprocess.size``, the largest crop."""
    _check_positive(t, "train", "crop epochs batch_size lr init_std renorm_radius input_scale")
    _check_positive(t, "train", "momentum weight_decay warmup_epochs workers threads", allow_zero=True)
    if t.crop > size:
        _fail("train.crop", f"must be <= preprocess.size ({size}), got {t.crop}")
    if t.momentum >= 1.0:
        _fail("train.momentum", f"must be < 1, got {t.momentum}")
    _check_choice("train.init", t.init, ("paper", "kaiming", "mixed"))
    _check_choice("train.schedule", t.schedule, ("plateau", "cosine"))
    _check_choice("train.crops", t.crops, ("ten", "random"))
    _check_positive(t, "train", "val_every", allow_zero=True)
    if t.schedule == "plateau" and t.val_every != 1:
        _fail("train.val_every", f"must be 1 with train.schedule plateau (it anneals on every epoch's validation error), got {t.val_every}")
    _check_choice("train.eval_crops", t.eval_crops, (1, 10))
    _check_choice("train.device", t.device, ("auto", "cpu", "cuda"))
    _check_choice("train.amp", t.amp, ("auto", "bf16", "fp32"))
    if not 0.0 < t.anneal.factor < 1.0:
        _fail("train.anneal.factor", f"must be in (0, 1), got {t.anneal.factor}")
    _check_positive(t.anneal, "train.anneal", "patience min_lr", allow_zero=True)
    for i, ms in enumerate(t.milestones):
        if not 1 <= ms <= t.epochs:
            _fail(f"train.milestones[{i}]", f"epoch {ms} is outside 1..train.epochs ({t.epochs})")
    if list(t.milestones) != sorted(set(t.milestones)):
        _fail("train.milestones", f"must be strictly increasing, got {list(t.milestones)}")


def _validate_viz(v: VizConfig) -> None:
    _check_choice("viz.split", v.split, ("train", "val"))
    _check_choice("viz.evolution_split", v.evolution_split, ("train", "val"))
    _check_choice("viz.device", v.device, ("auto", "cpu", "cuda"))
    _check_positive(v, "viz", "batch_size maps evolution_maps max_batch")
    _check_positive(v, "viz", "max_images", allow_zero=True)
    if not 1 <= v.stable <= 9:
        _fail("viz.stable", f"must be in 1..9 (of the top-9), got {v.stable}")
    if not 0.0 < v.dead_ratio < 1.0:
        _fail("viz.dead_ratio", f"must be in (0, 1), got {v.dead_ratio}")


def _validate_ablation(a: AblationConfig, size: int, crop: int) -> None:
    """``size``, ``crop``: ``preprocess.size`` and ``train.crop``, what 0 means. The variant names
    themselves are checked where the catalogue is known (:func:`zfnet.experiments.variants.check_variants`)."""
    if len(set(a.variants)) != len(a.variants):
        _fail("ablation.variants", f"lists a variant twice: {list(a.variants)}")
    _check_positive(a, "ablation", "epochs maps")
    _check_positive(a, "ablation", "train_per_class max_images size crop workers", allow_zero=True)
    if not 1 <= a.seeds <= 1000:
        _fail("ablation.seeds", f"must be in 1..1000 (trainings per variant), got {a.seeds}")
    if (a.crop or crop) > (a.size or size):
        _fail("ablation.crop", f"must be <= the ablation's image side ({a.size or size}), got {a.crop or crop}")
    if a.size > size:
        _fail("ablation.size", f"must be <= preprocess.size ({size}): the variants train on the prepared images, shrunk, got {a.size}")


def _validate_analyze(an: "AnalyzeConfig", crop: int) -> None:
    o, inv, c = an.occlusion, an.invariance, an.correspondence
    _check_positive(o, "analyze.occlusion", "patch stride figure_images max_batch")
    _check_positive(o, "analyze.occlusion", "images", allow_zero=True)
    if o.patch > crop:
        _fail("analyze.occlusion.patch", f"must be <= train.crop ({crop}), got {o.patch}")
    _check_choice("analyze.occlusion.layer", o.layer, ("conv1", "conv2", "conv3", "conv4", "conv5"))
    _check_positive(inv, "analyze.invariance", "images test_images translation steps rotation_step")
    if len(inv.scale) != 2 or not 0 < inv.scale[0] < inv.scale[1]:
        _fail("analyze.invariance.scale", f"must be [smallest, largest] with 0 < smallest < largest, got {list(inv.scale)}")
    _check_positive(c, "analyze.correspondence", "sets")
    _check_positive(c, "analyze.correspondence", "margin", allow_zero=True)
    if c.per_set < 2:
        _fail("analyze.correspondence.per_set", f"must be >= 2 (Delta compares pairs), got {c.per_set}")
    _check_choice("analyze.device", an.device, ("auto", "cpu", "cuda"))


def _validate_transfer(tr: "TransferConfig") -> None:
    _check_choice("transfer.source", tr.source, ("synthetic", "real"))
    if tr.source == "real":
        for name in ("caltech101", "caltech256", "voc2012"):
            if not getattr(tr, name).strip():
                _fail(f"transfer.{name}", "must name a folder or archive when transfer.source is real")
    syn = tr.synthetic
    _check_positive(syn, "transfer.synthetic", "caltech101_classes caltech256_classes voc_images min_side")
    _check_positive(syn, "transfer.synthetic", "background_images", allow_zero=True)
    for name in ("caltech101_classes", "caltech256_classes"):
        if getattr(syn, name) < 2:
            _fail(f"transfer.synthetic.{name}", f"must be >= 2, got {getattr(syn, name)}")
    if syn.max_side < syn.min_side:
        _fail("transfer.synthetic.max_side", f"must be >= min_side ({syn.min_side}), got {syn.max_side}")
    if not 0.0 <= syn.grayscale <= 1.0:
        _fail("transfer.synthetic.grayscale", f"must be in [0, 1], got {syn.grayscale}")
    if syn.voc_images < 2:
        _fail("transfer.synthetic.voc_images", f"must be >= 2 (train and val), got {syn.voc_images}")
    p = tr.probe
    for ds in ("caltech101", "caltech256"):
        lo_hi = list(getattr(syn, f"{ds}_images"))
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            _fail(f"transfer.synthetic.{ds}_images", f"must be [min, max] with 0 < min <= max, got {lo_hi}")
        counts = list(getattr(tr, f"{ds}_train")) + [getattr(p, f"{ds}_train")]
        if not counts[:-1] or any(n < 1 for n in counts):
            _fail(f"transfer.{ds}_train", f"must be a non-empty list of positive counts, got {counts[:-1]}")
        if tr.source == "synthetic" and max(counts) >= lo_hi[0]:
            _fail(f"transfer.{ds}_train", f"{max(counts)} training images per class leave no test image: "
                  f"transfer.synthetic.{ds}_images draws as few as {lo_hi[0]}")
    _check_positive(tr, "transfer", "test_per_class splits max_iter scratch_steps scratch_batch_size batch_size workers")
    _check_positive(tr, "transfer", "l2", allow_zero=True)
    if not 0 <= tr.scratch_splits <= tr.splits:
        _fail("transfer.scratch_splits", f"must be in 0..transfer.splits ({tr.splits}), got {tr.scratch_splits}")
    _check_choice("transfer.device", tr.device, ("auto", "cpu", "cuda"))
    _check_choice("transfer.voc_views", tr.voc_views, (1, 5))
    bad = sorted(set(p.layers) - {"conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"})
    if bad or not p.layers:
        _fail("transfer.probe.layers", f"must be a non-empty list of conv1..conv5, fc6, fc7, got {list(p.layers)}")


def from_dict(raw: Any, source: str = "params") -> Config:
    """Merge a plain mapping onto :class:`Config` and validate it.

    Raises :class:`ConfigError` ``"<source>: <key>: <problem>"`` for an unknown key, a wrong type,
    a missing required key or an invalid value.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(raw))
        OmegaConf.to_container(merged, throw_on_missing=True)
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{source}: {key}: {first_line(exc)}") from None
    try:
        return validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_params(path: str | Path = "params.yaml") -> Config:
    """Read ``params.yaml`` (DVC's composed Hydra config) into a validated :class:`Config`."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {first_line(exc)}") from None
    return from_dict(raw, str(path))


def compose(overrides: list[str] | None = None, conf_dir: str | Path = "conf") -> dict:
    """Compose ``conf/`` with Hydra overrides, as ``dvc exp run -S`` does, into a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(Path(conf_dir).resolve()), version_base="1.3"):
            return OmegaConf.to_container(hydra_compose("config", overrides=overrides or []), resolve=True)  # type: ignore[return-value]
    except HydraException as exc:
        raise ConfigError(hydra_error(exc, conf_dir)) from None
    finally:
        GlobalHydra.instance().clear()


def to_dict(cfg: Config) -> dict:
    """The config as plain nested dicts and lists (for YAML, MLflow, JSON)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 0.01}}`` -> ``{"train.lr": 0.01}`` (lists kept as values)."""
    out: dict = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def hydra_error(exc: Exception, conf_dir: str | Path = "conf") -> str:
    """One line for a Hydra composition error, with the valid choices: the options of a config
    group (``experiment=nonexistent``), the keys of a section (``train.lrr=1``), the override
    grammar (``foo``)."""
    from hydra.errors import MissingConfigException, OverrideParseException

    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("See ")]
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"{conf_dir}/: no config {name!r} in group {group!r}; choose from: {', '.join(exc.options or []) or 'none'}"
    if isinstance(exc, OverrideParseException):
        return f"override {exc.override!r}: {lines[-1]} (an override is KEY=VALUE, e.g. train.lr=0.02)"
    first = lines[0] if lines else type(exc).__name__
    if first.startswith("Could not override '"):
        return unknown_key(first.removeprefix("Could not override '").removesuffix("'."))
    return "; ".join(lines) or first


def unknown_key(dotted: str) -> str:
    """Why ``dotted`` is no key of :class:`Config`, naming the keys valid where it goes wrong."""
    node: Any = Config()
    parts = dotted.split(".")
    for i, name in enumerate(parts):
        keys = [f.name for f in fields(node)]
        where = ".".join(parts[:i]) or "the config"
        if name not in keys:
            return f"override {dotted}: no key {name!r} in {where}; keys: {', '.join(keys)}"
        node = getattr(node, name)
        if not is_dataclass(node):
            return f"override {dotted}: {'.'.join(parts[: i + 1])} is a value, not a section"
    return f"override {dotted}: not a value but a section; keys: {', '.join(f.name for f in fields(node))}"


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of config dataclass ``cls`` (lists: a fresh copy), for a
    command-line option that mirrors it: one source of truth for both."""
    import dataclasses

    f = {f.name: f for f in fields(cls)}[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def config_key(cls: type, name: str) -> str:
    """The params key of field ``name`` of section dataclass ``cls``
    (``OcclusionConfig``, ``"stride"`` -> ``"analyze.occlusion.stride"``)."""

    def walk(node: Any, prefix: str) -> str | None:
        for f in fields(node):
            value = getattr(node, f.name)
            if type(value) is cls:
                return f"{prefix}{f.name}.{name}"
            found = walk(value, f"{prefix}{f.name}.") if is_dataclass(value) else None
            if found:
                return found
        return None

    key = walk(Config(), "")
    if key is None:
        raise KeyError(f"{cls.__name__} is not a section of Config")
    return key
