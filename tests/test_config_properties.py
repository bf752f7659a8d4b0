"""Property-based tests of the config validation (hypothesis, derandomized): every invalid value of
a key, drawn at random, gives one ConfigError line naming that key, and every stage stops on it
before writing anything."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zfnet.config import Config, ConfigError, compose, from_dict
from zfnet.stages import (ablate, ablation_report, analyze, data, findings, preprocess, probe, report, train,
                          transfer, transfer_data, visualize)
from zfnet.stages.common import run_stage

REPO = Path(__file__).resolve().parents[1]
BASE = compose(["experiment=tiny"], REPO / "conf")
PROPERTY = settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def schema(node=Config, prefix: str = "") -> dict[str, object]:
    """``{dotted key: annotated type}`` of every leaf of the config schema."""
    out: dict[str, object] = {}
    hints = typing.get_type_hints(node)
    for f in fields(node):
        kind = hints[f.name]
        if is_dataclass(kind):
            out.update(schema(kind, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = kind
    return out


SCHEMA = schema()
SEEDS = ["seed", "data.synthetic.seed", "transfer.synthetic.seed", "analyze.seed"]
# What validate() promises, key by key (the test's specification of the schema).
POSITIVE = """data.synthetic.train_per_class data.synthetic.val_per_class data.synthetic.min_side
    data.synthetic.max_side preprocess.size preprocess.shard_size preprocess.workers model.conv1_kernel
    model.conv1_stride train.crop train.epochs train.batch_size train.lr train.init_std train.renorm_radius
    train.input_scale viz.batch_size viz.maps viz.evolution_maps viz.max_batch transfer.synthetic.caltech101_classes
    transfer.synthetic.caltech256_classes transfer.synthetic.voc_images transfer.synthetic.min_side
    transfer.test_per_class transfer.splits transfer.max_iter transfer.scratch_steps transfer.scratch_batch_size
    transfer.batch_size transfer.workers ablation.epochs ablation.maps analyze.occlusion.patch analyze.occlusion.stride
    analyze.occlusion.figure_images analyze.occlusion.max_batch analyze.invariance.images
    analyze.invariance.translation analyze.invariance.steps analyze.invariance.rotation_step
    analyze.correspondence.sets""".split()
NON_NEGATIVE = """train.momentum train.weight_decay train.warmup_epochs train.workers train.threads
    train.anneal.patience train.anneal.min_lr viz.max_images retrain.margin transfer.synthetic.background_images
    transfer.l2 ablation.train_per_class ablation.max_images analyze.occlusion.images
    analyze.correspondence.margin""".split() + SEEDS
RANGES = {  # key: (lowest valid, highest valid, whether each end is included)
    "model.dropout": (0.0, 1.0, (True, False)),
    "train.momentum": (0.0, 1.0, (True, False)),
    "train.anneal.factor": (0.0, 1.0, (False, False)),
    "viz.dead_ratio": (0.0, 1.0, (False, False)),
    "transfer.synthetic.grayscale": (0.0, 1.0, (True, True)),
    "viz.stable": (1, 9, (True, True)),
    "data.synthetic.classes": (2, None, (True, True)),
    "analyze.correspondence.per_set": (2, None, (True, True)),
    "transfer.synthetic.caltech101_classes": (2, None, (True, True)),
    "transfer.synthetic.caltech256_classes": (2, None, (True, True)),
}
CHOICES = {
    "data.source": ["synthetic", "imagenet"],
    "data.synthetic.val_layout": ["folders", "flat"],
    "model.arch": ["zfnet", "krizhevsky"],
    "train.init": ["paper", "kaiming"],
    "train.eval_crops": [1, 10],
    "retrain.eval_crops": [1, 10],
    "train.device": ["auto", "cpu", "cuda"],
    "train.amp": ["auto", "bf16", "fp32"],
    "viz.device": ["auto", "cpu", "cuda"],
    "transfer.device": ["auto", "cpu", "cuda"],
    "analyze.device": ["auto", "cpu", "cuda"],
    "viz.split": ["train", "val"],
    "viz.evolution_split": ["train", "val"],
    "transfer.source": ["synthetic", "real"],
    "analyze.occlusion.layer": ["conv1", "conv2", "conv3", "conv4", "conv5"],
}
NUMBERS = sorted(k for k, t in SCHEMA.items() if t in (int, float))
BOOLS = sorted(k for k, t in SCHEMA.items() if t is bool)
BOOL_WORDS = {"y", "yes", "on", "true", "n", "no", "off", "false"}  # what OmegaConf reads as a bool


def with_value(key: str, value) -> dict:
    """The tiny profile with ``key`` (dotted) set to ``value``."""
    raw = copy.deepcopy(BASE)
    *parents, leaf = key.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[leaf] = value
    return raw


def assert_names_key(raw: dict, key: str) -> str:
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    message = str(err.value)
    assert key in message and "\n" not in message, f"{key}: {message!r}"
    return message


def not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


def out_of_range(key: str) -> st.SearchStrategy:
    lo, hi, (lo_in, hi_in) = RANGES[key]
    integer = SCHEMA[key] is int
    below = (st.integers(max_value=lo - 1 if lo_in else lo) if integer
             else st.floats(max_value=lo, exclude_max=lo_in, allow_nan=False))
    if hi is None:
        return below
    above = (st.integers(min_value=hi + 1 if hi_in else hi) if integer
             else st.floats(min_value=hi, exclude_min=hi_in, allow_nan=False))
    return below | above


def non_positive(key: str, allow_zero: bool) -> st.SearchStrategy:
    if SCHEMA[key] is int:
        return st.integers(max_value=-1 if allow_zero else 0)
    return st.floats(max_value=0.0, exclude_max=allow_zero, allow_nan=False) | st.integers(max_value=-1)


@st.composite
def invalid_value(draw) -> tuple[str, object]:
    """``(key, value)``: one key of the schema and a value it must refuse."""
    kind = draw(st.sampled_from(["sign", "range", "non-finite", "huge", "type", "bool", "choice"]))
    if kind == "sign":
        key = draw(st.sampled_from(POSITIVE + NON_NEGATIVE))
        return key, draw(non_positive(key, allow_zero=key in NON_NEGATIVE))
    if kind == "range":
        key = draw(st.sampled_from(sorted(RANGES)))
        return key, draw(out_of_range(key))
    if kind == "non-finite":
        key = draw(st.sampled_from([k for k in NUMBERS if SCHEMA[k] is float]))
        return key, draw(st.sampled_from([float("nan"), float("inf"), float("-inf"), "nan", "inf"]))
    if kind == "huge":
        key = draw(st.sampled_from([k for k in NUMBERS if SCHEMA[k] is int]))
        return key, draw(st.integers(min_value=2**31, max_value=2**80) | st.integers(max_value=-(2**31) - 1))
    if kind == "type":
        key = draw(st.sampled_from(NUMBERS))
        wrong = (st.text("abcdefghijklmnopqrstuvwxyz_ ", min_size=1, max_size=8).filter(not_a_number)
                 | st.booleans() | st.lists(st.integers(0, 9), min_size=1, max_size=3)
                 | st.dictionaries(st.sampled_from("abc"), st.integers(0, 9), min_size=1, max_size=2))
        if SCHEMA[key] is int:
            wrong = wrong | st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v != int(v))
        return key, draw(wrong)
    if kind == "bool":
        key = draw(st.sampled_from(BOOLS))
        return key, draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8).filter(
            lambda v: v.lower() not in BOOL_WORDS) | st.lists(st.booleans(), min_size=1, max_size=2))
    key = draw(st.sampled_from(sorted(CHOICES)))
    if isinstance(CHOICES[key][0], int):
        return key, draw(st.integers(-1000, 1000).filter(lambda v: v not in CHOICES[key]))
    return key, draw(st.text(max_size=10).filter(lambda v: v not in CHOICES[key])
                     | st.lists(st.sampled_from(CHOICES[key]), min_size=1, max_size=2))


def test_the_specification_covers_the_schema():
    """Every key named above exists, and the base config is valid (so a refusal is the drawn value's)."""
    named = set(POSITIVE) | set(NON_NEGATIVE) | set(RANGES) | set(CHOICES)
    assert named <= set(SCHEMA), named - set(SCHEMA)
    assert len(NUMBERS) > 60 and len(BOOLS) == 4
    from_dict(BASE)


@settings(PROPERTY, max_examples=60)
@given(invalid_value())
def test_an_invalid_value_is_refused_naming_its_key(drawn):
    key, value = drawn
    assert_names_key(with_value(key, value), key)


@PROPERTY
@given(section=st.sampled_from([""] + sorted({k.rsplit(".", 1)[0] + "." for k in SCHEMA if "." in k})),
       name=st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True), value=st.integers() | st.text(max_size=5))
