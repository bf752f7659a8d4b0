"""DVC stage ``ablate@<variant>``: retrain one architecture variant of Table 3 (``python -m zfnet.stages.ablate VARIANT``).

Calls :func:`zfnet.experiments.ablation.train_seeds`: the variant trained once per seed of
``ablation.seeds`` (seeded ``seed * 1000 + k``). Out: ``models_ablation/<variant>/seed-<s>/model.pt``. Metrics
``metrics/ablate/<variant>.json``: mean and sd over the seeds (``val_top1_error_mean``,
``val_top1_error_sd``, ...; errors in %) and each seed's metrics (``per_seed``). MLflow: an
``ablate@<variant>`` child run with the same metric names for every variant (per epoch with
``step=epoch``: ``seed<s>.train_top1_error``, ...; at the end ``final_val_top1_error_mean``, ...),
so the MLflow UI compares them side by side. Resume state: ``.zfnet/state/ablate/<variant>/seed-<s>``
(a killed run continues each seed after its last finished epoch).
"""

from __future__ import annotations

import shutil
import sys

from zfnet.config import Config, ConfigError
from zfnet.io import write_json
from zfnet.paths import METRICS, MODELS_ABLATION, PREPARED, STATE
from zfnet.stages.common import run_stage


def main(cfg: Config, variant: str) -> None:
    import mlflow

    from zfnet import tracking
    from zfnet.experiments.ablation import ablation_config, ablation_seeds, aggregate, train_seeds
    from zfnet.experiments.variants import VARIANTS

    if variant not in VARIANTS:
        raise ConfigError(f"ablate: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    out_dir, state_dir = MODELS_ABLATION / variant, STATE / "ablate" / variant
    if out_dir.exists():
        shutil.rmtree(out_dir)
    with tracking.stage_run(ablation_config(cfg, variant), "ablate", variant=variant,
                            setting={"seeds": ablation_seeds(cfg)}) as run:  # the params it ran with
        results = train_seeds(cfg, variant, PREPARED, out_dir, state_dir)
        epoch_log = tracking.EpochLog(run.info.run_id)  # a tracking outage does not stop the stage
        for result in results:
            seed = result["metrics"]["seed"]
            for record in result["history"]:
                epoch_log.log({f"seed{seed}.{k}": v for k, v in record.items() if k != "epoch"}, step=record["epoch"])
        metrics = {"variant": variant, **aggregate([r["metrics"] for r in results]),
                   "per_seed": [r["metrics"] for r in results]}
        write_json(METRICS / "ablate" / f"{variant}.json", metrics)
        epoch_log.close()
        final = {f"final_{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracking.retry(lambda: mlflow.log_metrics(final), "logging the final metrics")
    # Finished: a forced rerun trains afresh.
    shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m zfnet.stages.ablate VARIANT")
    run_stage("ablate", lambda cfg: main(cfg, sys.argv[1]))
