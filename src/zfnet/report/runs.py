"""The pipeline's MLflow runs as pandas tables: list, pick and compare them side by side.

Every stage logs a child run (tags ``stage``, ``variant``, ``dvc_exp_name``, ``profile``) of
the pipeline's parent run (tag ``zfnet.role = pipeline``), see :mod:`zfnet.tracking`. Comparable
runs (the variants of one experiment) log the same metric names, so a table of them lines up.
"""

from __future__ import annotations

import pandas as pd

RUN_COLUMNS = {  # column of mlflow.search_runs -> shown name
    "run_id": "run_id",
    "tags.mlflow.runName": "name",
    "tags.stage": "stage",
    "tags.variant": "variant",
    "status": "status",
    "start_time": "started",
}


class RunsError(LookupError):
    """No such experiment or run: shown as one line."""


def search(experiment: str, filter_string: str = "", max_results: int = 1000) -> pd.DataFrame:
    """Runs of ``experiment`` in the current tracking store, newest first.

    Columns as :func:`mlflow.search_runs` gives them (``run_id``, ``status``, ``start_time``,
    ``metrics.<name>``, ``params.<name>``, ``tags.<name>``); an empty frame has at least the
    :data:`RUN_COLUMNS`.
    """
    import mlflow

    if mlflow.MlflowClient().get_experiment_by_name(experiment) is None:
        raise RunsError(f"no MLflow experiment {experiment!r} in {mlflow.get_tracking_uri()} (run the pipeline first)")
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string,
                              max_results=max_results, order_by=["attributes.start_time DESC"])
    for column in RUN_COLUMNS:
        if column not in runs.columns:
            runs[column] = pd.Series(dtype=object)
    return runs.reset_index(drop=True)


