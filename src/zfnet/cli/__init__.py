"""The ``zfnet`` command: what people do outside DVC.

Each subcommand is a module of this package (``zfnet.cli.<command>``; ``occlude`` and ``invariance`` share
:mod:`zfnet.cli.analysis`) with ``register(subparsers)`` that adds its parser and
sets ``func``; this file only collects them. :mod:`zfnet.cli.options` holds what their options share.
Bad input never ends in a traceback: a bad option is refused where it is parsed, and every error
a user can cause (config, layout, checkpoint, image, file system) prints one line
``zfnet <command>: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from zfnet.errors import first_line

SUBCOMMAND_MODULES = (
    "zfnet.cli.config",  # config
    "zfnet.cli.visualize",  # visualize
    "zfnet.cli.analysis",  # occlude, invariance
    "zfnet.cli.ablation",  # ablation
    "zfnet.cli.runs",  # runs
    "zfnet.cli.findings",  # findings
    "zfnet.cli.retrain",  # retrain
    "zfnet.cli.bench",  # bench
    "zfnet.cli.explore",  # explore
)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block): ``zfnet occlude: error: argument
    --patch: must be > 0, got 0 (see zfnet occlude --help)``; subcommand parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def user_errors() -> tuple[type[BaseException], ...]:
    """What a user can cause (the stages' :func:`~zfnet.stages.common.expected_errors`, an
    unreadable image, a file-system refusal), shown as one line with exit status 2."""
    from zfnet.data.images import BadImage
    from zfnet.stages.common import expected_errors

    return (*expected_errors(), BadImage, OSError)


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: an ``OSError`` as ``<file>: <reason>``, anything else its first line."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return first_line(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="zfnet",
        description="Zeiler & Fergus (2014) reproduction: run the library's tools outside the DVC pipeline.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from zfnet.stages.common import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        print(f"zfnet {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
