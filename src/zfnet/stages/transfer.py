"""DVC stage ``transfer@<dataset>``: the trained layers 1-7 frozen, a new softmax on top
(docs/paper.md Tables 4-6, Fig. 9), and the same net trained from scratch for comparison.

``python -m zfnet.stages.transfer caltech101|caltech256|voc2012``. Deps: ``models/model.pt``,
``data/transfer`` (``sources.json``). Params: ``transfer``, ``train`` (the scratch recipe), ``seed``.
Outs: ``results/transfer_<dataset>.csv`` and ``.md`` (ours beside the paper's numbers),
``<transfer.out>/<dataset>.png`` (Fig. 9 for Caltech, AP per class for VOC). Metrics
``metrics/transfer_<dataset>.json``. MLflow: one ``transfer`` child run per setting (variant
``caltech101-15``, ..., ``voc2012``) with the same metric names within a dataset, tagged ``dvc_stage=transfer@<dataset>``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from zfnet.config import Config, ConfigError
from zfnet.io import write_json, write_table, write_text
from zfnet.paths import METRICS, MODELS, RESULTS, TRANSFER_SOURCES
from zfnet.stages.common import run_stage

DATASETS = ("caltech101", "caltech256", "voc2012")


def main(cfg: Config, dataset: str) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.data import caltech, voc
    from zfnet.experiments import transfer
    from zfnet.experiments import transfer_report as report

    root = json.loads(TRANSFER_SOURCES.read_text())[dataset]["root"]
    setup = transfer.setup(MODELS / "model.pt", cfg.transfer, cfg.train, cfg.seed)
    figure_path = Path(cfg.transfer.out) / f"{dataset}.png"
    stem = RESULTS / f"transfer_{dataset}"
    if dataset == "voc2012":
        train, val = voc.read_split(root, "train"), voc.read_split(root, "val")
        results = transfer.voc(setup, train.paths, train.targets, val.paths, val.targets, train.classes)
        table, figure, metrics = report.voc_table(results), report.ap_figure(results, figure_path), report.voc_metrics(results)
        runs = {"voc2012": {**metrics, **{f"{model}_ap_{c}": v for model, r in results.items() for c, v in r["ap"].items()}}}
    else:
        data = (caltech.read_caltech101 if dataset == "caltech101" else caltech.read_caltech256)(root)
        rows = transfer.caltech(setup, data, list(getattr(cfg.transfer, f"{dataset}_train")))
        table, figure = report.caltech_table(dataset, rows), report.fig9(rows, dataset, figure_path)
        runs = report.caltech_runs(dataset, rows)
        metrics = {f"n{name.rsplit('-', 1)[1]}": m for name, m in runs.items()}
    csv_path, markdown = write_table(table, stem)
    write_text(stem.with_suffix(".md"), markdown + "\n")
    write_json(METRICS / f"transfer_{dataset}.json", metrics)
    for variant, values in runs.items():
        setting = {"dataset": dataset, "train_per_class": values.get("train_per_class", "all")}
        with tracking.stage_run(cfg, "transfer", variant=variant, dvc_stage=f"transfer@{dataset}", setting=setting,
                                last=variant == list(runs)[-1]):
            mlflow.log_metrics({k: v for k, v in values.items() if v == v})  # NaN APs (no positive) left out
            for path in (csv_path, stem.with_suffix(".md"), figure):
                tracking.log_artifacts(path, "transfer")


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else ""

    def body(cfg: Config) -> None:
        if name not in DATASETS:
            raise ConfigError(f"transfer: dataset must be one of {list(DATASETS)}, got {name!r}")
        main(cfg, name)

    run_stage(f"transfer@{name}", body)
