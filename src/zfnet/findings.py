"""The paper's claims as tested verdicts: one declarative entry per claim (docs/findings.md).

Each :class:`Finding` names the claim in one sentence, where the paper makes it, the statistic
that measures it on our run and the test with its threshold; its ``judge`` turns the run's metrics
(every stage's ``metrics/*.json``, :func:`load_metrics`) into a :class:`Verdict`:

- ``holds``: the statistic goes the paper's way by more than its noise (:data:`zfnet.stats.Z`
  standard errors, or the stated threshold);
- ``fails``: it goes the other way by more than its noise;
- ``inconclusive``: inside its noise, or the run cannot measure it (a stage not run, too few
  samples, a mechanism that never acted); the detail says which.

A difference inside its own noise never counts as holding. :func:`judge_all` writes the list that
``metrics/findings.json``, the report and the README's findings table show.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from zfnet.stats import Z, binomial_se, sign_test

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim on one run: ``verdict``, the statistic's ``value``, the
    ``threshold`` it was held against, and the numbers behind it in words (``detail``)."""

    verdict: str
    value: float | None = None
    threshold: float | None = None
    detail: str = ""


class Missing(KeyError):
    """A metric the judge needs is not in the run (its stage did not run or the profile skips it)."""


class Metrics:
    """The run's metrics, ``{file stem: {key: value}}`` (``ablate`` holds ``{variant: {...}}``);
    :meth:`__call__` reads one number and raises :class:`Missing` when it is absent."""

    def __init__(self, data: dict[str, Any]):
        self.data = data

    def __call__(self, source: str, *keys: str) -> Any:
        node: Any = self.data.get(source)
        where = f"metrics/{source}/{keys[0]}.json" if source == "ablate" and keys else f"metrics/{source}.json"
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise Missing(f"{where} has no {'.'.join(keys)}" if node else f"no {where}")
            node = node[key]
        if node is None:
            raise Missing(f"{where} has no {'.'.join(keys)}")
        return node


def load_metrics(folder: str | Path = "metrics", variants: Sequence[str] = ()) -> Metrics:
    """Every ``<folder>/*.json`` by file stem, and ``<folder>/ablate/<variant>.json`` of each of
    ``variants`` (the run's ``ablation.variants``; files of others are stale) as ``{"ablate": {variant: ...}}``."""
    folder = Path(folder)
    data: dict[str, Any] = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem != "findings"}
    files = {v: folder / "ablate" / f"{v}.json" for v in variants}
    data["ablate"] = {v: json.loads(p.read_text()) for v, p in files.items() if p.is_file()}
    return Metrics(data)


def compare(diff: float, se: float, what: str, threshold: float | None = None) -> Verdict:
    """``holds`` when ``diff`` (the paper's direction positive) exceeds ``Z * se`` (or ``threshold``
    where given), ``fails`` when ``-diff`` does, else ``inconclusive``; ``what`` describes the numbers."""
    bar = Z * se if threshold is None else threshold
    if not (math.isfinite(diff) and math.isfinite(bar)):
        return Verdict(INCONCLUSIVE, diff, bar, f"{what}: not measurable")
    verdict = HOLDS if diff > bar else FAILS if diff < -bar else INCONCLUSIVE
    note = {HOLDS: "beyond its noise", FAILS: "the other way, beyond its noise", INCONCLUSIVE: "inside its noise"}[verdict]
    return Verdict(verdict, round(diff, 4), round(bar, 4), f"{what}; difference {diff:+.3g} vs noise {bar:.3g}: {note}")


@dataclass(frozen=True)
class Finding:
    """One claim of the paper and how our run judges it."""

    id: str
    paper: str  # where the paper makes it
    claim: str  # in one sentence
    statistic: str  # what is measured
    test: str  # and how it is decided
    judge: Callable[[Metrics], Verdict]


# --- Sec. 3, Figs. 2, 4 -------------------------------------------------------------------------

