"""The pipeline's files and folders, relative to the project root (the stages run there): each
is a ``dvc.yaml`` out (or dep) and is named once, here. Folders set by the params (``viz.out``,
``analyze.out``, ``transfer.out``, ``report.out``) come from the config instead."""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")  # data stage out: the dataset (synthetic) or a pointer to it (real)
DATASET_JSON = RAW / "dataset.json"
PREPARED = Path("data/prepared")  # preprocess stage out: shards + manifest + mean
MODELS = Path("models")  # train stage out: milestones/ and model.pt
MODELS_ABLATION = Path("models_ablation")  # ablate stage outs: <variant>/seed-<s>/model.pt
METRICS = Path("metrics")  # every stage's metrics/<stage>.json
PLOTS = Path("plots")  # train stage: train.csv, train_curves.png
RESULTS = Path("results")  # the tables (ablation, transfer, probes) as CSV and Markdown
TOP9_INDEX = RESULTS / "top9_index"  # visualize stage out: every map's top-9 and tiles (zfnet explore reads it)
ABLATION_FIGURES = Path("figures/ablation")  # ablation_report stage out (Fig. 6, Table 3 bars)
TRANSFER = Path("data/transfer")  # transfer_data stage out
TRANSFER_SOURCES = TRANSFER / "sources.json"  # where each transfer dataset is: read by transfer and probe
STATE = Path(".zfnet/state")  # resume state: outside every DVC out, survives a crash
