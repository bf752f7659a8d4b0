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
from zfnet.stages.common import METRICS, MODELS, run_stage, write_json

DATASETS = ("caltech101", "caltech256", "voc2012")
RESULTS = Path("results")
SOURCES_JSON = Path("data/transfer/sources.json")


def main(cfg: Config, dataset: str) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.data import caltech, voc
    from zfnet.experiments import transfer
    from zfnet.experiments.ablation import write_table

    root = json.loads(SOURCES_JSON.read_text())[dataset]["root"]
    setup = transfer.setup(cfg, MODELS / "model.pt")
    figure_path = Path(cfg.transfer.out) / f"{dataset}.png"
    stem = RESULTS / f"transfer_{dataset}"
    if dataset == "voc2012":
        train, val = voc.read_split(root, "train"), voc.read_split(root, "val")
        results = transfer.voc(setup, train.paths, train.targets, val.paths, val.targets, train.classes)
        table = transfer.voc_table(results)
        figure = transfer.ap_figure(results, figure_path)
        metrics = {f"{model}_map": round(r["map"], 3) for model, r in results.items()}
        if "map_minus_scratch_se" in results["pretrained"]:
            metrics["map_minus_scratch_se"] = round(results["pretrained"]["map_minus_scratch_se"], 3)
        runs = {"voc2012": {**metrics, **{f"{model}_ap_{c}": v for model, r in results.items() for c, v in r["ap"].items()}}}
    else:
        data = (caltech.read_caltech101 if dataset == "caltech101" else caltech.read_caltech256)(root)
        rows = transfer.caltech(setup, data, list(getattr(cfg.transfer, f"{dataset}_train")))
        table = transfer.caltech_table(dataset, rows)
        figure = transfer.fig9(rows, dataset, figure_path)
        runs = {}
        for r in rows:
            run = runs.setdefault(f"{dataset}-{r['train_per_class']}", {"train_per_class": r["train_per_class"]})
            run.update({f"{r['model']}_accuracy": round(r["accuracy"], 3), f"{r['model']}_accuracy_std": round(r["accuracy_std"], 3),
                        f"{r['model']}_runs": r["runs"], "test_images": r["test_images"]})
        metrics = {f"n{name.rsplit('-', 1)[1]}": m for name, m in runs.items()}
    csv_path, markdown = write_table(table, stem)
    stem.with_suffix(".md").write_text(markdown + "\n")
    write_json(METRICS / f"transfer_{dataset}.json", metrics)
    for variant, values in runs.items():
        setting = {"dataset": dataset, "train_per_class": values.get("train_per_class", "all")}
        with tracking.stage_run(cfg, "transfer", variant=variant, dvc_stage=f"transfer@{dataset}", setting=setting):
            mlflow.log_metrics({k: v for k, v in values.items() if v == v})  # NaN APs (no positive) left out
            for path in (csv_path, stem.with_suffix(".md"), figure):
                mlflow.log_artifact(str(path), "transfer")


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else ""

    def body(cfg: Config) -> None:
        if name not in DATASETS:
            raise ConfigError(f"transfer: dataset must be one of {list(DATASETS)}, got {name!r}")
        main(cfg, name)

    run_stage(f"transfer@{name}", body)
