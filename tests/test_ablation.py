"""Ablations (Tables 2, 3, Fig. 6): variants, budget, real tiny trainings, the report stage, the queued sweep."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_project, tiny_project, tiny_raw
from zfnet.config import ConfigError, compose, from_dict
from zfnet.experiments import ablation as A
from zfnet.experiments import ablation_report as R
from zfnet.experiments.variants import VARIANTS, check_variants, hydra_overrides, variant_config, variant_overrides
from zfnet.models import build
from zfnet.train.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]


def ablation_raw(variants=("zfnet", "krizhevsky", "no_renorm")) -> dict:
    """The tests' tiny profile with these ablation variants."""
    return tiny_raw(f"ablation.variants=[{','.join(variants)}]")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_prepared) -> Path:
    """A tiny project folder: the tiny profile's prepared data and params.yaml."""
    return tiny_project(tmp_path_factory.mktemp("ablation"), tiny_prepared, ablation_raw())


def test_each_variant_changes_what_its_name_says():
    cfg = from_dict(compose([], REPO / "conf"))  # the default profile: widths 24/64/96/96/64, fc 512
    models = {name: build(variant_config(cfg, name).model, 10, cfg.train.crop) for name in VARIANTS}
    assert models["zfnet"].layer_names() == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert "fc7" not in models["no_fc7"].layer_names() and "fc6" in models["no_fc7"].layer_names()
    assert models["no_conv3_conv4_fc6_fc7"].layer_names() == ["conv1", "conv2", "conv5", "fc8"]
    assert models["fc_narrow"].layer("fc6").linear.out_features == 256
    assert models["fc_wide"].layer("fc7").linear.out_features == 1024
    widths = [models["conv_wide"].layer(f"conv{i}").conv.out_channels for i in range(1, 6)]
    assert widths == [24, 64, 128, 256, 128]  # 96 x 4/3, 96 x 8/3, 64 x 2: the paper's 512/1024/512 ratios
    conv1 = models["krizhevsky"].layer("conv1").conv
    assert conv1.kernel_size == (11, 11) and conv1.stride == (4, 4)
    assert variant_overrides(cfg, "zfnet") == {}
    assert variant_overrides(cfg, "no_renorm") == {"train.renormalize": False}
    assert not variant_config(cfg, "no_renorm").train.renormalize


