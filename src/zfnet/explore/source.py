"""What the explorer shows: a pipeline run's top-9 index, or one computed for any model and images.

:class:`Explorer` holds the index (:class:`~zfnet.viz.index.Top9Index`), the images it was made
from (the patches are cut from them), the network that uploads are analysed with, and what the
overview page says about the run. Two ways to get one:

- :func:`of_run`: a project folder after ``dvc repro`` (``results/top9_index`` from the
  ``visualize`` stage, ``data/prepared``, ``models/model.pt``, ``params.yaml``,
  ``metrics/findings.json``): nothing is computed;
- :func:`of_network`: any zfnet checkpoint or ``--model`` with a folder of images (or prepared
  shards): :func:`zfnet.viz.visualize.visualize` writes the index (and the Fig. 2, 4, 6 figures)
  into a cache folder on the first request, in a background thread whose progress the pages show;
  a later start with the same model and images finds it there.

The model runs one request at a time (:attr:`Explorer.model_lock`: the viz tools hook its modules).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from zfnet.explore.analyze import png
from zfnet.paths import MODELS, PREPARED, TOP9_INDEX
from zfnet.viz.index import Top9Index
from zfnet.viz.network import Network

log = logging.getLogger(__name__)
PATCH_CACHE = 256  # maps whose patches are kept in memory
CACHE = Path("outputs/explore")  # git-ignored; the index of a --checkpoint/--model run is computed here


class NotFound(LookupError):
    """A page or file that does not exist; ``valid`` names what does."""

    def __init__(self, message: str, valid: Sequence[str] = ()):
        super().__init__(message)
        self.message, self.valid = message, list(valid)


@dataclass
class Overview:
    """The run at a glance: ``facts`` ``[(what, value)]``, the findings (``metrics/findings.json``),
    MLflow links ``[(label, url)]`` and the folder of the figures (Figs. 2, 4, 6)."""

    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    findings: dict | None = None
    mlflow: list[tuple[str, str]] = field(default_factory=list)
    mlflow_note: str = ""
    figures_dir: Path | None = None

    def figures(self) -> list[str]:
        """The PNG names in :attr:`figures_dir` (none while it is being computed)."""
        folder = self.figures_dir
        return sorted(p.name for p in folder.glob("*.png")) if folder is not None and folder.is_dir() else []


@dataclass
class Progress:
    """The index computation: ``steps`` (``(seconds since start, what started)``), ``done``, ``error``."""

    started: float = 0.0
    steps: list[tuple[float, str]] = field(default_factory=list)
    done: bool = False
    error: str | None = None

    def step(self, message: str) -> None:
        self.steps.append((time.monotonic() - self.started, message))
        log.info("explore: %s", message)


class Explorer:
    """The explorer's data (module docstring).

    Args:
        index_dir: the top-9 index folder (:mod:`zfnet.viz.index`).
        images: makes the dataset the index scanned (``get_batch``), on first use.
        network: makes the model uploads are analysed with, on first use.
        overview: the overview page's facts.
        build: writes the index into ``index_dir``, reporting steps; None: it exists already.
    """

    def __init__(self, index_dir: str | Path, images: Callable[[], object], network: Callable[[], Network],
                 overview: Overview, build: Callable[[Callable[[str], None]], None] | None = None):
        self.index_dir, self.overview = Path(index_dir), overview
        self._images, self._network, self._build = images, network, build
        self._index: Top9Index | None = None
        self._dataset = self._net = None
        self._patches: OrderedDict[tuple[str, int], list[bytes]] = OrderedDict()
        self.progress = Progress(done=build is None)
        self._failure: Exception | None = None
        self._lock = threading.RLock()
        self.model_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether the index can be read (starting its computation if it has not started)."""
        if self._build is not None and not self.progress.started:
            self.start()
        return self.progress.done and self.progress.error is None

    def start(self) -> None:
        """Start computing the index in a background thread (once)."""
        with self._lock:
            if self.progress.started or self._build is None:
                return
            self.progress.started = time.monotonic()
        threading.Thread(target=self._run_build, name="explore-index", daemon=True).start()

    def _run_build(self) -> None:
        try:
            self._build(self.progress.step)
            self.progress.step("done")
        except Exception as exc:  # shown on every page; the server keeps serving
            log.error("explore: computing the index failed: %s", exc)
            from zfnet.errors import first_line

            self.progress.error, self._failure = first_line(exc), exc
        self.progress.done = True

    def wait(self) -> None:
        """Compute the index now if it is not there (the static export), raising what stopped it."""
        if self._build is not None and not self.progress.started:
            self.progress.started = time.monotonic()
            self._run_build()
        while not self.progress.done:
            time.sleep(0.1)
        if self._failure is not None:
            raise self._failure

    @property
    def index(self) -> Top9Index:
        if self._index is None:
            with self._lock:
                self._index = self._index or Top9Index(self.index_dir)
        return self._index

    @property
    def dataset(self):
        """The images the index scanned (made on first use)."""
        with self._lock:
            if self._dataset is None:
                self._dataset = self._images()
        return self._dataset

    @property
    def network(self) -> Network:
        """The model uploads are analysed with (loaded on first use)."""
        with self._lock:
            if self._net is None:
                self._net = self._network()
        return self._net

    def patch_pngs(self, layer: str, channel: int) -> list[bytes]:
        """The receptive-field patches of the map's top-k as PNG bytes, cut from the images once (the
        :data:`PATCH_CACHE` most recent maps are kept)."""
        key = (layer, channel)
        with self._lock:  # the datasets' readers are not thread-safe
            if key not in self._patches:
                self._patches[key] = [png(p) for p in self.index.patches(layer, channel, self.dataset)]
                while len(self._patches) > PATCH_CACHE:
                    self._patches.popitem(last=False)
            self._patches.move_to_end(key)
            return self._patches[key]

    def layer(self, name: str) -> dict:
        """The index entry of layer ``name``; :class:`NotFound` naming the layers if there is none."""
        if name not in self.index.layers:
            raise NotFound(f"no layer {name!r} in this index", list(self.index.layers))
        return self.index.layers[name]

    def channel(self, layer: str, channel: str | int) -> int:
        """``channel`` of ``layer`` as an int; :class:`NotFound` naming the valid range if it is not one."""
        count = self.layer(layer)["channels"]
        text = str(channel)
        if not text.isdigit() or int(text) >= count:
            raise NotFound(f"no channel {text!r} in layer {layer!r}", [f"0..{count - 1}"])
        return int(text)