def _trains(m: Metrics) -> Verdict:
    err, centre = m("train_details", "val_top1_error"), m("train_details", "val_top1_error_center_crop")
    chance, n = m("train_details", "chance_top1_error"), m("train_details", "val_images")
    se = binomial_se(err, n)
    what = f"val top-1 error {err:.1f}% (10-crop) vs {centre:.1f}% (centre crop), chance {chance:.1f}%, {n} images"
    if err + Z * se >= chance / 2:  # far below chance: under half of it, beyond the noise
        return Verdict(FAILS if err - Z * se > chance / 2 else INCONCLUSIVE, err, chance / 2, what + ": not far below chance")
    fixed, broken = int(m("train_details", "crops_fixed_images")), int(m("train_details", "crops_broken_images"))
    gain, gain_se = m("train_details", "crops_nll_gain"), m("train_details", "crops_nll_gain_se")
    p = sign_test([1.0] * fixed + [-1.0] * broken)  # McNemar's exact test on the images the two disagree on
    detail = (f"{what}; the 10 crops fix {fixed} images the centre crop gets wrong and break {broken} "
              f"(McNemar exact p={p:.2g}); the true class's log-probability gains {gain:+.4f} +- {gain_se:.4f} "
              "nats per image")
    verdict = INCONCLUSIVE if p >= 0.05 else HOLDS if fixed > broken else FAILS
    return Verdict(verdict, fixed - broken, 0.05, detail)


def _class_specific(m: Metrics) -> Verdict:
    layers = [l for l in ("conv1", "conv2", "conv3", "conv4", "conv5") if f"top9_purity_{l}_mean" in m.data.get("visualize", {})]
    if len(layers) < 2:
        raise Missing("metrics/visualize.json has no top-9 purity")
    low, high = layers[0], layers[-1]
    means = {l: m("visualize", f"top9_purity_{l}_mean") for l in layers}
    ses = {l: m("visualize", f"top9_purity_{l}_se") for l in layers}
    what = ("top-9 class purity " + ", ".join(f"{l} {means[l]:.2f}" for l in layers)
            + f" (chance {m('visualize', 'top9_purity_chance'):.2f}); {high} minus {low}")
    return compare(means[high] - means[low], math.hypot(ses[high], ses[low]), what)


def _converge_bottom_up(m: Metrics) -> Verdict:
    layers = [l for l in ("conv1", "conv2", "conv3", "conv4", "conv5") if f"cka_settled_{l}" in m.data.get("visualize", {})]
    if len(layers) < 2:
        raise Missing("metrics/visualize.json has no CKA of the milestones")
    settled = {l: m("visualize", f"cka_settled_{l}") for l in layers}
    low, high = layers[0], layers[-1]
    se = math.hypot(m("visualize", f"cka_settled_{low}_se"), m("visualize", f"cka_settled_{high}_se"))
    epochs = ", ".join(f"{l} {m('visualize', f'cka_converged_epoch_{l}')}" for l in layers)
    what = ("mean linear CKA with the final model over the earlier milestones: "
            + ", ".join(f"{l} {v:.2f}" for l, v in settled.items()) + f" (first epoch at CKA >= 0.9: {epochs}); "
            f"{low} minus {high}")
    verdict = compare(settled[low] - settled[high], se, what)
    first = {l: m("visualize", f"cka_converged_epoch_{l}") for l in (low, high)}
    if verdict.verdict == HOLDS and first[low] > first[high]:  # the second view says the opposite
        return Verdict(INCONCLUSIVE, verdict.value, verdict.threshold,
                       f"{verdict.detail}; but {low} reaches CKA 0.9 only at epoch {first[low]}, after {high} "
                       f"(epoch {first[high]}): the two views disagree")
    return verdict


# --- Fig. 5 ---------------------------------------------------------------------------------------

def _layer7_steadier(m: Metrics) -> Verdict:
    n = int(m("analyze", "invariance_images"))
    parts, worst = [], 0.0
    for kind in ("translation", "scale"):
        share = m("analyze", f"invariance_{kind}_l7_below_l1")
        k = round(share * n)
        p = sign_test([1.0] * k + [-1.0] * (n - k))
        parts.append(f"{kind}: layer 7 moved less than layer 1 for {k}/{n} images (sign test p={p:.2g}), "
                     f"ratio of mean distances {m('analyze', f'invariance_{kind}_l1_over_l7'):.2f}")
        worst = max(worst, p if share > 0.5 else 1.0)
        if share < 0.5 and p < 0.05:
            return Verdict(FAILS, share, 0.5, "; ".join(parts))
    return Verdict(HOLDS if worst < 0.05 else INCONCLUSIVE, worst, 0.05, "; ".join(parts))


