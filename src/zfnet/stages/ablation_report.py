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

from zfnet.config import Config
from zfnet.io import write_json, write_table, write_text
from zfnet.paths import ABLATION_FIGURES, METRICS, MODELS_ABLATION, PREPARED, RESULTS
from zfnet.stages.common import run_stage

FIG6 = ("zfnet", "no_renorm", "krizhevsky")


def main(cfg: Config) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.experiments import ablation_report as A
    from zfnet.experiments.ablation import ablation_seeds, aggregate
    from zfnet.train.checkpoint import load_model

    a = cfg.ablation
    results = {v: json.loads((METRICS / "ablate" / f"{v}.json").read_text()) for v in a.variants}
    shown = [v for v in FIG6 if v in results]
    seeds = ablation_seeds(cfg)
    first = {v: MODELS_ABLATION / v / f"seed-{seeds[0]}" / "model.pt" for v in shown}
    with tracking.stage_run(cfg, "ablation_report"):
        t3, t2 = A.table3(results), A.table2(results)
        A.filter_comparison({v: load_model(path)[0] for v, path in first.items()}, ABLATION_FIGURES, cfg.viz.dead_ratio)
        filters = {v: aggregate([{"seed": s, **A.filter_numbers(MODELS_ABLATION / v / f"seed-{s}" / "model.pt",
                                                                cfg.viz.dead_ratio)} for s in seeds])
                   for v in shown}
        A.conv2_views({v: path for v, path in first.items() if v != "no_renorm"}, PREPARED, ABLATION_FIGURES,
                      a.maps, a.max_images or None)
        A.error_figure(t3, ABLATION_FIGURES / "errors.png")
        _, md3 = write_table(t3, RESULTS / "ablation")
        _, md2 = write_table(t2, RESULTS / "ablation_table2")
        any_run = next(iter(results.values()))
        images = f"{a.train_per_class} training images per class" if a.train_per_class else "all training images"
        budget = (f"{a.epochs} epochs on {images} at {any_run['size']} x {any_run['size']} ({any_run['crop']}-pixel "
                  f"crops), {a.seeds} seeds each, {cfg.train.eval_crops}-crop validation on "
                  f"{any_run['val_images']} images")
        write_text(RESULTS / "ablation.md", A.markdown(md3, md2, filters, budget))
        metrics = {
            **{f"{v}_{k}_{stat}": m[f"{k}_{stat}"] for v, m in results.items() for k in A.ERRORS for stat in ("mean", "sd")},
            **{f"filters_{v}_{k}": s[k] for v, s in filters.items() for k in s if k != "seeds"},
            "seeds": a.seeds, "val_images": any_run["val_images"],
        }
        write_json(METRICS / "ablation.json", metrics)
        mlflow.log_metrics(metrics)
        for name in ("ablation.csv", "ablation_table2.csv", "ablation.md"):
            tracking.log_artifacts(RESULTS / name, "results")
        tracking.log_artifacts(ABLATION_FIGURES, "figures")


if __name__ == "__main__":
    run_stage("ablation_report", main)
