"""DVC stage ``analyze``: occlusion, invariance and correspondence of the trained model
(docs/paper.md Figs. 5, 7, 8; Table 1).

Deps: ``models/model.pt``, ``data/prepared``. Params: ``analyze``, ``data.synthetic`` (size of the
drawn faces). Outs: ``analyze.out`` (``occlusion.png``, ``invariance.png``, ``invariance.csv``,
``correspondence.png``, ``correspondence.csv``, ``correspondence.md``). Metrics
``metrics/analyze.json``: the pointing game (overall, chance level, per class), per transform how
much less layer 7 moves than layer 1 and the true-class probability, and Delta per mask and layer.
MLflow: an ``analyze`` child run with those metrics and the figures and tables as artifacts.
"""

from __future__ import annotations

from zfnet.config import Config
from zfnet.io import write_json
from zfnet.paths import METRICS, MODELS, PREPARED
from zfnet.stages.common import run_stage


def main(cfg: Config) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.train.runtime import resolve_device
    from zfnet.viz.analysis import analyze

    a, syn = cfg.analyze, cfg.data.synthetic
    with tracking.stage_run(cfg, "analyze"):
        metrics = analyze(MODELS / "model.pt", PREPARED, a.out, a, (syn.min_side, syn.max_side),
                          resolve_device(a.device))
        write_json(METRICS / "analyze.json", metrics)
        mlflow.log_metrics(metrics)
        tracking.log_artifacts(a.out, "analyze")


if __name__ == "__main__":
    run_stage("analyze", main)
