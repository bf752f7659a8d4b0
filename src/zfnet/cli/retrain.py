"""``zfnet retrain``: one scheduled retraining (see :mod:`zfnet.retrain`); exit 0 done, 75 busy, 1 failed."""

from __future__ import annotations

import argparse
import sys

BUSY_EXIT = 75  # EX_TEMPFAIL: another retrain holds the lock; the next scheduled run tries again


def _run(args: argparse.Namespace) -> int:
    from zfnet.cli.options import composed_config
    from zfnet.retrain import RetrainBusy, RetrainError, retrain

    if args.overrides:  # a bad override: one line, before the lock and any work
        composed_config(args.overrides)
    try:
        report = retrain(args.overrides)
    except RetrainBusy as exc:
        print(f"zfnet retrain: refused: {exc}", file=sys.stderr)
        return BUSY_EXIT
    except RetrainError as exc:
        print(f"zfnet retrain: failed, champion unchanged: {exc}", file=sys.stderr)
        return 1
    if report["decision"] == "nothing changed":
        print(f"zfnet retrain: nothing changed since version {report['version']}")
        return 0
    challenger = report["challenger"]["val_top1_error"]
    if report["champion"] is None:
        against = "no champion to compare" if report["champion_version"] is None else "champion not comparable"
    else:
        against = f"champion version {report['champion_version']}: {report['champion']['val_top1_error']:.2f}%"
    print(f"zfnet retrain: version {report['version']} (challenger) val top-1 error {challenger:.2f}% vs "
          f"{against} -> {report['decision']} ({report['reason']}); report reports/retrain/{report['time']}.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain",
        help="retrain if data or params changed; promote the new model to champion only if better",
        description="Scheduled retraining: if DVC sees changed data, params or code, run the pipeline "
        "(`dvc exp run`), register the model as `challenger` in the MLflow Model Registry, evaluate it "
        "and the `champion` on the held-out set and promote it only if better by retrain.margin. "
        "Decision and numbers: model-version tags, the retrain run, reports/retrain/<time>.json. "
        f"Exit status: 0 done (or nothing changed), 1 failed (champion unchanged), {BUSY_EXIT} another "
        "retrain is running.",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as given to `dvc exp run -S` (e.g. experiment=tiny)")
    p.set_defaults(func=_run)
