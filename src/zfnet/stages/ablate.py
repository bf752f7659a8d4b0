"""DVC stage ``ablate@<variant>``: retrain one architecture variant of Table 3 (``python -m zfnet.stages.ablate VARIANT``).

Calls :func:`zfnet.experiments.ablation.train_variant`. Out: ``models_ablation/<variant>/model.pt``.
Metrics ``metrics/ablate/<variant>.json`` (errors in %). MLflow: an ``ablate@<variant>`` child run
with the same metric names for every variant (per epoch with ``step=epoch``: ``train_top1_error``,
``val_top1_error``, ``val_top5_error``, ...; at the end ``final_train_top1_error``,
``final_val_top1_error``, ``final_val_top5_error``, ...), so the MLflow UI compares them side by side.
Resume state: ``.zfnet/state/ablate/<variant>`` (a killed run continues after its last epoch; the
new MLflow run gets the restored epochs too).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from zfnet.config import Config, ConfigError
from zfnet.stages.common import METRICS, PREPARED, STATE, run_stage, write_json

MODELS_ABLATION = Path("models_ablation")


def main(cfg: Config, variant: str) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.experiments.ablation import ablation_config, train_variant
    from zfnet.experiments.variants import VARIANTS
    from zfnet.train.loop import RESUME_FILE

    if variant not in VARIANTS:
        raise ConfigError(f"ablate: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    out_dir, state_dir = MODELS_ABLATION / variant, STATE / "ablate" / variant
    if out_dir.exists():
        shutil.rmtree(out_dir)
    with tracking.stage_run(ablation_config(cfg, variant), "ablate", variant=variant) as run:  # the params it ran with
        epoch_log = tracking.EpochLog(run.info.run_id)  # a tracking outage does not stop training
        result = train_variant(
            cfg, variant, PREPARED, out_dir, state_dir,
            on_epoch=lambda r: epoch_log.log({k: v for k, v in r.items() if k != "epoch"}, step=r["epoch"]),
        )
        metrics = {"variant": variant, **result["metrics"]}
        write_json(METRICS / "ablate" / f"{variant}.json", metrics)
        epoch_log.close()
        final = {f"final_{k}": v for k, v in result["metrics"].items()}
        tracking.retry(lambda: mlflow.log_metrics(final), "logging the final metrics")
    # Finished: a forced rerun trains afresh (the resume state first, as in the train stage).
    (state_dir / RESUME_FILE).unlink(missing_ok=True)
    shutil.rmtree(state_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m zfnet.stages.ablate VARIANT")
    run_stage("ablate", lambda cfg: main(cfg, sys.argv[1]))
