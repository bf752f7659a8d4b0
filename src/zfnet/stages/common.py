"""What every stage entry point shares: the pipeline's paths, logging and the error boundary."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from zfnet.config import Config, ConfigError, load_params

RAW = Path("data/raw")  # data stage out: the dataset (synthetic) or a pointer to it (real)
DATASET_JSON = RAW / "dataset.json"
PREPARED = Path("data/prepared")  # preprocess stage out: shards + manifest + mean
MODELS = Path("models")  # train stage out: milestones/ and model.pt
METRICS = Path("metrics")
PLOTS = Path("plots")
STATE = Path(".zfnet/state")  # resume state: outside every DVC out, survives a crash


def setup_logging() -> None:
    level = os.environ.get("ZFNET_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "urllib3", "git", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input, not a bug: shown as one line, exit status 2."""
    from zfnet.data.imagenet import LayoutError
    from zfnet.data.shards import ShardError
    from zfnet.tracking import TrackingError
    from zfnet.train.checkpoint import CheckpointError

    return (ConfigError, LayoutError, ShardError, CheckpointError, TrackingError, FileNotFoundError)


def run_stage(name: str, body: Callable[[Config], None], params: str = "params.yaml") -> None:
    """Load and validate ``params`` (before any work), then run ``body``; bad input exits 2 with one line."""
    setup_logging()
    try:
        cfg = load_params(params)
        body(cfg)
    except expected_errors() as exc:
        print(f"zfnet {name}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
