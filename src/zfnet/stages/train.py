"""DVC stage ``train``: train the configured model on the prepared shards (docs/paper.md Sec. 3).

Outs: ``models/milestones/epoch-NNN.pt``, ``models/model.pt``. Metrics ``metrics/train.json`` (the
headline errors) and ``metrics/train_details.json`` (those, the centre-crop and chance errors, the
learning rate's last / peak, the conv1 filters' autocorrelation and share at the radius, times);
plots ``plots/train.csv`` (one row per epoch). MLflow: a ``train`` child run with per-epoch
metrics (``step=epoch``), the curves, and the final model (``mlflow.pytorch.log_model``).
Resume state lives in ``.zfnet/state/train`` (not a DVC out): rerunning after a crash continues
from the last finished epoch, in the same MLflow run.

Data-parallel: ``torchrun --standalone --nproc_per_node=N -m zfnet.stages.train`` (then
``dvc commit train``); ``train.batch_size`` is the global batch, rank 0 alone writes and logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from zfnet.config import Config, TrainConfig
from zfnet.data.shards import ShardDataset, data_id, load_mean
from zfnet.io import write_json, write_text
from zfnet.paths import METRICS, MODELS, PLOTS, PREPARED, STATE
from zfnet.stages.common import run_stage
from zfnet.train import distributed
from zfnet.train.checkpoint import RESUME_FILE
from zfnet.train.loop import config_fingerprint, fit
from zfnet.train.runtime import resolve_device

log = logging.getLogger("zfnet.stages.train")


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plot_curves(history: list[dict], path: Path) -> None:
    """Training curves as a PNG: loss, top-1/top-5 error (the validation ones every ``val_every``
    epochs) and the learning rate, per epoch."""
    from zfnet.plotting import plt, save

    df = pd.DataFrame(history)
    val = df.dropna(subset=["val_top1_error"]) if "val_top1_error" in df else df.iloc[:0]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 3.6))
    ax1.plot(df.epoch, df.train_loss, label="train")
    ax1.plot(val.epoch, val.val_loss, label="val (centre crop)", marker=".")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax2.plot(df.epoch, df.train_top1_error, label="train top-1")
    ax2.plot(val.epoch, val.val_top1_error, label="val top-1", marker=".")
    ax2.plot(val.epoch, val.val_top5_error, label="val top-5", marker=".")
    ax2.set(xlabel="epoch", ylabel="error (%)", title="error", ylim=(0, 100))
    ax3.plot(df.epoch, df.lr, color="tab:gray")
    ax3.set(xlabel="epoch", ylabel="learning rate", title="learning rate", yscale="log")
    for ax in (ax1, ax2):
        ax.legend()
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
    save(fig, path, dpi=110)


def main(cfg: Config) -> None:
    """Train (on every ``torchrun`` rank), and on rank 0 write the outs and the MLflow run."""
    with distributed.process_group(resolve_device(cfg.train.device)):
        if distributed.is_main():
            train_and_log(cfg)
        else:
            train_set, val_set = ShardDataset(PREPARED / "train"), ShardDataset(PREPARED / "val")
            fit(cfg, train_set, val_set, load_mean(PREPARED), STATE / "train", MODELS,
                meta={"data_id": data_id(PREPARED)}, progress=False)


def train_and_log(cfg: Config) -> None:
    """The rank-0 (or only) process: train, write the outs, metrics and plots, log the MLflow run."""
    import mlflow

    from zfnet import tracking

    train_set = ShardDataset(PREPARED / "train")
    val_set = ShardDataset(PREPARED / "val")
    mean = load_mean(PREPARED)
    did = data_id(PREPARED)
    state_dir = STATE / "train"
    fingerprint = config_fingerprint(cfg, did)
    run_file = state_dir / "mlflow_run.json"
    run_id = None
    if run_file.exists():
        saved = json.loads(run_file.read_text())
        run_id = saved["run_id"] if saved.get("fingerprint") == fingerprint else None

    for out in (MODELS,):
        if out.exists():
            shutil.rmtree(out)
    t0 = time.perf_counter()
    with tracking.stage_run(cfg, "train", run_id=run_id) as run:
        state_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_file, {"fingerprint": fingerprint, "run_id": run.info.run_id})

        # A resumed run already holds the epochs logged before the crash: log each epoch once.
        history_of = lambda: mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")  # noqa: E731
        logged = {m.step for m in tracking.retry(history_of, "reading the logged epochs")}
        epoch_log = tracking.EpochLog(run.info.run_id)  # a tracking outage does not stop training

        def on_epoch(record: dict) -> None:
            if record["epoch"] not in logged:
                epoch_log.log({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

        result = fit(
            cfg,
            train_set,
            val_set,
            mean,
            state_dir,
            MODELS,
            meta={"classes": train_set.classes, "class_names": train_set.class_names, "data_id": did},
            on_epoch=on_epoch,
        )
        PLOTS.mkdir(parents=True, exist_ok=True)
        write_text(PLOTS / "train.csv", pd.DataFrame(result["history"]).to_csv(index=False))
        plot_curves(result["history"], PLOTS / "train_curves.png")
        headline, metrics = train_metrics(result, cfg.train, train_set.num_classes, len(val_set))
        write_json(METRICS / "train.json", headline)  # `dvc metrics show`, `dvc exp show`
        write_json(METRICS / "train_details.json", metrics)
        try:
            epoch_log.close()
            _log_outs(result["model"], metrics, cfg)
        except tracking.TrackingError as exc:
            raise tracking.TrackingError(
                f"{exc}. Training finished and its outs are written ({MODELS}/, {METRICS / 'train.json'}); rerun the "
                f"stage once the store answers: it resumes after epoch {metrics['epochs']} without training and logs the rest"
            ) from None
    # Finished: a forced rerun trains afresh. The resume state goes first: a crash while the rest
    # is removed then means a fresh start, never a resume state whose milestones are gone.
    (state_dir / RESUME_FILE).unlink(missing_ok=True)
    shutil.rmtree(state_dir)
    log.info("trained in %.1fs: %s", time.perf_counter() - t0, metrics)


def train_metrics(result: dict, t: TrainConfig, num_classes: int, val_images: int) -> tuple[dict, dict]:
    """``(headline, details)`` of a finished :func:`~zfnet.train.loop.fit` ``result``: the headline
    errors (``metrics/train.json``: train top-1, val top-1 and top-5 with ``t.eval_crops`` crops, %)
    and those with the centre-crop and chance errors, the crops' paired gain over the centre crop
    (:func:`~zfnet.train.loop.paired_with_centre`), the learning rate's last / peak, the conv1
    filters' autocorrelation and share at the radius, the time (``metrics/train_details.json``)."""
    history, final, initial = result["history"], result["final"], result["initial"]
    crops = f"_{t.eval_crops}crop" if t.eval_crops > 1 else ""
    headline = {
        "train_top1_error": round(final["train_top1_error"], 3),
        "val_top1_error": round(final[f"val_top1_error{crops}"], 3),
        "val_top5_error": round(final[f"val_top5_error{crops}"], 3),
    }
    return headline, {
        **headline,
        "epochs": final["epoch"],
        "eval_crops": t.eval_crops,
        "val_loss": round(final[f"val_loss{crops}"], 5),
        "val_top1_error_center_crop": round(final["val_top1_error"], 3),
        **({f"crops_{k}": round(final[f"val_crops_{k}{crops}"], 5) for k in ("nll_gain", "nll_gain_se")}
           | {f"crops_{k}_images": int(final[f"val_crops_{k}{crops}"]) for k in ("fixed", "broken")} if crops else {}),
        "best_val_top1_error_center_crop": round(min(r["val_top1_error"] for r in history if "val_top1_error" in r), 3),
        "chance_top1_error": round(100.0 * (1 - 1 / num_classes), 3),
        "val_images": val_images,
        "final_lr_over_peak": round(final["lr"] / t.lr, 5),
        "conv1_autocorrelation": round(final["conv1_autocorrelation"], 3),
        "conv1_autocorrelation_at_init": round(initial["conv1_autocorrelation"], 3),
        "filters_at_radius_at_init": round(initial["filters_at_radius"], 4),
        "filters_at_radius_max": round(max(r["filters_at_radius"] for r in history), 4),
        "train_seconds": round(sum(r["epoch_seconds"] for r in history), 1),
    }