def test_an_unknown_key_is_refused_naming_it(section, name, value):
    key = f"{section}{name}"
    if key in SCHEMA or f"{key}." in {k[: len(key) + 1] for k in SCHEMA}:
        return  # drew a real key or section
    assert_names_key(with_value(key, value), key)


@PROPERTY
@given(epochs=st.integers(1, 60), beyond=st.integers(1, 10**6), where=st.integers(0, 3))
def test_a_milestone_beyond_the_epochs_is_refused(epochs, beyond, where):
    milestones = list(range(1, min(epochs, where) + 1))
    milestones.insert(len(milestones), epochs + beyond)
    raw = with_value("train.epochs", epochs)
    raw["train"]["milestones"] = milestones
    assert_names_key(raw, f"train.milestones[{len(milestones) - 1}]")


@PROPERTY
@given(widths=st.lists(st.integers(-5, 64), min_size=0, max_size=7).filter(
    lambda w: len(w) != 5 or min(w) <= 0))
def test_bad_conv_widths_are_refused(widths):
    assert_names_key(with_value("model.widths", widths), "model.widths")


@PROPERTY
@given(lr=st.floats(min_value=1e-6, max_value=10.0), momentum=st.floats(min_value=0.0, max_value=0.999),
       epochs=st.integers(1, 100), dropout=st.floats(min_value=0.0, max_value=0.99))
