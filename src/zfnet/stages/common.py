"""What every stage entry point shares: logging, the config (with the checks that need the
experiments' catalogues) and the error boundary. The pipeline's paths are in :mod:`zfnet.paths`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

from zfnet.config import Config, ConfigError, load_params
from zfnet.experiments.variants import check_variants


def setup_logging() -> None:
    level = os.environ.get("ZFNET_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "git", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input, not a bug: shown as one line, exit status 2."""
    from zfnet.data.imagenet import LayoutError
    from zfnet.data.shards import ShardError
    from zfnet.tracking import TrackingError
    from zfnet.train.checkpoint import CheckpointError

    return (ConfigError, LayoutError, ShardError, CheckpointError, TrackingError, FileNotFoundError)


def load_config(params: str | Path = "params.yaml") -> Config:
    """``params`` as a validated :class:`~zfnet.config.Config`, its ablation variant names included.

    Why the variant names are checked here and not in :func:`zfnet.config.validate`: they are the
    keys of the catalogue in :mod:`zfnet.experiments.variants`, a module above :mod:`zfnet.config`
    (it imports the config and builds models); checking them in ``validate`` made the import cycle
    config -> experiments.variants -> config, hidden by a function-level import. So
    :mod:`zfnet.config` checks what its schema alone decides, and the layer that knows the catalogue
    adds its check where the config is loaded: here, for every stage (:func:`run_stage`), before any
    work, and in
    :func:`zfnet.cli.options.composed_config` for the commands that compose ``conf/``. A bad name
    is one line like any other bad value: ``params.yaml: ablation.variants[1]: must be one of
    [...], got 'no_layer9'``.
    """
    cfg = load_params(params)
    check_variants(cfg, str(params))
    return cfg


def run_stage(name: str, body: Callable[[Config], None], params: str = "params.yaml") -> None:
    """Load and validate ``params`` (:func:`load_config`, before any work), then run ``body``; bad
    input, and running out of disk space (:class:`zfnet.io.DiskFullError`, or a library's own
    ``OSError``), exit 2 with one line."""
    from zfnet.io import out_of_space

    setup_logging()
    try:
        cfg = load_config(params)
        body(cfg)
    except (*expected_errors(), OSError) as exc:
        if not isinstance(exc, expected_errors()) and not out_of_space(exc):
            raise  # any other OSError: its traceback helps
        print(f"zfnet {name}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
