"""DVC stage ``transfer_data``: draw the transfer datasets, or point at (and safely unpack) real ones.

Synthetic (``transfer.source: synthetic``): :func:`zfnet.data.synthetic_transfer.write_transfer`
writes Caltech-101, Caltech-256 and VOC 2012 layouts into ``data/transfer/``, with classes
distinct from the pretraining classes (those of ``data.synthetic``). Real (``transfer.source:
real``): ``transfer.caltech101`` / ``caltech256`` / ``voc2012`` name folders or archives; an
archive is extracted safely (:mod:`zfnet.data.archives`) into ``data/transfer/<dataset>/``, and
so is an archive inside it when the layout is not found otherwise (the real
``caltech-101.zip`` holds ``101_ObjectCategories.tar.gz``).

Out: ``data/transfer/`` with ``sources.json``: ``{dataset: {"root", "classes", "images"}}``, what
the ``transfer`` and ``probe`` stages read.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import mlflow

from zfnet import tracking
from zfnet.config import Config
from zfnet.data import archives, caltech, synthetic, voc
from zfnet.data.imagenet import LayoutError
from zfnet.data.synthetic_transfer import write_transfer
from zfnet.io import write_json
from zfnet.paths import TRANSFER, TRANSFER_SOURCES
from zfnet.stages.common import run_stage

log = logging.getLogger("zfnet.stages.transfer_data")

MARKERS = {"caltech101": caltech.CALTECH101_DIR, "caltech256": caltech.CALTECH256_DIR, "voc2012": "VOC2012"}


def locate(source: str | Path, dataset: str, dest: Path) -> Path:
    """The folder to read ``dataset`` from: ``source`` itself, or where its archive was unpacked."""
    source, marker = Path(source), MARKERS[dataset]
    if archives.is_archive(source):
        source = archives.extract(source, dest)
    try:
        caltech.find_folder(source, marker)
        return source
    except LayoutError:
        nested = sorted(p for p in source.rglob(f"{marker}*") if archives.is_archive(p))
        if not nested:
            raise
        archives.extract(nested[0], dest)
        caltech.find_folder(dest, marker)
        return dest


def summary(dataset: str, root: Path) -> dict:
    if dataset == "voc2012":
        split = voc.read_split(root, "trainval")
        return {"root": str(root), "classes": len(split.classes), "images": len(split.ids)}
    data = (caltech.read_caltech101 if dataset == "caltech101" else caltech.read_caltech256)(root)
    return {"root": str(root), "classes": len(data.classes), "images": len(data.samples)}


def main(cfg: Config) -> None:
    tr = cfg.transfer
    if TRANSFER.exists():
        shutil.rmtree(TRANSFER)
    if tr.source == "synthetic":
        exclude = synthetic.CLASS_NAMES[: cfg.data.synthetic.classes] if cfg.data.source == "synthetic" else ()
        written = write_transfer(TRANSFER, tr.synthetic, exclude, workers=tr.workers)
        log.info("drew the transfer datasets in %.1f s", written["seconds"])
        roots = {"caltech101": TRANSFER / "caltech101", "caltech256": TRANSFER / "caltech256", "voc2012": TRANSFER}
    else:
        roots = {ds: locate(getattr(tr, ds), ds, TRANSFER / ds) for ds in MARKERS}
    sources = {ds: summary(ds, root) for ds, root in roots.items()}
    write_json(TRANSFER_SOURCES, sources)
    log.info("transfer datasets: %s", sources)
    with tracking.stage_run(cfg, "transfer_data"):
        mlflow.log_metrics({f"{ds}_{k}": v[k] for ds, v in sources.items() for k in ("classes", "images")})
        tracking.log_artifacts(TRANSFER_SOURCES)


if __name__ == "__main__":
    run_stage("transfer_data", main)