def _output_stable(m: Metrics) -> Verdict:
    base = m("analyze", "invariance_original_top1")
    kept = {kind: m("analyze", f"invariance_{kind}_top1") for kind in ("translation", "scale")}
    ratio = min(kept.values()) / max(base, 1e-9)
    what = (f"top-1 accuracy {base:.2f} untransformed; {kept['translation']:.2f} over the translations, "
            f"{kept['scale']:.2f} over the scales; worst kept share {ratio:.2f}")
    verdict = HOLDS if ratio >= 0.75 else FAILS if ratio < 0.5 else INCONCLUSIVE
    return Verdict(verdict, round(ratio, 4), 0.75, what + " (holds at >= 0.75 of the untransformed accuracy, fails below 0.5)")


def _rotation(m: Metrics) -> Verdict:
    up, sym = m("analyze", "invariance_rotation_prob_upright"), m("analyze", "invariance_rotation_prob_symmetric")
    se = math.hypot(m("analyze", "invariance_rotation_prob_upright_se"), m("analyze", "invariance_rotation_prob_symmetric_se"))
    what = (f"P(true class) at rotations of 60-300 degrees: {up:.2f} for upright classes "
            f"({int(m('analyze', 'invariance_rotation_images_upright'))} images), {sym:.2f} for rotation-symmetric ones "
            f"({int(m('analyze', 'invariance_rotation_images_symmetric'))}); symmetric minus upright")
    return compare(sym - up, se, what)


# --- Figs. 6, 7 -----------------------------------------------------------------------------------

def _ablation(m: Metrics, variant: str, key: str) -> tuple[float, float]:
    """Mean over seeds and its standard error: seed spread / sqrt(seeds), and for error rates the
    validation set's binomial noise (the same images for every seed)."""
    run = m("ablate", variant)
    mean, sd, seeds = run[f"{key}_mean"], run[f"{key}_sd"], len(run["seeds"])
    var = sd**2 / seeds
    if key.endswith("_error"):
        var += binomial_se(mean, run["val_images"]) ** 2
    return mean, math.sqrt(var)


def _renorm(m: Metrics) -> Verdict:
    at_radius = m("ablate", "zfnet", "filters_at_radius_mean")
    (base, se_b), (free, se_f) = _ablation(m, "zfnet", "dominance"), _ablation(m, "no_renorm", "dominance")
    what = f"max / median layer-1 filter RMS: {free:.2f} without renormalisation, {base:.2f} with"
    if at_radius == 0:
        return Verdict(INCONCLUSIVE, free - base, None, what + "; no filter ever reached the radius, so renormalisation never acted")
    return compare(free - base, math.hypot(se_b, se_f), what + f" (at most {at_radius:.1%} of the filters at the radius)")


def _krizhevsky_filters(m: Metrics) -> Verdict:
    ab = m("ablation")
    mid_z, mid_k = ab["filters_zfnet_mid_share_mean"], ab["filters_krizhevsky_mid_share_mean"]
    dead_z, dead_k = ab["filters_zfnet_dead_fraction_mean"], ab["filters_krizhevsky_dead_fraction_mean"]
    seeds = ab["seeds"]
    se = math.hypot(ab["filters_zfnet_mid_share_sd"], ab["filters_krizhevsky_mid_share_sd"]) / math.sqrt(seeds)
    what = f"mid-frequency share {mid_z:.2f} (7x7/2) vs {mid_k:.2f} (11x11/4); dead filters {dead_z:.2f} vs {dead_k:.2f}"
    v = compare(mid_z - mid_k, se, what + "; mid share 7x7/2 minus 11x11/4")
    if v.verdict == HOLDS and dead_k < dead_z:
        return Verdict(INCONCLUSIVE, v.value, v.threshold, v.detail + "; but the 11x11/4 layer has fewer dead filters")
    return v


def _pointing(m: Metrics) -> Verdict:
    hit, chance, n = m("analyze", "pointing_game"), m("analyze", "pointing_game_chance"), int(m("analyze", "pointing_game_images"))
    se = math.sqrt(chance * (1 - chance) / n)
    return compare(hit - chance, se, f"the probability map's minimum on the object in {hit:.1%} of {n} images, chance {chance:.1%}")


def _projection(m: Metrics) -> Verdict:
    corr, se = m("analyze", "occlusion_projection_corr_mean"), m("analyze", "occlusion_projection_corr_se")
    return compare(corr, se, f"correlation over occluder positions between the drop of the strongest conv5 map's activity "
                             f"and how much of its projection the square covers: {corr:.2f} (mean over "
                             f"{int(m('analyze', 'occlusion_images'))} images)")