def _params(run: Path) -> dict:
    from zfnet.io import load_yaml

    path = run / "params.yaml"
    return load_yaml(path.read_text()) if path.is_file() else {}


def _mlflow_links(run: Path, params: dict, ui: str) -> tuple[list[tuple[str, str]], str]:
    """Links to the run's pipeline runs in the MLflow UI at ``ui``, and a note where they cannot be listed."""
    import os

    if not ui:
        return [], ""
    links = [("MLflow UI", ui)]
    try:
        import mlflow

        from zfnet.report import pipeline_runs

        tracking = params.get("tracking") or {}
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or tracking.get("uri")
                                or f"sqlite:///{(run / 'mlflow.db').resolve()}")
        runs = pipeline_runs(tracking.get("experiment", "zfnet"), params.get("profile", "default"))
    except Exception as exc:  # no store, an old schema: the overview says so and links the UI only
        from zfnet.errors import first_line

        return links, f"the pipeline's MLflow runs could not be listed: {first_line(exc)}"
    base = ui.rstrip("/")
    return links + [(r.name, f"{base}/#/experiments/{r.experiment_id}/runs/{r.run_id}") for r in runs], ""


def run_overview(run: Path, mlflow_ui: str | None = None) -> Overview:
    """The overview of the pipeline run in ``run``: profile, commit, data hash, findings, figures, MLflow."""
    from zfnet.tracking import data_hash, git_commit

    params = _params(run)
    findings_file = run / "metrics" / "findings.json"
    figures_dir = run / (params.get("viz") or {}).get("out", "figures/visualize")
    ui = mlflow_ui if mlflow_ui is not None else (params.get("report") or {}).get("mlflow_ui", "")
    links, note = _mlflow_links(run, params, ui or "")
    return Overview(
        title=f"run in {run.resolve().name}/",
        facts=[("profile", str(params.get("profile", "unknown"))), ("commit", git_commit(run)[:12]),
               ("prepared data (dvc.lock md5)", data_hash(run / "dvc.lock")), ("index", str(TOP9_INDEX))],
        findings=json.loads(findings_file.read_text()) if findings_file.is_file() else None,
        mlflow=links, mlflow_note=note, figures_dir=figures_dir,
    )