def test_krizhevsky_on_crops_too_small_for_11x11_stride_4_uses_the_whole_image():
    cfg = from_dict(ablation_raw())  # 56-pixel crops of 64-pixel images
    changes = variant_overrides(cfg, "krizhevsky")
    assert changes["train.crop"] == 64
    with pytest.raises(RuntimeError):
        build(variant_config(cfg, "krizhevsky").model, 4, 56)
    assert build(variant_config(cfg, "krizhevsky").model, 4, 64)(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    assert "train.crop" not in variant_overrides(cfg, "no_fc7")


@pytest.mark.parametrize("name", ["no_conv3_conv4_fc6_fc7", "conv_wide_fc_wide", "krizhevsky", "no_renorm"])
def test_hydra_overrides_compose_to_the_variant(name):
    """The -S overrides of the queued sweep give exactly the config the ablate stage trains."""
    base = from_dict(compose(["experiment=tiny"], REPO / "conf"))
    via_hydra = from_dict(compose(["experiment=tiny", *hydra_overrides(variant_overrides(base, name))], REPO / "conf"))
    assert via_hydra == variant_config(base, name) != base


def test_ablation_config_is_validated():
    cfg = from_dict(ablation_raw(variants=("zfnet", "no_layer9")))  # the schema alone: a list of names
    with pytest.raises(ConfigError, match=r"^params: ablation\.variants\[1\]: must be one of \['zfnet', .*got 'no_layer9'$"):
        check_variants(cfg, "params")
    with pytest.raises(ConfigError, match="ablation.variants: lists a variant twice"):
        from_dict(ablation_raw(variants=("zfnet", "zfnet")))
    raw = ablation_raw()
    raw["ablation"]["epochs"] = 0
    with pytest.raises(ConfigError, match="ablation.epochs: must be > 0"):
        from_dict(raw)


def test_per_class_subset_is_balanced_and_seeded():
    labels = np.repeat(np.arange(4), [10, 3, 7, 10])
    chosen = A.per_class_subset(labels, 5, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [5, 3, 5, 5]
    assert np.array_equal(chosen, A.per_class_subset(labels, 5, seed=0))
    assert not np.array_equal(chosen, A.per_class_subset(labels, 5, seed=1))
    assert np.array_equal(A.per_class_subset(labels, 0, seed=0), np.arange(len(labels)))


def test_aggregate_gives_mean_and_sd_over_seeds_and_keeps_equal_counts():
    per_seed = [{"seed": 0, "val_top1_error": 20.0, "val_images": 100, "epochs": 3, "dominance": 1.5},
                {"seed": 1, "val_top1_error": 30.0, "val_images": 100, "epochs": 3, "dominance": 1.5}]
    out = A.aggregate(per_seed)
    assert out["seeds"] == [0, 1] and out["val_images"] == 100 and out["epochs"] == 3
    assert out["val_top1_error_mean"] == 25.0 and out["val_top1_error_sd"] == pytest.approx(np.sqrt(50), abs=1e-4)  # 4 decimals
    assert out["dominance_mean"] == 1.5 and out["dominance_sd"] == 0.0  # floats always get mean and sd
    assert A.aggregate(per_seed[:1])["val_top1_error_sd"] == 0.0


def test_ablation_scale_and_budget_apply_before_the_variant():
    cfg = from_dict(compose([], REPO / "conf"))  # default: ablations at 72 px, 64-pixel crops
    vcfg = A.ablation_config(cfg, "krizhevsky", seed=1)
    assert (vcfg.preprocess.size, vcfg.train.crop, vcfg.seed) == (72, 64, 1)
    assert vcfg.train.epochs == cfg.ablation.epochs and vcfg.train.milestones == [] and vcfg.train.val_every == 0
    assert vcfg.train.schedule == cfg.train.schedule == "cosine"  # the main run's converging schedule
    assert vcfg.model.conv1_kernel == 11


def test_every_paper_ablation_is_a_valid_config():
    """The paper profile anneals on plateaus, so its ablations validate every epoch (as its main run does)."""
    cfg = from_dict(compose(["experiment=paper"], REPO / "conf"))
    for name in cfg.ablation.variants:
        vcfg = A.ablation_config(cfg, name)
        assert vcfg.train.schedule == "plateau" and vcfg.train.val_every == 1 and vcfg.train.crop == 224


def test_resized_dataset_shrinks_images_and_mean_with_an_area_filter():
    class Data:
        classes, class_names, num_classes = ["a", "b"], ["a", "b"], 2

        def __len__(self):
            return 2

        def get_batch(self, idx):
            images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4).to(torch.uint8)
            return images[list(idx)], torch.tensor([0, 1])[list(idx)]

    mean = torch.ones(3, 4, 4) * 10
    small = A.Resized(Data(), 2, mean)
    images, labels = small.get_batch([1])
    full = Data().get_batch([1])[0].float()
    assert images.shape == (1, 3, 2, 2) and labels.tolist() == [1]
    assert images[0, 0, 0, 0] == torch.round(full[0, 0, :2, :2].mean())
    assert torch.equal(small.mean, torch.full((3, 2, 2), 10.0)) and small.size == 2


def test_tables_put_the_papers_numbers_beside_our_means_over_seeds():
    results = {name: {"seeds": [0, 1], **{f"{k}_{s}": (1.0 + i if s == "mean" else 0.5)
                                          for k in R.ERRORS for s in ("mean", "sd")}}
               for i, name in enumerate(VARIANTS)}
    t3 = R.table3(results)
    assert list(t3["variant"]) == list(VARIANTS)
    row = t3.set_index("variant").loc["krizhevsky"]
    assert (row["paper_train_top1_error"], row["paper_val_top1_error"], row["paper_val_top5_error"]) == (35.1, 40.5, 18.1)
    assert row["val_top1_error_mean"] == results["krizhevsky"]["val_top1_error_mean"] and row["val_top1_error_sd"] == 0.5
    assert row["seeds"] == 2 and row["val_top1_error_vs_zfnet"] == results["krizhevsky"]["val_top1_error_mean"] - 1.0
    assert np.isnan(t3.set_index("variant").loc["no_renorm", "paper_val_top1_error"])
    t2 = R.table2(results).set_index("variant")
    assert t2.loc["conv_wide", "paper_val_top1_error"] == 37.5 and t2.loc["conv_wide", "val_top5_error_sd"] == 0.5
    assert np.isnan(t2.loc["-", "val_top1_error_mean"])  # Krizhevsky et al.'s own net: not run here


def test_ablate_and_report_stages_on_tiny_data(project, monkeypatch):
    """One epoch per variant, real code end to end: models, metrics, MLflow child runs, tables, figures."""
    from zfnet.config import load_params
    from zfnet.stages import ablate, ablation_report

    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    cfg = load_params()
    for variant in cfg.ablation.variants:
        ablate.main(cfg, variant)
    metrics = json.loads((project / "metrics/ablate/krizhevsky.json").read_text())
    assert metrics["crop"] == 64 and metrics["epochs"] == 1 and metrics["train_images"] == 4 * 12
    assert metrics["seeds"] == [0, 1] and [m["seed"] for m in metrics["per_seed"]] == [0, 1]  # seed 0: 0, 1
    assert 0 <= metrics["val_top1_error_mean"] <= 100 and metrics["val_top1_error_sd"] >= 0
    for seed in (0, 1):
        model, ckpt = load_model(project / f"models_ablation/krizhevsky/seed-{seed}/model.pt")
        assert model.layer("conv1").conv.kernel_size == (11, 11) and ckpt["variant"] == "krizhevsky"
    assert not (project / ".zfnet/state/ablate/krizhevsky").exists()

    ablation_report.main(cfg)
    table = (project / "results/ablation.csv").read_text().splitlines()
    assert len(table) == 1 + 3 and table[0].startswith("variant,change,paper row,paper base,seeds")
    assert "val_top1_error_mean,val_top1_error_sd" in table[0]
    md = (project / "results/ablation.md").read_text()
    assert "## Table 3" in md and "40.50" in md and "2 seeds each" in md
    for path in ("errors.png", "filters_conv1.png", "zfnet/filters_conv1.png", "no_renorm/filters_conv1.png",
                 "krizhevsky/top9_conv2.png", "zfnet/top9_conv2.png"):
        assert (project / "figures/ablation" / path).stat().st_size > 1000, path
    summary = json.loads((project / "metrics/ablation.json").read_text())
    assert summary["krizhevsky_val_top1_error_mean"] == metrics["val_top1_error_mean"]
    assert summary["seeds"] == 2 and "filters_no_renorm_dominance_mean" in summary

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("zfnet").experiment_id])
    variants = {r.data.tags["variant"]: r for r in runs if r.data.tags.get("stage") == "ablate"}
    assert set(variants) == set(cfg.ablation.variants)
    names = {frozenset(r.data.metrics) for r in variants.values()}
    assert len(names) == 1 and {"final_val_top1_error_mean", "seed0.train_top1_error", "seed1.val_top1_error"} <= next(iter(names))
    assert len({r.data.tags["mlflow.parentRunId"] for r in variants.values()}) == 1