# --- Table 1 --------------------------------------------------------------------------------------

def _correspondence5(m: Metrics) -> Verdict:
    gap, se = m("analyze", "correspondence_gap_layer5_mean"), m("analyze", "correspondence_gap_layer5_se")
    return compare(gap, se, f"layer 5: Delta of random masks minus Delta of the parts, {gap:.3f} (mean over "
                            f"{int(m('analyze', 'correspondence_sets'))} sets)")


def _correspondence7(m: Metrics) -> Verdict:
    d, se = m("analyze", "correspondence_gap_layer5_minus_layer7_mean"), m("analyze", "correspondence_gap_layer5_minus_layer7_se")
    g7 = m("analyze", "correspondence_gap_layer7_mean")
    return compare(d, se, f"the random-minus-parts gap at layer 7 is {g7:.3f}; layer-5 gap minus layer-7 gap, paired over sets")


# --- Tables 2, 3 ----------------------------------------------------------------------------------

def _worse(a: str, b: str, what: str):
    """Judge "variant ``a`` has a higher validation error than ``b``"."""
    def judge(m: Metrics) -> Verdict:
        (ea, sa), (eb, sb) = _ablation(m, a, "val_top1_error"), _ablation(m, b, "val_top1_error")
        return compare(ea - eb, math.hypot(sa, sb), f"val top-1 error {ea:.1f}% ({a}) vs {eb:.1f}% ({b}); {what}")
    return judge


def _no_fc7_free(m: Metrics) -> Verdict:
    (e7, s7), (ez, sz) = _ablation(m, "no_fc7", "val_top1_error"), _ablation(m, "zfnet", "val_top1_error")
    bar, diff = Z * math.hypot(s7, sz), e7 - ez
    what = f"val top-1 error {e7:.1f}% without layer 7 vs {ez:.1f}% with; difference {diff:+.1f} vs noise {bar:.1f}"
    if diff > bar:
        return Verdict(FAILS, diff, bar, what + ": removing layer 7 costs more than the noise")
    if bar > 5.0:
        return Verdict(INCONCLUSIVE, diff, bar, what + ": the noise is too large to call a cost of nothing")
    return Verdict(HOLDS, diff, bar, what + ": no cost beyond the noise (and the noise under 5 points)")


def _depth(m: Metrics) -> Verdict:
    (e, s) = _ablation(m, "no_conv3_conv4_fc6_fc7", "val_top1_error")
    singles = {v: _ablation(m, v, "val_top1_error") for v in ("no_fc6_fc7", "no_conv3_conv4")}
    worst = max(singles, key=lambda v: singles[v][0])
    ew, sw = singles[worst]
    return compare(e - ew, math.hypot(s, sw), f"val top-1 error {e:.1f}% without layers 3,4,6,7; "
                   + ", ".join(f"{v} {singles[v][0]:.1f}%" for v in singles) + f"; minus the worse single removal ({worst})")


def _fc_overfit(m: Metrics) -> Verdict:
    (tz, stz), (tw, stw) = _ablation(m, "zfnet", "train_top1_error"), _ablation(m, "fc_wide", "train_top1_error")
    (vz, svz), (vw, svw) = _ablation(m, "zfnet", "val_top1_error"), _ablation(m, "fc_wide", "val_top1_error")
    fall_train, fall_val = tz - tw, vz - vw
    return compare(fall_train - fall_val, math.sqrt(stz**2 + stw**2 + svz**2 + svw**2),
                   f"wider fc6/7: train error falls {fall_train:+.1f}, val error {fall_val:+.1f} points; train fall minus val fall")


# --- Tables 4-7 -----------------------------------------------------------------------------------

