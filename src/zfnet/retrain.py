"""Scheduled retraining with the MLflow Model Registry: challenger vs. champion.

:func:`retrain`, run by ``zfnet retrain`` from a timer (docs/scheduling.md, .github/workflows/retrain.yml):

1. takes :data:`LOCK` (non-blocking ``flock``): a second run at the same time is refused
   (:class:`RetrainBusy`, naming the holder's pid) and changes nothing;
2. composes ``conf/`` (+ overrides) into ``params.yaml`` as ``dvc exp run`` does, and asks DVC
   whether data, params or code of ``retrain.target`` and its upstream stages changed
   (``dvc status --with-deps --json``); if nothing changed and the current model is already a
   registered version, it prints ``nothing changed since version N`` and stops;
3. otherwise runs ``dvc exp run <target>`` with ``ZFNET_PARENT_RUN_ID`` set, so that every stage
   run is a child of one MLflow ``retrain-<time>`` run;
4. registers the trained model (the ``train`` run's logged model, found by the md5 of
   ``models/model.pt``) under ``retrain.model_name`` with alias ``challenger``; the checkpoint
   itself is an artifact of the retrain run (``checkpoint/model.pt``), so any later run can
   evaluate this version again;
5. evaluates challenger and ``champion`` on the same held-out set (the current validation
   shards, ``retrain.eval_crops`` crops, each model with its own mean and input scale);
6. moves ``champion`` to the challenger only if its top-1 error is lower by more than
   ``retrain.margin`` points (the first registered version becomes champion);
7. records the decision and the numbers as model-version tags, on the retrain run, and in
   ``reports/retrain/<time>.json``.

A failure at any step is recorded (``decision: failed``) and re-raised; promotion is the last
step, so a failed run never moves ``champion``.

A retrain killed at any point (``kill -9``, a reboot) is recovered by the next one: its MLflow run
is closed as ``KILLED`` (:func:`zfnet.tracking.close_orphans`); killed in the pipeline, the next
``dvc exp run`` resumes it (training from its last epoch); killed after registering, the version
has no ``retrain.decision`` tag yet (that tag is written last, after the ``champion`` alias), so
the next retrain with nothing changed evaluates and decides it instead of saying "nothing
changed", and one that registers a newer version tags it ``retrain.decision: interrupted``.
``champion`` only ever moves to a registered version of a complete MLflow model (status
``READY``; a model whose logging was killed is never registered) whose checkpoint artifact is
logged before it is registered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator


from zfnet.config import Config, TrainConfig
from zfnet.errors import first_line
from zfnet.io import write_json
from zfnet.paths import MODELS, PREPARED
from zfnet.stages.common import load_config
from zfnet.stages.train import file_md5

LOCK = Path(".zfnet/retrain.lock")
DECISION = "retrain.decision"  # a version's decision tag, written last: without it, its retrain did not finish
REPORTS = Path("reports/retrain")
CHECKPOINT_ARTIFACT = "checkpoint"


class RetrainBusy(RuntimeError):
    """Another ``zfnet retrain`` holds the lock."""


class RetrainError(RuntimeError):
    """The retrain cannot go on (nothing to register, pipeline failed); champion is left alone."""


@contextlib.contextmanager
def exclusive_lock(path: Path = LOCK) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``path`` (its content: the holder's pid).

    The kernel drops the lock when the holder exits, even after ``kill -9``: a stale lock file
    never blocks the next run. Raises :class:`RetrainBusy` if another process holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RetrainBusy(f"another zfnet retrain is running (pid {holder} holds {path}); "
                              "this one does nothing") from None
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: list[str], env: dict | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-20:]
        raise RetrainError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return proc.stdout


def pipeline_changes(target: str) -> dict:
    """``dvc status --with-deps --json <target>``: ``{stage: [changes]}``; empty when up to date."""
    out = _run(["dvc", "status", "--with-deps", "--json", target])
    return json.loads(out.strip() or "{}")


def held_out_errors(checkpoint: Path, t: TrainConfig, val_set, crops: int) -> dict | None:
    """Loss and top-1/top-5 error (%) of ``checkpoint`` on ``val_set``; None if its classes differ.

    Each model is evaluated with its own per-pixel mean, crop size and input scale (from the
    checkpoint), on the ``train`` section's device (``t.device``) and batch size, in fp32.
    """
    from zfnet.train.checkpoint import load_model
    from zfnet.train.loop import evaluate
    from zfnet.train.runtime import resolve_device

    model, ckpt = load_model(checkpoint)
    if list(ckpt["classes"]) != list(val_set.classes):
        return None
    train = dataclasses.replace(t, crop=ckpt["input_size"], input_scale=ckpt["input_scale"],
                                amp=False, channels_last=False)
    device = resolve_device(t.device)
    return evaluate(model.to(device), val_set, ckpt["mean"], train, device, crops)


def _version_of(client, name: str, md5: str):
    """The registered version of ``name`` whose ``model_md5`` tag is ``md5``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    found = [v for v in versions if v.tags.get("model_md5") == md5]
    return max(found, key=lambda v: int(v.version)) if found else None


