"""DVC stage ``probe``: a linear classifier on each layer's features (docs/paper.md Table 7).

Deps: ``models/model.pt``, ``data/transfer`` (``sources.json``). Params: ``transfer`` (``probe``,
splits, softmax settings), ``seed``. Outs: ``results/probes.csv`` and ``.md`` (ours beside the
paper's SVM numbers). Metrics ``metrics/probe.json``: accuracy per dataset and layer, and whether
it grows with depth (:func:`zfnet.experiments.probes.depth_trend`). MLflow: one ``probe`` child
run per dataset with the metric names ``accuracy_<layer>``.
"""

from __future__ import annotations

import json

from zfnet.config import Config
from zfnet.io import write_json, write_table, write_text
from zfnet.paths import METRICS, MODELS, RESULTS, TRANSFER_SOURCES
from zfnet.stages.common import run_stage


def main(cfg: Config) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.data import caltech
    from zfnet.experiments import probes, transfer

    sources = json.loads(TRANSFER_SOURCES.read_text())
    setup = transfer.setup(MODELS / "model.pt", cfg.transfer, cfg.train, cfg.seed)
    p = cfg.transfer.probe
    counts = {"caltech101": p.caltech101_train, "caltech256": p.caltech256_train}
    readers = {"caltech101": caltech.read_caltech101, "caltech256": caltech.read_caltech256}
    results = {ds: probes.probe(setup, readers[ds](sources[ds]["root"]), n, list(p.layers)) for ds, n in counts.items()}
    trends = {ds: probes.depth_trend(r) for ds, r in results.items()}
    csv_path, markdown = write_table(probes.probe_table(results, counts), RESULTS / "probes")
    write_text(RESULTS / "probes.md", markdown + "\n")
    metrics = {ds: probes.metrics(r, trends[ds]) for ds, r in results.items()}
    write_json(METRICS / "probe.json", metrics)
    for ds, values in metrics.items():
        with tracking.stage_run(cfg, "probe", variant=ds, dvc_stage="probe",
                                setting={"dataset": ds, "train_per_class": counts[ds]}, last=ds == list(metrics)[-1]):
            mlflow.log_metrics({**values, "train_per_class": counts[ds]})
            mlflow.set_tag("best_layer", trends[ds]["best_layer"])
            tracking.log_artifacts(csv_path, "probe")
            tracking.log_artifacts(RESULTS / "probes.md", "probe")


if __name__ == "__main__":
    run_stage("probe", main)
