"""``zfnet runs list`` / ``zfnet runs compare RUN [RUN...]``: the pipeline's MLflow runs as tables.

The store is the pipeline's (``MLFLOW_TRACKING_URI`` > ``tracking.uri`` in params.yaml > the
project's ``mlflow.db``), so what the stages logged is what is listed. Errors (no store, no
such experiment or run) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _connect(args: argparse.Namespace) -> str:
    """Point MLflow at the store; return the experiment name."""
    from zfnet import tracking
    from zfnet.config import load_params

    cfg = load_params(args.params) if Path(args.params).is_file() else None
    uri = tracking.tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise FileNotFoundError(f"no MLflow store at {uri} (run the pipeline first, or set MLFLOW_TRACKING_URI)")
    tracking.connect(cfg)
    return args.experiment or (cfg.tracking.experiment if cfg else "zfnet")


def _print(table) -> None:
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 10**6,
                           "display.max_colwidth", 40, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=not table.index.equals(pd.RangeIndex(len(table)))))


def _print_left(table) -> None:
    """``table`` (of strings) left-aligned, two spaces between columns, no trailing blanks."""
    from tabulate import tabulate

    text = tabulate(table.values.tolist(), list(table.columns), tablefmt="plain", stralign="left", disable_numparse=True)
    print("\n".join(line.rstrip() for line in text.splitlines()))


def _list(args: argparse.Namespace) -> int:
    from zfnet.report.runs import WIDTH, key_metrics, latest_stage_runs, listing, search, summary

    runs = search(_connect(args))
    if args.stage:
        runs = runs[runs["tags.stage"] == args.stage]
    if args.latest:
        runs = latest_stage_runs(runs).iloc[::-1]
    runs = runs.head(args.max)
    if runs.empty:
        print("no runs")
        return 0
    if args.wide or args.metrics:
        _print(listing(runs, args.metrics.split(",") if args.metrics else key_metrics(runs)))
    else:
        _print_left(summary(runs, WIDTH))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from zfnet.report.runs import compare, pick, search

    _print(compare(pick(search(_connect(args)), args.runs), all_params=args.all_params))
    return 0


def _run(func):
    """Run ``func(args)``; no such experiment or run is one line on stderr and status 2 (a missing or
    unusable store too, via :func:`zfnet.cli.main`)."""
    from zfnet.report.runs import RunsError

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except RunsError as exc:
            print(f"zfnet runs: error: {exc}", file=sys.stderr)
            return 2

    return run


def register(sub: argparse._SubParsersAction) -> None:
    from zfnet.cli.options import number

    p = sub.add_parser("runs", help="list and compare the pipeline's MLflow runs",
                       description="List the pipeline's MLflow runs (one per stage and variant) and compare "
                       "runs side by side: metrics, and the params that differ.")
    p.add_argument("--params", default="params.yaml", help="params file naming the MLflow store and experiment "
                   "(default: params.yaml; MLFLOW_TRACKING_URI overrides the store)")
    p.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment of params, else zfnet)")
    runs = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    ls = runs.add_parser("list", help="one row per run with its key metrics, newest first",
                         description="One row per run, in 120 columns: id, name, status, start and the key "
                         "metrics of its stage. --wide (or --metrics): full ids, stage, variant and one column "
                         "per metric.")
    ls.add_argument("--stage", help="only runs of this stage (e.g. train, ablate, transfer)")
    ls.add_argument("--latest", action="store_true", help="only the newest run of each stage and variant")
    ls.add_argument("--wide", action="store_true", help="every column, one per metric (the metrics most runs logged)")
    ls.add_argument("--metrics", help="comma-separated metric names, one column each (implies --wide)")
    ls.add_argument("--max", type=number(int, gt=0), default=50, help="at most this many runs (default: 50)")
    ls.set_defaults(func=_run(_list))

    cmp = runs.add_parser("compare", help="runs side by side: metrics and the params that differ",
                          description="Runs side by side, one column each: stage, variant, status, every "
                          "metric, and the params whose values differ.")
    cmp.add_argument("runs", nargs="+", metavar="RUN",
                     help="a run id, a unique prefix of one (>= 4 characters) or a run name (newest of that name, "
                     "e.g. train or ablate@no_fc7)")
    cmp.add_argument("--all-params", action="store_true", help="show every param, not only those that differ")
    cmp.set_defaults(func=_run(_compare))
