"""The ``zfnet`` command: what people do outside DVC.

Each subcommand lives beside the library code it drives, in a module with
``register(subparsers)`` that adds its parser and sets ``func``; this file only collects them.
Errors in the input (config, layout, checkpoint) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = (
    "zfnet.cli_config",  # config
    "zfnet.viz.command",  # visualize
    "zfnet.viz.analysis_command",  # occlude, invariance
    "zfnet.experiments.ablation_command",  # ablation
    "zfnet.runs_command",  # runs
    "zfnet.retrain_command",  # retrain
    "zfnet.bench.command",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zfnet",
        description="Zeiler & Fergus (2014) reproduction: run the library's tools outside the DVC pipeline.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from zfnet.stages.common import expected_errors, setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return int(args.func(args) or 0)
    except expected_errors() as exc:
        print(f"zfnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