def _log_outs(model: torch.nn.Module, metrics: dict, cfg: Config) -> None:
    """The active run's final metrics, plots, model tags and (``tracking.log_model``) the MLflow model,
    each call retried (:func:`zfnet.tracking.retry`)."""
    import mlflow

    from zfnet import tracking

    model_file = MODELS / "model.pt"
    tracking.retry(lambda: mlflow.log_metrics({f"final_{k}": v for k, v in metrics.items()}), "logging the final metrics")
    for plot in ("train.csv", "train_curves.png"):
        tracking.retry(lambda: tracking.log_artifacts(PLOTS / plot, "plots"), f"logging plots/{plot}", timeout=None)
    tags = {"model_path": str(model_file), "model_md5": file_md5(model_file)}
    tracking.retry(lambda: mlflow.set_tags(tags), "tagging the run")
    if cfg.tracking.log_model:
        tracking.retry(lambda: _log_model(model, cfg), "logging the model", timeout=None)


def _log_model(model: torch.nn.Module, cfg: Config) -> None:
    """The final model as an MLflow model with an input example (one preprocessed crop)."""
    import mlflow
    import numpy as np
    import torchvision

    model = model.to("cpu").eval()
    # Batch of 2: torch.export (MLflow's default "pt2" format) would specialise a batch of 1.
    example = np.zeros((2, 3, cfg.train.crop, cfg.train.crop), dtype=np.float32)
    mlflow.pytorch.log_model(
        model,
        name="model",
        input_example=example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"torchvision=={torchvision.__version__.split('+')[0]}"],
    )


if __name__ == "__main__":
    run_stage("train", main)
