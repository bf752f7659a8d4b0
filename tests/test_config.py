"""Config: params.yaml is the composed default, profiles compose, bad values fail naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from zfnet.config import ConfigError, compose, from_dict, load_params, to_dict

REPO = Path(__file__).resolve().parents[1]


def composed(overrides: list[str] | None = None) -> dict:
    return compose(overrides, REPO / "conf")


def test_params_yaml_is_the_composed_default():
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == composed()


def test_default_validates_and_round_trips():
    cfg = load_params(REPO / "params.yaml")
    assert cfg.profile == "default"
    assert to_dict(cfg) == composed()


def test_paper_profile_is_the_papers_recipe():
    cfg = from_dict(composed(["experiment=paper"]))
    assert cfg.profile == "paper"
    assert cfg.data.source == "imagenet"
    assert cfg.preprocess.size == 256
    m, t = cfg.model, cfg.train
    assert (m.arch, list(m.widths), list(m.fc_sizes), m.conv1_kernel, m.conv1_stride) == (
        "zfnet", [96, 256, 384, 384, 256], [4096, 4096], 7, 2)
    assert m.contrast_norm and m.dropout == 0.5 and m.remove == []
    assert (t.crop, t.batch_size, t.lr, t.momentum, t.epochs) == (224, 128, 0.01, 0.9, 70)
    assert (t.init, t.init_std, t.renormalize, t.renorm_radius) == ("paper", 0.01, True, 0.1)
    assert t.milestones == [1, 2, 5, 10, 20, 30, 40, 64]
    assert (t.eval_crops, t.input_scale, t.warmup_epochs, t.weight_decay) == (10, 1.0, 0, 0.0)


def test_group_overrides_compose():
    cfg = from_dict(composed(["model=krizhevsky", "train.lr=0.02"]))
    assert cfg.model.arch == "krizhevsky" and cfg.train.lr == 0.02


@pytest.mark.parametrize(
    "path, value, key",
    [
        ("train.lr", -0.01, "train.lr"),
        ("train.lr", "fast", "train.lr"),
        ("train.bogus", 1, "train.bogus"),
        ("train.milestones", [1, 2, 99], "train.milestones[2]"),
        ("train.crop", 200, "train.crop"),  # larger than preprocess.size (128)
        ("model.arch", "vgg", "model.arch"),
        ("model.remove", ["conv1"], "model.remove"),
        ("model.widths", [1, 2, 3], "model.widths"),
        ("data.synthetic.classes", 1, "data.synthetic.classes"),
        ("train.anneal.factor", 1.5, "train.anneal.factor"),
        ("train.eval_crops", 3, "train.eval_crops"),
    ],
)
def test_bad_value_names_the_key(path, value, key):
    raw = composed()
    node = raw
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError) as err:
        from_dict(raw)
    message = str(err.value)
    assert key in message and "\n" not in message


def test_missing_profile_is_reported():
    raw = composed()
    del raw["profile"]
    with pytest.raises(ConfigError, match="profile"):
        from_dict(raw)


def test_bad_params_file_stops_the_stage_before_any_work(tmp_path):
    raw = composed()
    raw["train"]["lr"] = -1.0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for stage in ("data", "preprocess", "train"):
        proc = subprocess.run([sys.executable, "-m", f"zfnet.stages.{stage}"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"zfnet {stage}: error:") and "train.lr" in last
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_unreadable_params_file(tmp_path):
    (tmp_path / "params.yaml").write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