def _transfer(m: Metrics) -> Verdict:
    parts, verdicts = [], []
    for ds in ("caltech101", "caltech256"):
        for size, row in sorted(m(f"transfer_{ds}").items(), key=lambda kv: kv[1]["train_per_class"]):
            if "scratch_accuracy" not in row:
                continue
            se = math.hypot(row["pretrained_accuracy_std"] / math.sqrt(row["pretrained_runs"]),
                            binomial_se(100 - row["scratch_accuracy"], row["test_images"]))
            v = compare(row["pretrained_accuracy"] - row["scratch_accuracy"], se, "")
            verdicts.append(v.verdict)
            parts.append(f"{ds} {row['train_per_class']}/class {row['pretrained_accuracy']:.1f} vs {row['scratch_accuracy']:.1f}")
    voc = m("transfer_voc2012")
    if "scratch_map" in voc:
        v = compare(voc["pretrained_map"] - voc["scratch_map"], voc.get("map_minus_scratch_se", math.nan), "")
        verdicts.append(v.verdict)
        parts.append(f"VOC mAP {voc['pretrained_map']:.1f} vs {voc['scratch_map']:.1f}")
    if not verdicts:
        raise Missing("no transfer setting trained from scratch")
    verdict = HOLDS if all(v == HOLDS for v in verdicts) else FAILS if FAILS in verdicts else INCONCLUSIVE
    held = sum(v == HOLDS for v in verdicts)
    return Verdict(verdict, float(held), float(len(verdicts)),
                   f"pretrained vs from scratch (%): {'; '.join(parts)}; {held} of {len(verdicts)} beyond their noise")


def _probe_depth(m: Metrics) -> Verdict:
    parts, verdicts = [], []
    for ds, r in m("probe").items():
        layers = [k.removeprefix("accuracy_") for k in r if k.startswith("accuracy_") and not k.startswith("accuracy_std_")]
        top = max(layers[1:], key=lambda l: r[f"accuracy_{l}"])
        se = math.hypot(r[f"accuracy_std_{layers[0]}"], r[f"accuracy_std_{top}"]) / math.sqrt(r["splits"])
        v = compare(r[f"accuracy_{top}"] - r[f"accuracy_{layers[0]}"], se, "")
        deep = layers.index(top) >= len(layers) // 2
        verdicts.append(v.verdict if deep or v.verdict != HOLDS else INCONCLUSIVE)
        parts.append(f"{ds}: " + " / ".join(f"{r[f'accuracy_{l}']:.0f}" for l in layers)
                     + f" ({'/'.join(layers)}), best {top}")
    verdict = HOLDS if all(v == HOLDS for v in verdicts) else FAILS if FAILS in verdicts else INCONCLUSIVE
    return Verdict(verdict, None, None, "; ".join(parts) + "; holds when the best layer is in the upper half and beats "
                   "layer 1 beyond the split-to-split noise")