def _alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _train_run(client, experiment_id: str, md5: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.stage = 'train' and tags.model_md5 = '{md5}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise RetrainError(f"no MLflow train run records {MODELS / 'model.pt'} (md5 {md5}); "
                           "was it trained outside the pipeline?")
    return runs[0]


def decide(challenger: dict, champion: dict | None, margin: float) -> tuple[bool, str]:
    """``(promote, reason)`` from both models' held-out results (``champion`` None: not comparable)."""
    if champion is None:
        return False, "the champion's classes differ from the held-out set's: compare and promote by hand"
    gain = champion["val_top1_error"] - challenger["val_top1_error"]
    if gain > margin:
        return True, f"top-1 error {gain:.2f} points below the champion's, more than the margin {margin}"
    return False, f"top-1 error {gain:+.2f} points below the champion's, not more than the margin {margin}"


def retrain(overrides: list[str] | None = None) -> dict:
    """One scheduled retraining in the current directory (the project root); returns the report.

    ``overrides``: Hydra overrides applied to ``conf/`` (as ``dvc exp run -S``). The report has
    ``decision`` (``nothing changed | promoted | kept``), ``version``, ``champion_version``, the
    held-out numbers of both, the changed stages and the retrain run id.
    """
    import mlflow
    from dvc.utils.hydra import compose_and_dump

    from zfnet import tracking

    overrides = list(overrides or [])
    with exclusive_lock():
        compose_and_dump(Path("params.yaml"), str(Path("conf").resolve()), None, "config", "", overrides)
        cfg = load_config()
        r = cfg.retrain
        tracking.connect(cfg)
        client = mlflow.MlflowClient()
        changes = pipeline_changes(r.target)
        model_file = MODELS / "model.pt"
        exp_id = tracking.experiment_id(cfg.tracking.experiment)
        tracking.close_orphans(exp_id)  # the runs of a retrain (and its stages) killed before
        if not changes and model_file.exists():
            known = _version_of(client, r.model_name, file_md5(model_file))
            if known is not None and DECISION in known.tags:  # else its retrain was killed before deciding
                return {"decision": "nothing changed", "version": int(known.version)}

        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        run = client.create_run(exp_id, run_name=f"retrain-{stamp}", tags={
            "zfnet.role": "retrain", "git_commit": tracking.git_commit(), "profile": cfg.profile,
            "changed_stages": ",".join(sorted(changes)) or "none", **tracking.open_run_tags()})
        run_id = run.info.run_id
        report: dict = {"time": stamp, "retrain_run_id": run_id, "changed_stages": sorted(changes),
                        "model_name": r.model_name, "margin": r.margin, "eval_crops": r.eval_crops}
        try:
            if changes:
                settings = [arg for o in overrides for arg in ("-S", o)]
                _run(["dvc", "exp", "run", r.target, "-n", f"retrain-{stamp}", *settings],
                     env={**os.environ, "ZFNET_PARENT_RUN_ID": run_id})
            report.update(_register_and_compare(client, cfg, exp_id, run_id))
        except BaseException as exc:
            report.update(decision="failed", error=first_line(exc))
            client.set_tag(run_id, DECISION, "failed")
            client.set_terminated(run_id, "FAILED")
            client.set_tag(run_id, tracking.STATE_TAG, "failed")
            write_json(REPORTS / f"{stamp}.json", report)
            raise
        client.set_terminated(run_id, "FINISHED")
        client.set_tag(run_id, tracking.STATE_TAG, "complete")
        write_json(REPORTS / f"{stamp}.json", report)
        return report