@pytest.mark.slow
def test_queued_sweep_runs_the_variants_as_dvc_experiments(tmp_path):
    """`zfnet ablation queue` + `dvc queue start` once, on the tiny profile in a git copy of the repo."""
    root, env = make_project(tmp_path / "project")

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        return proc.stdout

    run("zfnet", "ablation", "queue", "no_fc7", "krizhevsky", "-S", "experiment=tiny")
    assert run("dvc", "queue", "status").count("Queued") == 2
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run("dvc", "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        if "Running" not in status and "0 active" in status:
            # (re)start the worker: DVC's celery worker can exit after a task on a broker read error
            run("dvc", "queue", "start", "-j", "1")
        time.sleep(3)
    assert status.count("Success") == 2, status + run("dvc", "queue", "logs", "ablate-no_fc7")
    shown = json.loads(run("dvc", "exp", "show", "--json"))
    exps = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs", []):
                params = rev["data"]["params"]["params.yaml"]["data"]
                exps[rev["name"]] = params
    assert exps["ablate-no_fc7"]["model"]["remove"] == ["fc7"]
    assert exps["ablate-krizhevsky"]["model"]["arch"] == "krizhevsky"
    assert exps["ablate-krizhevsky"]["train"]["crop"] == 64 and exps["ablate-krizhevsky"]["profile"] == "tiny"