def of_run(run: str | Path = ".", mlflow_ui: str | None = None, device: str = "cpu") -> Explorer:
    """The explorer of the pipeline run in the project folder ``run`` (module docstring)."""
    from zfnet.data.shards import ShardDataset
    from zfnet.viz.network import from_checkpoint

    run = Path(run)
    index_dir = run / TOP9_INDEX
    if not (index_dir / "index.json").is_file():
        raise FileNotFoundError(f"{index_dir}/index.json: no top-9 index in this run (run `dvc repro visualize`, "
                                "or explore a model with --checkpoint/--model and --images)")
    split = json.loads((index_dir / "index.json").read_text())["split"]
    return Explorer(index_dir, lambda: ShardDataset(run / PREPARED / split),
                    lambda: from_checkpoint(run / MODELS / "model.pt", device), run_overview(run, mlflow_ui))


def cache_key(network: Network, images: Path, files: Sequence[Path], settings: dict) -> str:
    """A name for the cache of ``network`` on ``images``: changes with the model's files, the image
    files (names, sizes, times) and the ``settings``."""
    def stamp(path: Path) -> list:
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]

    listing = [stamp(p) for p in files]
    text = json.dumps([network.name, listing, str(images.resolve()), settings], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def of_network(network: Network, model_files: Sequence[Path], images: str | Path | None = None,
               prepared: str | Path = PREPARED, milestones: Sequence[Path] = (), layers: Sequence[str] | None = None,
               cache: str | Path | None = None, max_images: int | None = None, max_pixels: int | None = None,
               batch_size: int = 128, max_batch: int = 256) -> Explorer:
    """The explorer of ``network`` on a folder of ``images`` (or the ``prepared`` validation split):
    its index is computed into ``cache`` (default ``outputs/explore/<key>``, :func:`cache_key`) when
    first asked for, unless it is there already. ``model_files``: the checkpoint or weights (the key)."""
    from zfnet.data.folder import ImageFiles
    from zfnet.data.shards import ShardDataset
    from zfnet.viz.visualize import visualize

    source = Path(images) if images is not None else Path(prepared) / "val"
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder" + ("" if images is not None else
                                                                        " (give --images, or --prepared)"))
    files = sorted(source.rglob("*")) if source.is_dir() else [source]
    settings = {"layers": list(layers or []), "max_images": max_images, "milestones": [str(m) for m in milestones]}
    folder = Path(cache) if cache else CACHE / cache_key(network, source, [*model_files, *milestones,
                                                                            *(f for f in files if f.is_file())], settings)

    def dataset():
        return ImageFiles(images, network.inputs.resize, max_pixels) if images is not None else ShardDataset(source)

    def build(step: Callable[[str], None]) -> None:
        visualize(network, prepared, folder / "figures", milestones, images_dir=images, max_pixels=max_pixels,
                  layers=layers, max_images=max_images, batch_size=batch_size, max_batch=max_batch,
                  index=folder / "index", progress=step)

    done = (folder / "index" / "index.json").is_file()
    overview = Overview(
        title=f"{network.name} on {source}",
        facts=[("model", network.name), ("images", str(source)), ("cache", str(folder))],
        figures_dir=folder / "figures",
    )
    return Explorer(folder / "index", dataset, lambda: network, overview, None if done else build)