def latest_stage_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Of stage (child) runs, the newest of each ``(stage, variant)``, in order of their start."""
    stages = runs[runs["tags.stage"].fillna("") != ""]
    latest = stages.sort_values("start_time").groupby(["tags.stage", "tags.variant"], dropna=False).tail(1)
    return latest.sort_values("start_time").reset_index(drop=True)


def pick(runs: pd.DataFrame, refs: list[str]) -> pd.DataFrame:
    """The runs named by ``refs``: a run id, a unique prefix of one (>= 4 characters), or a run name
    (the newest run of that name, e.g. ``train`` or ``ablate@no_fc7``), in the order given."""
    chosen = []
    for ref in refs:
        hit = runs[runs["run_id"] == ref]
        if hit.empty and len(ref) >= 4:
            hit = runs[runs["run_id"].str.startswith(ref)]
            if len(hit) > 1:
                raise RunsError(f"run id prefix {ref!r} is ambiguous: {', '.join(hit['run_id'])}")
        if hit.empty:
            hit = runs[runs["tags.mlflow.runName"] == ref].head(1)  # newest first
        if hit.empty:
            raise RunsError(f"no run {ref!r} (give a run id, a unique prefix of one, or a run name; see `zfnet runs list`)")
        chosen.append(hit.iloc[0])
    return pd.DataFrame(chosen).reset_index(drop=True)


KEY_WORDS = ("top1_error", "top5_error", "accuracy", "map")  # what the paper's tables report

KEY_METRICS: dict[str, tuple[str, ...]] = {  # stage -> the metrics that say how it went (those it logged)
    "data": ("train_images", "val_images"),
    "preprocess": ("train_count", "train_skipped", "val_skipped"),
    "train": ("final_val_top1_error", "final_val_top5_error"),
    "visualize": ("filters_conv1_dead_fraction", "lower_layers_converge_first"),
    "ablate": ("final_val_top1_error_mean", "final_val_top1_error_sd"),
    "ablation_report": ("zfnet_val_top1_error_mean", "krizhevsky_val_top1_error_mean"),
    "findings": ("holds", "inconclusive", "fails"),
    "analyze": ("pointing_game", "pointing_game_chance"),
    "transfer_data": ("caltech101_images", "caltech256_images", "voc2012_images"),
    "transfer": ("pretrained_accuracy", "scratch_accuracy", "pretrained_map", "scratch_map"),
    "probe": ("accuracy_conv1", "accuracy_conv5", "accuracy_fc7"),
    "report": ("claims_hold", "claims"),
}
WIDTH = 120  # columns of `zfnet runs list` (``--wide``: no limit)


def key_metrics(runs: pd.DataFrame, limit: int = 6) -> list[str]:
    """Up to ``limit`` metric names for a listing: those of the paper's tables (errors, accuracies,
    mAP) first, then the rest; within each, the ones most of ``runs`` logged (ties: shortest name first)."""
    counts = {c[len("metrics."):]: int(runs[c].notna().sum()) for c in runs.columns if c.startswith("metrics.")}
    ranked = sorted((name for name, n in counts.items() if n),
                    key=lambda name: (not any(w in name for w in KEY_WORDS), -counts[name], len(name), name))
    return ranked[:limit]


def listing(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per run: id, name, stage, variant, status, start (UTC), and the given metrics."""
    table = runs[list(RUN_COLUMNS)].rename(columns=RUN_COLUMNS)
    table["started"] = pd.to_datetime(table["started"], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    for name in metrics:
        table[name] = runs[f"metrics.{name}"] if f"metrics.{name}" in runs.columns else float("nan")
    return table.reset_index(drop=True)


def _key_text(run: pd.Series) -> str:
    """``val_top1_error=1.82 val_top5_error=0`` from the run's :data:`KEY_METRICS` (``final_`` dropped)."""
    names = KEY_METRICS.get(run.get("tags.stage") or "", ())
    values = [(n.removeprefix("final_"), run.get(f"metrics.{n}")) for n in names]
    return " ".join(f"{n}={v:.4g}" for n, v in values if v is not None and v == v)


def summary(runs: pd.DataFrame, width: int = WIDTH) -> pd.DataFrame:
    """One row per run in at most ``width`` columns: id (8 characters), name, status, start (UTC, to
    the minute) and its stage's key metrics (:data:`KEY_METRICS`), cut with "..." where too long."""
    table = pd.DataFrame({
        "run": runs["run_id"].str[:8],
        "name": runs["tags.mlflow.runName"].fillna(""),
        "status": runs["status"],
        "started": pd.to_datetime(runs["start_time"], utc=True).dt.strftime("%Y-%m-%d %H:%M"),
        "key metrics": [_key_text(r) for _, r in runs.iterrows()],
    }).reset_index(drop=True)
    if table.empty:
        return table
    used = sum(max(table[c].str.len().max(), len(c)) + 2 for c in table.columns[:-1])  # + the separators
    room = max(width - used, 12)
    table["key metrics"] = [t if len(t) <= room else t[: room - 3] + "..." for t in table["key metrics"]]
    return table


def compare(runs: pd.DataFrame, all_params: bool = False) -> pd.DataFrame:
    """Runs side by side, one column each (``name`` or ``name <id prefix>`` when names repeat).

    Rows: stage, variant, status, then every metric any of them logged (``metrics.<name>``), then
    the params whose values differ between them (all params with ``all_params``).
    """
    names = runs["tags.mlflow.runName"].fillna("").tolist()
    labels = [f"{n} {rid[:8]}" if names.count(n) > 1 or not n else n for n, rid in zip(names, runs["run_id"])]
    metrics = sorted(c for c in runs.columns if c.startswith("metrics.") and runs[c].notna().any())
    params = sorted(c for c in runs.columns if c.startswith("params.") and runs[c].notna().any())
    if not all_params:
        params = [c for c in params if runs[c].astype(str).nunique(dropna=False) > 1]
    rows = ["run_id", "tags.stage", "tags.variant", "status", *metrics, *params]
    table = runs[rows].T
    table.columns = labels
    table.index = [r.removeprefix("tags.") for r in rows]
    return table