def _register_and_compare(client, cfg: Config, exp_id: str, run_id: str) -> dict:
    """Steps 4-7: register as challenger, evaluate both on the held-out set, promote or keep."""
    from zfnet.data.shards import ShardDataset

    r = cfg.retrain
    model_file = MODELS / "model.pt"
    version = _register(client, r, exp_id, run_id, file_md5(model_file))
    val_set = ShardDataset(PREPARED / "val")
    challenger = held_out_errors(model_file, cfg.train, val_set, r.eval_crops)
    if challenger is None:
        raise RetrainError(f"{model_file} was trained on other classes than {PREPARED / 'val'}")
    champion_version, champion = _alias(client, r.model_name, "champion"), None
    if champion_version is None:
        promote, reason = True, "no champion yet"
    elif int(champion_version.version) == int(version.version):  # promoted by a retrain killed before it recorded so
        promote = DECISION not in version.tags and "retrain.reason" in version.tags
        reason = version.tags.get("retrain.reason", "the challenger is the champion already")
    else:
        champion = _champion_errors(champion_version, cfg, val_set)
        promote, reason = decide(challenger, champion, r.margin)
    decision = "promoted" if promote else "kept"
    _record(client, r.model_name, version.version, run_id, decision, reason, champion_version, challenger, champion)
    return {
        "decision": decision,
        "reason": reason,
        "version": int(version.version),
        "champion_version": int(champion_version.version) if champion_version else None,
        "challenger": challenger,
        "champion": champion,
        "held_out": {"split": "val", "images": len(val_set), "path": str(PREPARED / "val")},
    }


def _register(client, r, exp_id: str, run_id: str, md5: str):
    """Step 4: the registered version of ``models/model.pt`` (md5 ``md5``), registered now or by a
    retrain killed before it decided, with alias ``challenger``. Only a complete MLflow model
    (status ``READY``) is registered, after its checkpoint is an artifact of the retrain run
    ``run_id``; versions that killed retrains left undecided are tagged ``interrupted``."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    version = _version_of(client, r.model_name, md5)
    if version is None:
        train_run = _train_run(client, exp_id, md5)
        logged = [m for m in client.search_logged_models(
            experiment_ids=[exp_id], filter_string=f"source_run_id = '{train_run.info.run_id}'")
            if m.status == LoggedModelStatus.READY]
        if not logged:
            raise RetrainError(f"train run {train_run.info.run_id} logged no complete model (tracking.log_model is false?)")
        client.log_artifact(run_id, str(MODELS / "model.pt"), CHECKPOINT_ARTIFACT)
        version = mlflow.register_model(
            f"models:/{max(logged, key=lambda m: m.creation_timestamp).model_id}", r.model_name,
            tags={"model_md5": md5, "data_hash": train_run.data.tags.get("data_hash", "unknown"),
                  "train_run_id": train_run.info.run_id, "retrain_run_id": run_id,
                  "checkpoint_uri": f"runs:/{run_id}/{CHECKPOINT_ARTIFACT}/model.pt"})
    for older in client.search_model_versions(f"name = '{r.model_name}'"):
        if int(older.version) != int(version.version) and "retrain_run_id" in older.tags and DECISION not in older.tags:
            client.set_model_version_tag(r.model_name, older.version, "retrain.reason",
                                         f"its retrain was killed before deciding; superseded by version {version.version}")
            client.set_model_version_tag(r.model_name, older.version, DECISION, "interrupted")
    client.set_registered_model_alias(r.model_name, "challenger", version.version)
    return version


def _champion_errors(champion_version, cfg: Config, val_set) -> dict | None:
    """Held-out results of the ``champion`` version, from its checkpoint artifact."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(champion_version.tags["checkpoint_uri"], dst_path=tmp)
        return held_out_errors(Path(path), cfg.train, val_set, cfg.retrain.eval_crops)


def _record(client, name: str, version: str, run_id: str, decision: str, reason: str, champion_version,
            challenger: dict, champion: dict | None) -> None:
    """Steps 6-7: the numbers and reason as tags of the version and the retrain run, ``champion``
    moved if promoted, and last the version's :data:`DECISION` tag (without it, a later retrain
    knows this one was killed before it finished)."""
    tags = {"retrain.reason": reason, "retrain.run_id": run_id,
            "retrain.champion_version": champion_version.version if champion_version else "none"}
    for side, numbers in (("challenger", challenger), ("champion", champion)):
        for k, v in (numbers or {}).items():
            tags[f"retrain.{side}_{k}"] = f"{v:.4f}"
            client.log_metric(run_id, f"{side}_{k}", v)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_tag(run_id, DECISION, decision)
    client.set_tag(run_id, "retrain.version", str(version))
    if decision == "promoted":
        client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, DECISION, decision)
