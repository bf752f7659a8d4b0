"""DVC stage ``ablation_report``: Tables 2 and 3 and Fig. 6 from the ``ablate@<variant>`` runs.

Deps: ``metrics/ablate/<variant>.json`` and ``models_ablation/<variant>/model.pt`` of every variant in
``ablation.variants``. Outs: ``results/ablation.csv`` (Table 3), ``results/ablation_table2.csv``,
``results/ablation.md`` (both tables, the Fig. 6 filter numbers and which of the paper's findings
hold), ``figures/ablation/`` (error bars; layer-1 filters of ``zfnet``, ``no_renorm``,
``krizhevsky`` and their numbers; their conv2 top-9). Metrics ``metrics/ablation.json``.
MLflow: an ``ablation_report`` child run with the tables and figures as artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path

from zfnet.config import Config
from zfnet.stages.ablate import MODELS_ABLATION
from zfnet.stages.common import METRICS, PREPARED, run_stage, write_json

RESULTS = Path("results")
FIGURES = Path("figures/ablation")
FIG6 = ("zfnet", "no_renorm", "krizhevsky")


def main(cfg: Config) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.experiments import ablation as A
    from zfnet.train.checkpoint import load_model

    a = cfg.ablation
    results = {v: json.loads((METRICS / "ablate" / f"{v}.json").read_text()) for v in a.variants}
    shown = [v for v in FIG6 if v in results]
    seeds = A.ablation_seeds(cfg)
    first = {v: MODELS_ABLATION / v / f"seed-{seeds[0]}" / "model.pt" for v in shown}
    with tracking.stage_run(cfg, "ablation_report"):
        t3, t2 = A.table3(results), A.table2(results)
        A.filter_comparison({v: load_model(path)[0] for v, path in first.items()}, FIGURES, cfg.viz.dead_ratio)
        filters = {v: A.aggregate([{"seed": s, **_filter_numbers(MODELS_ABLATION / v / f"seed-{s}" / "model.pt",
                                                                 cfg.viz.dead_ratio)} for s in seeds])
                   for v in shown}
        A.conv2_views({v: path for v, path in first.items() if v != "no_renorm"}, PREPARED, FIGURES,
                      a.maps, a.max_images or None)
        A.error_figure(t3, FIGURES / "errors.png")
        _, md3 = A.write_table(t3, RESULTS / "ablation")
        _, md2 = A.write_table(t2, RESULTS / "ablation_table2")
        any_run = next(iter(results.values()))
        images = f"{a.train_per_class} training images per class" if a.train_per_class else "all training images"
        budget = (f"{a.epochs} epochs on {images} at {any_run['size']} x {any_run['size']} ({any_run['crop']}-pixel "
                  f"crops), {a.seeds} seeds each, {cfg.train.eval_crops}-crop validation on "
                  f"{any_run['val_images']} images")
        (RESULTS / "ablation.md").write_text(_markdown(md3, md2, filters, budget))
        metrics = {
            **{f"{v}_{k}_{stat}": m[f"{k}_{stat}"] for v, m in results.items() for k in A.ERRORS for stat in ("mean", "sd")},
            **{f"filters_{v}_{k}": s[k] for v, s in filters.items() for k in s if k != "seeds"},
            "seeds": a.seeds, "val_images": any_run["val_images"],
        }
        write_json(METRICS / "ablation.json", metrics)
        mlflow.log_metrics(metrics)
        for name in ("ablation.csv", "ablation_table2.csv", "ablation.md"):
            mlflow.log_artifact(str(RESULTS / name), "results")
        mlflow.log_artifacts(str(FIGURES), "figures")


def _filter_numbers(path: Path, dead_ratio: float) -> dict:
    """Fig. 6's numbers of one checkpoint's layer-1 filters: dead fraction, frequency-band shares, dominance."""
    from zfnet.models.filters import filter_rms
    from zfnet.train.checkpoint import load_model
    from zfnet.viz.filters import filter_stats

    weight = load_model(path)[0].layer("conv1").conv.weight
    stats, rms = filter_stats(weight, dead_ratio), filter_rms(weight)
    return {"dead_fraction": stats["dead_fraction"], "dominance": float(rms.max() / rms.median()),
            **{f"{band}_share": share for band, share in stats["band_energy"].items()}}


def _markdown(table3: str, table2: str, filters: dict, budget: str) -> str:
    import pandas as pd

    fig6 = [{"variant": v, **{k: s[k] for k in s if k != "seeds"}} for v, s in filters.items()]
    lines = [
        "# Ablations (docs/paper.md Tables 2, 3, Fig. 6)", "",
        f"Every variant retrained from scratch with one budget: {budget}. Errors in %, mean and sd over "
        "the seeds; the paper's are ImageNet 2012 (1.3M images, 1000 classes, 70 epochs), so compare the "
        "differences between rows, not the levels. The paper removes layers from its Krizhevsky replica "
        "(column 'paper base'); here every change applies to ZFNet. Which of the paper's findings hold: "
        "`metrics/findings.json` and the report.", "",
        "## Table 3", "", table3, "",
        "## Table 2 (single nets, val error)", "", table2, "",
        "## Fig. 6: layer-1 filters (mean and sd over the seeds)", "",
        pd.DataFrame(fig6).to_markdown(index=False, floatfmt=".3f") if fig6 else "(no zfnet/no_renorm/krizhevsky run)",
        "", "Figures (first seed): `figures/ablation/<variant>/filters_conv1.png`, `figures/ablation/filters_conv1.png`, "
        "`figures/ablation/<variant>/top9_conv2.png` (conv2 aliasing view), `figures/ablation/errors.png`.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_stage("ablation_report", main)
