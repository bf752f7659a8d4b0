"""DVC stage ``visualize``: the deconvnet figures of the trained model (docs/paper.md Figs. 2, 4, 6).

Deps: ``models/`` (``model.pt``, ``milestones/``), ``data/prepared``. Params: ``viz``.
Outs: ``viz.out`` (``top9_conv1..5.png``, ``filters_conv1.png``, ``filters_<label>.png``,
``evolution.png``); ``results/top9_index/`` (every map's top-9 and projection tiles,
:mod:`zfnet.viz.index`: what ``zfnet explore`` browses). Metrics ``metrics/visualize.json``:
dead-filter fraction and frequency-band shares of the layer-1 filters, the epoch at which each
layer's top-9 stopped changing, each layer's mean top-9 overlap with the final epoch at every
milestone and its settled fraction.
MLflow: a ``visualize`` child run with those metrics and the figures as artifacts.
"""

from __future__ import annotations

from zfnet.config import Config
from zfnet.io import write_json
from zfnet.paths import METRICS, MODELS, PREPARED, TOP9_INDEX
from zfnet.stages.common import run_stage


def metrics_of(result: dict) -> dict:
    """The figures' numbers as a flat ``{name: number}`` dict (for metrics/visualize.json and MLflow)."""
    metrics = {}
    for label, stats in result["filters"].items():
        metrics[f"filters_{label}_dead_fraction"] = stats["dead_fraction"]
        for band, share in stats["band_energy"].items():
            metrics[f"filters_{label}_{band}_freq_share"] = share
    if result["purity"] is not None:
        from zfnet.stats import mean_se

        metrics["top9_purity_chance"] = result["purity"]["chance"]
        for layer, values in result["purity"].items():
            if layer != "chance":
                metrics[f"top9_purity_{layer}_mean"], metrics[f"top9_purity_{layer}_se"] = mean_se(values)
    if result["evolution"] is not None:
        evo = result["evolution"]
        for layer, epoch in evo["cka_converged_epoch"].items():
            metrics[f"cka_converged_epoch_{layer}"] = epoch
            metrics[f"cka_settled_{layer}"], metrics[f"cka_settled_{layer}_se"] = evo["cka_settled"][layer], evo["cka_settled_se"][layer]
            for e, value in zip(evo["epochs"], evo["cka"][layer]):
                metrics[f"cka_{layer}_epoch{e:03d}"] = value
        for layer, epoch in evo["converged_epoch"].items():
            metrics[f"converged_epoch_{layer}"] = epoch
            metrics[f"top9_settled_{layer}"] = evo["settled"][layer]
            for e, shared in zip(evo["epochs"], evo["overlap"][layer]):
                metrics[f"top9_overlap_{layer}_epoch{e:03d}"] = shared
        metrics["lower_layers_converge_first"] = int(evo["lower_layers_first"])
        metrics["lower_layers_decided_by_settled"] = int(evo["decided_by"] == "settled")
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}


def main(cfg: Config) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.train.runtime import resolve_device
    from zfnet.viz.visualize import visualize

    v = cfg.viz
    with tracking.stage_run(cfg, "visualize"):
        result = visualize(
            MODELS / "model.pt",
            PREPARED,
            v.out,
            milestones=sorted((MODELS / "milestones").glob("epoch-*.pt")),
            compare=dict(v.compare),
            split=v.split,
            evolution_split=v.evolution_split,
            maps=v.maps,
            evolution_maps=v.evolution_maps,
            stable=v.stable,
            dead_ratio=v.dead_ratio,
            max_images=v.max_images or None,
            batch_size=v.batch_size,
            max_batch=v.max_batch,
            device=resolve_device(v.device),
            index=TOP9_INDEX,
        )
        metrics = metrics_of(result)
        write_json(METRICS / "visualize.json", metrics)
        mlflow.log_metrics(metrics)
        tracking.log_artifacts(v.out, "visualize")


if __name__ == "__main__":
    run_stage("visualize", main)