FINDINGS: tuple[Finding, ...] = (
    Finding("trains", "Sec. 3", "ZFNet trains with the paper's recipe: validation error far below chance, 10 crops better than the centre crop",
            "val top-1 error (10-crop); the images that 10 crops and the centre crop classify differently",
            "error + 2 SE below half of chance; then McNemar's exact test on those images, p < 0.05", _trains),
    Finding("class_specific", "Fig. 2", "Higher layers are more class-specific",
            "class purity of each live map's top-9 images, per layer", "top conv layer minus conv1 beyond 2 SE", _class_specific),
    Finding("converge_bottom_up", "Fig. 4", "Lower layers converge within a few epochs, upper layers only late",
            "mean linear CKA of each layer with the final model over the earlier milestones", "conv1 minus the top conv layer beyond 2 SE (bootstrap over images), and conv1 first at CKA >= 0.9 no later than the top layer",
            _converge_bottom_up),
    Finding("layer7_steadier", "Fig. 5", "Small translations and scalings move layer 7 less than layer 1",
            "per image: mean normalised distance to the original at layer 7 vs layer 1", "sign test over the images, p < 0.05, for both transforms", _layer7_steadier),
    Finding("output_stable", "Fig. 5", "The output is stable to translation and scaling",
            "top-1 accuracy over the transformed images / untransformed", ">= 0.75 holds, < 0.5 fails", _output_stable),
    Finding("rotation", "Fig. 5", "The output is not invariant to rotation, except for rotation-symmetric objects",
            "P(true class) at 60-300 degrees, rotation-symmetric minus upright classes", "beyond 2 SE", _rotation),
    Finding("renorm", "Fig. 6a", "Renormalisation stops a few layer-1 filters from dominating",
            "max / median layer-1 filter RMS, without minus with renormalisation (ablation seeds)", "beyond 2 SE; inconclusive if no filter reached the radius", _renorm),
    Finding("krizhevsky_filters", "Fig. 6b,d", "The 11x11/4 first layer covers mid frequencies less (and has more dead filters) than 7x7/2",
            "share of filter power in the mid band, 7x7/2 minus 11x11/4 (ablation seeds)", "beyond 2 SE, and no fewer dead filters", _krizhevsky_filters),
    Finding("pointing", "Fig. 7", "Occlusion finds the object, not the context",
            "share of images whose probability-map minimum lies in the object box, minus chance", "beyond 2 binomial SE", _pointing),
    Finding("projection", "Fig. 7b,c", "The strongest layer-5 map's activity drops where its own projection is occluded",
            "per image: correlation between the activity drop and the projection under the occluder", "mean beyond 2 SE", _projection),
    Finding("correspondence_layer5", "Table 1", "Masking the same part changes layer-5 features more consistently than random masks",
            "Delta(random) minus Delta(parts), per set of 5 faces", "mean over sets beyond 2 SE", _correspondence5),
    Finding("correspondence_layer7", "Table 1", "... and less so at layer 7",
            "layer-5 gap minus layer-7 gap, per set", "mean over sets beyond 2 SE", _correspondence7),
    Finding("kernel_stride", "Table 2", "ZFNet's 7x7/2 first layer beats the 11x11/4 Krizhevsky replica",
            "val top-1 error, replica minus ZFNet (ablation seeds)", "beyond 2 SE (seeds and validation set)",
            _worse("krizhevsky", "zfnet", "replica minus ZFNet")),
    Finding("no_fc7", "Table 3", "Removing layer 7 alone costs almost nothing",
            "val top-1 error without minus with layer 7", "not worse beyond 2 SE, with 2 SE under 5 points", _no_fc7_free),
    Finding("depth", "Table 3", "Removing layers 3,4,6,7 together is far worse than removing 6,7 or 3,4",
            "val top-1 error without 3,4,6,7 minus the worse single removal", "beyond 2 SE", _depth),
    Finding("conv_wide", "Table 3", "Wider middle conv layers (3-5) help",
            "val top-1 error, ZFNet minus conv3-5 widened", "beyond 2 SE", _worse("zfnet", "conv_wide", "ZFNet minus widened conv3-5")),
    Finding("fc_wide_overfits", "Table 3", "Wider fc layers overfit: training error falls more than validation error",
            "fall of train error minus fall of val error, ZFNet to fc6/7 at 2x", "beyond 2 SE", _fc_overfit),
    Finding("transfer", "Tables 4-6", "Pretrained features beat training from scratch at every training-set size",
            "accuracy (mAP for VOC), pretrained minus scratch, per dataset and size", "every setting beyond 2 SE", _transfer),
    Finding("probe_depth", "Table 7", "Deeper features are more discriminative, up to the top layers",
            "linear-probe accuracy per layer", "best layer in the upper half, beating layer 1 beyond 2 SE", _probe_depth),
)


def judge_all(metrics: Metrics) -> dict:
    """Every finding's verdict: ``{"findings": [{"id", "paper", "claim", "verdict", "statistic",
    "value", "threshold", "detail", "test"}...], "holds": n, "fails": n, "inconclusive": n}``."""
    rows = []
    for f in FINDINGS:
        try:
            v = f.judge(metrics)
        except Missing as exc:
            v = Verdict(INCONCLUSIVE, None, None, f"not measured by this run ({exc.args[0]})")
        rows.append({"id": f.id, "paper": f.paper, "claim": f.claim, "verdict": v.verdict, "statistic": f.statistic,
                     "test": f.test, "value": v.value, "threshold": v.threshold, "detail": v.detail})
    counts = {k: sum(r["verdict"] == k for r in rows) for k in (HOLDS, FAILS, INCONCLUSIVE)}
    return {"findings": rows, **counts}


def markdown(result: dict) -> str:
    """The README's findings table (``zfnet findings --markdown``), generated from ``metrics/findings.json``."""
    lines = [f"{result['holds']} of {len(result['findings'])} claims hold, {result['inconclusive']} inconclusive, "
             f"{result['fails']} fail.", "", "| paper | claim | verdict | our numbers |", "|---|---|---|---|"]
    for r in result["findings"]:
        detail = r["detail"].replace("|", "/")
        lines.append(f"| {r['paper']} | {r['claim']} | **{r['verdict']}** | {detail} |")
    return "\n".join(lines) + "\n"
