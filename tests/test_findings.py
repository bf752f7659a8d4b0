"""The findings registry: each verdict function on hand-made metrics (holds, fails, inconclusive),
the stage's output, ``zfnet findings``, and the README's table kept in sync with metrics/findings.json."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from zfnet import findings as F
from zfnet.cli.findings import differences, row_agreement, with_findings
from zfnet.stats import mean_se, sign_test

REPO = Path(__file__).resolve().parents[1]


def ablated(val: float, train: float, sd: float = 0.5, **extra) -> dict:
    return {"seeds": [0, 1], "val_images": 1000, "val_top1_error_mean": val, "val_top1_error_sd": sd,
            "train_top1_error_mean": train, "train_top1_error_sd": sd, "dominance_mean": 1.5, "dominance_sd": 0.05,
            "filters_at_radius_mean": 0.05, **extra}


def paper_like() -> dict:
    """Metrics of a run where every claim goes the paper's way, well beyond its noise."""
    return {
        "train_details": {"val_top1_error": 15.0, "val_top1_error_center_crop": 19.0, "chance_top1_error": 92.9, "val_images": 1120,
                          "crops_nll_gain": 0.05, "crops_nll_gain_se": 0.01, "crops_fixed_images": 60, "crops_broken_images": 15},
        "visualize": {"top9_purity_chance": 0.2, **{f"top9_purity_conv{i}_mean": 0.2 + 0.15 * i for i in range(1, 6)},
                      **{f"top9_purity_conv{i}_se": 0.02 for i in range(1, 6)},
                      **{f"cka_converged_epoch_conv{i}": e for i, e in zip(range(1, 6), (5, 10, 20, 30, 40))},
                      **{f"cka_settled_conv{i}": 1.0 - 0.15 * i for i in range(1, 6)},
                      **{f"cka_settled_conv{i}_se": 0.02 for i in range(1, 6)}},
        "analyze": {"invariance_images": 140, "invariance_translation_l7_below_l1": 0.9, "invariance_scale_l7_below_l1": 0.85,
                    "invariance_translation_l1_over_l7": 2.0, "invariance_scale_l1_over_l7": 1.5,
                    "invariance_original_top1": 0.9, "invariance_translation_top1": 0.8, "invariance_scale_top1": 0.75,
                    "invariance_rotation_prob_upright": 0.2, "invariance_rotation_prob_upright_se": 0.03,
                    "invariance_rotation_prob_symmetric": 0.8, "invariance_rotation_prob_symmetric_se": 0.03,
                    "invariance_rotation_images_upright": 70, "invariance_rotation_images_symmetric": 40,
                    "pointing_game": 0.9, "pointing_game_chance": 0.4, "pointing_game_images": 140,
                    "occlusion_projection_corr_mean": 0.4, "occlusion_projection_corr_se": 0.03, "occlusion_images": 140,
                    "correspondence_gap_layer5_mean": 0.05, "correspondence_gap_layer5_se": 0.005,
                    "correspondence_gap_layer7_mean": 0.01, "correspondence_gap_layer5_minus_layer7_mean": 0.04,
                    "correspondence_gap_layer5_minus_layer7_se": 0.005, "correspondence_sets": 60},
        "ablate": {"zfnet": ablated(30.0, 25.0), "no_fc7": ablated(30.5, 26.0), "no_fc6_fc7": ablated(35.0, 30.0),
                   "no_conv3_conv4": ablated(36.0, 31.0), "no_conv3_conv4_fc6_fc7": ablated(60.0, 58.0),
                   "conv_wide": ablated(25.0, 18.0), "fc_wide": ablated(29.5, 15.0), "krizhevsky": ablated(38.0, 30.0),
                   "no_renorm": ablated(31.0, 25.0, dominance_mean=2.5)},
        "ablation": {"seeds": 2, "filters_zfnet_mid_share_mean": 0.4, "filters_zfnet_mid_share_sd": 0.01,
                     "filters_krizhevsky_mid_share_mean": 0.25, "filters_krizhevsky_mid_share_sd": 0.01,
                     "filters_zfnet_dead_fraction_mean": 0.0, "filters_krizhevsky_dead_fraction_mean": 0.1},
        "transfer_caltech101": {"n15": {"train_per_class": 15, "pretrained_accuracy": 60.0, "pretrained_accuracy_std": 2.0,
                                        "pretrained_runs": 5, "scratch_accuracy": 20.0, "test_images": 600}},
        "transfer_caltech256": {"n15": {"train_per_class": 15, "pretrained_accuracy": 50.0, "pretrained_accuracy_std": 2.0,
                                        "pretrained_runs": 5, "scratch_accuracy": 15.0, "test_images": 800}},
        "transfer_voc2012": {"pretrained_map": 40.0, "scratch_map": 15.0, "map_minus_scratch_se": 2.0},
        "probe": {"caltech101": {**{f"accuracy_{l}": a for l, a in zip(("conv1", "conv2", "conv3", "conv4", "conv5", "fc7"),
                                                                         (20, 40, 55, 60, 62, 58))},
                                 **{f"accuracy_std_{l}": 2.0 for l in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc7")},
                                 "splits": 5}},
    }


def verdicts(data: dict) -> dict[str, str]:
    return {f["id"]: f["verdict"] for f in F.judge_all(F.Metrics(data))["findings"]}


def test_every_claim_holds_on_paper_like_numbers_and_the_registry_has_at_least_12():
    got = verdicts(paper_like())
    assert len(F.FINDINGS) >= 12 and len({f.id for f in F.FINDINGS}) == len(F.FINDINGS)
    assert set(got.values()) == {F.HOLDS}, {k: v for k, v in got.items() if v != F.HOLDS}


@pytest.mark.parametrize("claim, change, expected", [
    ("trains", {"train_details": {"val_top1_error": 91.0}}, F.FAILS),
    ("trains", {"train_details": {"crops_fixed_images": 20}}, F.INCONCLUSIVE),  # 20 vs 15: McNemar p = 0.5
    ("trains", {"train_details": {"crops_broken_images": 60, "crops_fixed_images": 15}}, F.FAILS),  # the centre crop wins
    ("class_specific", {"visualize": {"top9_purity_conv5_mean": 0.35}}, F.INCONCLUSIVE),
    ("class_specific", {"visualize": {"top9_purity_conv5_mean": 0.1}}, F.FAILS),
    ("converge_bottom_up", {"visualize": {"cka_settled_conv1": 0.3}}, F.INCONCLUSIVE),
    ("converge_bottom_up", {"visualize": {"cka_settled_conv1": 0.1}}, F.FAILS),
    ("converge_bottom_up", {"visualize": {"cka_converged_epoch_conv1": 64}}, F.INCONCLUSIVE),  # the second view disagrees
    ("layer7_steadier", {"analyze": {"invariance_scale_l7_below_l1": 0.55}}, F.INCONCLUSIVE),
    ("layer7_steadier", {"analyze": {"invariance_scale_l7_below_l1": 0.1}}, F.FAILS),
    ("output_stable", {"analyze": {"invariance_scale_top1": 0.3}}, F.FAILS),
    ("rotation", {"analyze": {"invariance_rotation_prob_upright": 0.78}}, F.INCONCLUSIVE),
    ("rotation", {"analyze": {"invariance_rotation_prob_upright": 0.99}}, F.FAILS),
    ("renorm", {"ablate": {"zfnet": {"filters_at_radius_mean": 0.0}}}, F.INCONCLUSIVE),  # the radius never acted
    ("renorm", {"ablate": {"no_renorm": {"dominance_mean": 1.0}}}, F.FAILS),
    ("krizhevsky_filters", {"ablation": {"filters_krizhevsky_dead_fraction_mean": 0.0, "filters_zfnet_dead_fraction_mean": 0.2}},
     F.INCONCLUSIVE),
    ("pointing", {"analyze": {"pointing_game": 0.42}}, F.INCONCLUSIVE),
    ("projection", {"analyze": {"occlusion_projection_corr_mean": -0.3}}, F.FAILS),
    ("correspondence_layer5", {"analyze": {"correspondence_gap_layer5_mean": 0.005}}, F.INCONCLUSIVE),
    ("correspondence_layer5", {"analyze": {"correspondence_gap_layer5_mean": -0.05}}, F.FAILS),
    ("correspondence_layer7", {"analyze": {"correspondence_gap_layer5_minus_layer7_mean": -0.03}}, F.FAILS),
    ("kernel_stride", {"ablate": {"krizhevsky": {"val_top1_error_mean": 31.0}}}, F.INCONCLUSIVE),
    ("kernel_stride", {"ablate": {"krizhevsky": {"val_top1_error_mean": 20.0}}}, F.FAILS),
    ("no_fc7", {"ablate": {"no_fc7": {"val_top1_error_mean": 40.0}}}, F.FAILS),
    ("no_fc7", {"ablate": {"no_fc7": {"val_top1_error_sd": 6.0}, "zfnet": {"val_top1_error_sd": 6.0}}}, F.INCONCLUSIVE),
    ("depth", {"ablate": {"no_conv3_conv4_fc6_fc7": {"val_top1_error_mean": 36.5}}}, F.INCONCLUSIVE),
    ("conv_wide", {"ablate": {"conv_wide": {"val_top1_error_mean": 36.0}}}, F.FAILS),
    ("fc_wide_overfits", {"ablate": {"fc_wide": {"train_top1_error_mean": 40.0}}}, F.FAILS),
    ("fc_wide_overfits", {"ablate": {"fc_wide": {"train_top1_error_mean": 25.0}}}, F.INCONCLUSIVE),
    ("transfer", {"transfer_voc2012": {"scratch_map": 39.0}}, F.INCONCLUSIVE),
    ("probe_depth", {"probe": {"caltech101": {"accuracy_conv2": 80}}}, F.INCONCLUSIVE),  # best layer not in the upper half
])
def test_a_verdict_follows_its_numbers(claim, change, expected):
    data = copy.deepcopy(paper_like())
    for source, values in change.items():
        for key, value in values.items():
            if isinstance(value, dict):
                data[source][key].update(value)
            else:
                data[source][key] = value
    assert verdicts(data)[claim] == expected


def test_a_claim_whose_numbers_are_missing_is_inconclusive_and_says_why():
    data = paper_like()
    del data["analyze"]
    result = F.judge_all(F.Metrics(data))
    rows = {f["id"]: f for f in result["findings"]}
    assert rows["pointing"]["verdict"] == F.INCONCLUSIVE and "no metrics/analyze.json" in rows["pointing"]["detail"]
    assert result["holds"] + result["fails"] + result["inconclusive"] == len(F.FINDINGS)


def test_stats_helpers():
    assert mean_se([1.0, 3.0]) == (2.0, 1.0) and mean_se([5.0]) == (5.0, 0.0)
    assert sign_test([1] * 10) == pytest.approx(2 / 2**10) and sign_test([1, -1]) == 1.0


def test_load_metrics_reads_only_the_configured_variants(tmp_path):
    (tmp_path / "ablate").mkdir()
    (tmp_path / "train.json").write_text('{"val_top1_error": 1.0}')
    for v in ("zfnet", "stale"):
        (tmp_path / "ablate" / f"{v}.json").write_text("{}")
    m = F.load_metrics(tmp_path, ["zfnet", "no_fc7"])
    assert set(m.data["ablate"]) == {"zfnet"} and m("train", "val_top1_error") == 1.0


def test_compare_lists_the_verdicts_that_changed():
    a = F.judge_all(F.Metrics(paper_like()))
    flipped = paper_like()
    flipped["analyze"]["pointing_game"] = 0.1
    b = F.judge_all(F.Metrics(flipped))
    assert differences(a, b) == [("pointing", F.HOLDS, F.FAILS)]


def test_ablation_rows_of_two_runs_agree_within_two_sd():
    a = {"zfnet": ablated(30.0, 25.0, sd=1.0), "no_fc7": ablated(30.0, 25.0, sd=1.0), "only_a": ablated(1.0, 1.0)}
    b = {"zfnet": ablated(31.9, 25.0, sd=0.5), "no_fc7": ablated(33.0, 25.0, sd=1.0)}
    assert row_agreement(a, b) == [("zfnet", 30.0, 1.0, 31.9, 0.5, True), ("no_fc7", 30.0, 1.0, 33.0, 1.0, False)]
    # two seeds that agree to 0.1 points: the sd is floored at the binomial error on 1000 images (about 1.1 points)
    close = {"zfnet": ablated(12.1, 8.0, sd=0.0)}
    assert row_agreement(close, {"zfnet": ablated(13.3, 8.0, sd=0.4)})[0][-1]
    assert not row_agreement(close, {"zfnet": ablated(15.5, 8.0, sd=0.4)})[0][-1]


def test_readme_block_is_replaced_between_the_markers():
    text = "intro\n<!-- findings:start -->\nold\n<!-- findings:end -->\nrest\n"
    assert with_findings(text, "new\n") == "intro\n<!-- findings:start -->\nnew\n<!-- findings:end -->\nrest\n"
    with pytest.raises(ValueError):
        with_findings("no markers", "x")


def test_readme_shows_the_committed_findings():
    """The README's findings table is `zfnet findings --markdown` of the committed metrics/findings.json."""
    result = json.loads((REPO / "metrics/findings.json").read_text())
    readme = (REPO / "README.md").read_text()
    assert with_findings(readme, F.markdown(result)) == readme, "run: zfnet findings --readme README.md"