def test_valid_values_are_accepted(lr, momentum, epochs, dropout):
    """The other side of the property: values inside the documented ranges validate."""
    raw = with_value("train.lr", lr)
    raw["train"].update(momentum=momentum, epochs=epochs, milestones=[epochs])
    raw["model"]["dropout"] = dropout
    cfg = from_dict(raw)
    assert (cfg.train.lr, cfg.train.epochs, cfg.model.dropout) == (lr, epochs, dropout)


STAGES = {
    "data": data.main, "preprocess": preprocess.main, "train": train.main, "visualize": visualize.main,
    "analyze": analyze.main, "ablate": lambda cfg: ablate.main(cfg, "zfnet"), "ablation_report": ablation_report.main,
    "transfer_data": transfer_data.main, "transfer": lambda cfg: transfer.main(cfg, "caltech101"),
    "probe": probe.main, "findings": findings.main, "report": report.main,
}


def assert_every_stage_refuses(raw: dict, key: str) -> None:
    """In-process run of every stage entry point in an empty folder holding only ``raw`` as
    params.yaml: each exits 2 with one line naming ``key`` and writes nothing."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "params.yaml").write_text(yaml.safe_dump(raw))
        cwd, handlers = os.getcwd(), logging.root.handlers[:]
        os.chdir(folder)
        try:
            for name, body in STAGES.items():
                stderr = io.StringIO()
                with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
                    run_stage(name, body)
                assert exit_.value.code == 2, name
                lines = stderr.getvalue().strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith(f"zfnet {name}: error: params.yaml: "), lines
                assert key in lines[0]
            assert os.listdir(folder) == ["params.yaml"]
        finally:
            os.chdir(cwd)
            logging.root.handlers[:] = handlers  # run_stage's logging setup stays inside this test


@settings(PROPERTY, max_examples=6)
@given(invalid_value())
def test_every_stage_stops_on_an_invalid_value_before_writing_anything(drawn):
    key, value = drawn
    assert_every_stage_refuses(with_value(key, value), key)


def test_every_stage_stops_on_an_unknown_variant_before_writing_anything():
    """The variant names are checked by the stages' config loading, not by zfnet.config (no import
    cycle), with the same one line as any bad value."""
    assert_every_stage_refuses(with_value("ablation.variants", ["zfnet", "no_layer9"]), "ablation.variants[1]")
