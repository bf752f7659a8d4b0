"""``zfnet bench`` (:mod:`zfnet.cli.bench`): measure the library against this machine's limits and peer tools, in one run.

``zfnet bench [--quick] [--json] [--device cpu|cuda] [--only SECTION,...] [--out FILE]``

Sections (:data:`SECTIONS`), each timed with :func:`zfnet.bench.timing.race` (interleaved rounds,
best kept) and judged against the targets of docs/benchmarks.md:

========== ======================================================================================
gemm       fp32 / bf16 ``torch.mm`` peak of the device (the yardstick of ``train``)
train      ZFNet at 224x224 and the default profile's model: step images/s, FLOP/s vs the peak,
           fp32 / channels_last / bf16 autocast / torch.compile, and where a step's time goes
loader     a real training epoch vs the same steps on tensors in memory; the loader alone at 224:
           images/s per core, a 16-core GPU host's projection, headroom over the training step
preprocess preprocessing images/s vs decode-only images/s on the same JPEGs
deconv     the batched deconvnet vs a one-neuron-at-a-time gradient loop
occlusion  our occlusion (3 maps) vs Captum's ``Occlusion`` at its best batching (1 map)
top9       the top-9 pass vs plain inference
layer      a whole layer's top-9 and projections vs one inference pass (ZFNet, AlexNet at 224)
explore    ``zfnet explore`` over HTTP: layer and channel pages from the top-9 index, a 500x400 upload analysed
repro      the whole default ``dvc repro`` from nothing in a temporary copy, then a no-op one
========== ======================================================================================

``--quick`` shrinks every size (CI: proves the command runs and emits valid JSON in well under a
minute) and leaves out ``torch.compile``, and ``repro`` unless ``--only`` names it. Models use
the pipeline's settings from ``params.yaml``; ``--json`` prints one JSON object on stdout (logs
and anything else on stderr). Exit status 1 if a section failed (its error is in ``errors``).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from zfnet.bench.timing import Rounds

log = logging.getLogger(__name__)

SECTIONS = ("gemm", "train", "loader", "preprocess", "deconv", "occlusion", "top9", "layer", "explore", "repro")


@dataclass(frozen=True)
class Sizes:
    """How big and how often each section measures (:data:`QUICK` or :data:`FULL`)."""

    gemm: tuple[int, ...]  # matrix sides, fp32 (and bf16 where native)
    gemm_slow: tuple[int, ...]  # bf16 sides where it is emulated
    gemm_rounds: Rounds
    batch_224: int  # ZFNet at 224: images per training step (on a CPU)
    batch_224_gpu: int  # ... on a GPU (the paper's 128 in the full run)
    batch_default: int | None  # the default model (and the loader): None = train.batch_size
    train_rounds: Rounds  # keep warmup >= 1 with compile
    breakdown_rounds: Rounds
    breakdown_all: bool  # break down every memory format / precision, not only the loop's
    compile: bool
    classes: int  # the scratch dataset of loader / preprocess
    train_per_class: int
    val_per_class: int
    data_rounds: Rounds
    loader_batch: int  # the loader at 224: images per batch, and batches per contender
    loader_steps: int
    imagenet_jpegs: int  # preprocess: ImageNet-sized JPEGs per class too (0: none)
    deconv_images: int
    loop_neurons: int
    deconv_224_images: int  # 0: no 224 run
    loop_neurons_224: int
    occlusion_images: int
    captum_settings: tuple[int, ...]
    top9_images: int
    top9_224_images: int  # 0: no 224 run
    viz_rounds: Rounds
    viz_rounds_224: Rounds
    layer_images: int  # the layer section: images, their side, and the rounds of its pass and inference
    layer_size: int
    layer_rounds: Rounds
    explore_all_layers: bool  # explore: index every conv layer (else only the top one, whose pages are timed)


QUICK = Sizes(gemm=(256, 512), gemm_slow=(128,), gemm_rounds=Rounds(2), batch_224=1, batch_224_gpu=8, batch_default=8,
              train_rounds=Rounds(1, warmup=0), breakdown_rounds=Rounds(1, warmup=0), breakdown_all=False,
              compile=False, classes=3,
              train_per_class=16, val_per_class=2, data_rounds=Rounds(1, warmup=0), loader_batch=8, loader_steps=4,
              imagenet_jpegs=0,
              deconv_images=2, loop_neurons=4,
              deconv_224_images=0, loop_neurons_224=0, occlusion_images=2, captum_settings=(1, 16), top9_images=32,
              top9_224_images=0, viz_rounds=Rounds(1), viz_rounds_224=Rounds(1), layer_images=4, layer_size=64,
              layer_rounds=Rounds(1), explore_all_layers=False)
FULL = Sizes(gemm=(512, 1024, 2048, 4096), gemm_slow=(256, 512), gemm_rounds=Rounds(5, min_seconds=3), batch_224=32,
             batch_224_gpu=128,
             batch_default=None, train_rounds=Rounds(3, min_seconds=20), breakdown_rounds=Rounds(3, min_seconds=10),
             breakdown_all=True, compile=True, classes=11, train_per_class=96, val_per_class=4,
             data_rounds=Rounds(5, min_seconds=30), loader_batch=128, loader_steps=40, imagenet_jpegs=16,
             deconv_images=9, loop_neurons=64, deconv_224_images=1, loop_neurons_224=8, occlusion_images=32,
             captum_settings=(1, 4, 16, 64), top9_images=1024, top9_224_images=64, viz_rounds=Rounds(3, min_seconds=15),
             viz_rounds_224=Rounds(2, min_seconds=20, warmup=0), layer_images=16, layer_size=224,
             layer_rounds=Rounds(3, min_seconds=5), explore_all_layers=True)


def sections(only: list[str] | None, quick: bool) -> list[str]:
    """The sections to run, in :data:`SECTIONS` order: ``only``, or all (but ``repro`` in quick mode)."""
    return [s for s in SECTIONS if (s in only if only else not (quick and s == "repro"))]


class Bench:
    """One ``zfnet bench`` run: the config, the sizes, the results so far."""

    def __init__(self, args: argparse.Namespace):
        from zfnet.config import ConfigError, load_params

        self.args = args
        self.cfg = load_params(Path(args.project) / args.params)
        self.sizes = QUICK if args.quick else FULL
        self.device = torch.device(args.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA device")
        self.results: dict[str, dict] = {}
        self.targets: list[dict] = []
        self.skipped: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self._scratch = None

    # -- shared inputs ---------------------------------------------------------------------------

    def scratch(self):
        """The synthetic dataset of ``loader`` and ``preprocess`` (made once, removed at the end)."""
        from zfnet.bench.data import Scratch

        if self._scratch is None:
            s = self.sizes
            self._scratch = Scratch(self.cfg, s.classes, s.train_per_class, s.val_per_class)
        return self._scratch

    def models(self) -> dict[str, tuple]:
        """``{label: (ModelConfig, num_classes, input_size)}``: the paper's ZFNet at 224 and the default
        profile's model at its crop size."""
        from zfnet.config import ModelConfig

        return {"224": (ModelConfig(), 1000, 224),
                "default": (self.cfg.model, self.cfg.data.synthetic.classes, self.cfg.train.crop)}

    def eval_model(self, label: str):
        from zfnet.bench.train import make_model

        model_cfg, classes, size = self.models()[label]
        return make_model(model_cfg, classes, size, self.cfg.train, self.device).eval()

    def images(self, n: int, size: int) -> torch.Tensor:
        return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n)).to(self.device)

    # -- sections --------------------------------------------------------------------------------

    def gemm(self) -> dict:
        from zfnet.bench.gemm import bench_gemm

        s = self.sizes
        return bench_gemm(self.device, s.gemm, s.gemm_slow, s.gemm_rounds)

    def train(self) -> dict:
        from zfnet.bench.train import bench_train_model, loop_settings, race_variants

        s, t = self.sizes, self.cfg.train
        if "gemm" not in self.results:
            self.results["gemm"] = self.gemm()
        gemm = self.results["gemm"]
        if not s.compile:
            self.skipped["train: torch.compile"] = "left out in --quick (compiling takes minutes on a cold cache)"
        out = {}
        with loop_settings(t, self.device):
            for label, (model_cfg, classes, size) in self.models().items():
                bf16 = gemm["bf16_native"] or label != "224"
                if not bf16:
                    self.skipped[f"train: {label} bf16 autocast"] = (
                        "bf16 is emulated here (~20x slower than fp32, see gemm and the default model's row): "
                        "not run at 224")
                batch_224 = s.batch_224_gpu if self.device.type == "cuda" else s.batch_224
                batch = batch_224 if label == "224" else s.batch_default or t.batch_size
                log.info("train: %s (%dx%d, batch %d)", label, size, size, batch)
                out[label], checks = bench_train_model(label, model_cfg, classes, size, batch, t, self.device,
                                                       race_variants(t, self.device, bf16, s.compile), s.train_rounds,
                                                       gemm, s.breakdown_rounds, s.breakdown_all)
                self.targets += checks
        return {"models": out, "threads": torch.get_num_threads()}

    def loader(self) -> dict:
        from zfnet.bench.data import bench_loader, bench_loader_224

        s = self.sizes
        default, checks = bench_loader(self.scratch(), self.device, s.data_rounds, s.batch_default)
        steps = self.results.get("train", {}).get("models", {}).get("224", {}).get("variants", {})
        fastest = max((v["images_per_s"] for v in steps.values()), default=None)  # what the step consumes at most
        paper, more = bench_loader_224(self.scratch(), self.device, s.data_rounds, s.loader_batch, s.loader_steps, fastest)
        self.targets += checks + more
        return {"default": default, "224": paper}

    def preprocess(self) -> dict:
        from zfnet.bench.data import bench_preprocess

        s, scratch = self.sizes, self.scratch()
        out = {"default": bench_preprocess(scratch, scratch.raw, self.cfg.preprocess.size, s.data_rounds)}
        if s.imagenet_jpegs:  # ImageNet's typical 500x375 JPEGs, stored at the paper's 256
            raw = scratch.draw("imagenet-sized", min_side=375, max_side=500, train_per_class=s.imagenet_jpegs)
            out["imagenet"] = bench_preprocess(scratch, raw, 256, s.data_rounds)
        return out

    def deconv(self) -> dict:
        from zfnet.bench.deconv import bench_deconv

        s, layer = self.sizes, "conv5"
        runs = {"default": (s.deconv_images, s.loop_neurons), "224": (s.deconv_224_images, s.loop_neurons_224)}
        out = {}
        for label, (n, neurons) in runs.items():
            if n:
                model = self.eval_model(label)
                out[label], checks = bench_deconv(model, self.images(n, model.input_size), layer,
                                                  self.cfg.viz.max_batch, neurons,
                                                  s.viz_rounds_224 if label == "224" else s.viz_rounds, label)
                self.targets += checks
        return out

    def occlusion(self) -> dict:
        from zfnet.bench.occlusion import bench_occlusion

        s, o = self.sizes, self.cfg.analyze.occlusion
        model = self.eval_model("default")
        images = self.images(s.occlusion_images, model.input_size)
        labels = torch.randint(0, model.num_classes, (len(images),), generator=torch.Generator().manual_seed(0))
        result, checks = bench_occlusion(model, images, labels.to(self.device), o.patch, o.stride, o.max_batch,
                                         s.captum_settings, s.viz_rounds)
        self.targets += checks
        return result

    def top9(self) -> dict:
        from zfnet.bench.deconv import bench_top9

        s = self.sizes
        out = {}
        for label, n in (("default", s.top9_images), ("224", s.top9_224_images)):
            if n:
                model = self.eval_model(label)
                rounds = s.viz_rounds_224 if label == "224" else s.viz_rounds
                out[label], checks = bench_top9(model, self.images(n, model.input_size), self.cfg.viz.batch_size,
                                                rounds, label)
                self.targets += checks
        return out

    def layer(self) -> dict:
        import torchvision

        from zfnet.bench.layer import bench_layer
        from zfnet.bench.train import make_model
        from zfnet.config import ModelConfig

        s = self.sizes
        torch.manual_seed(0)
        models = {"ZFNet": (make_model(ModelConfig(), 1000, s.layer_size, self.cfg.train, self.device), "conv5"),
                  "AlexNet": (torchvision.models.alexnet(weights=None).to(self.device), "features.11")}
        out = {}
        for label, (model, layer) in models.items():
            out[label], checks = bench_layer(model.eval(), layer, self.images(s.layer_images, s.layer_size),
                                             self.cfg.viz.batch_size, self.cfg.viz.max_batch, s.layer_rounds, label)
            self.targets += checks
        return out

    def explore(self) -> dict:
        from zfnet.bench.explore import bench_explore

        result, checks = bench_explore(self.scratch(), self.device, self.sizes.viz_rounds, self.sizes.explore_all_layers)
        self.targets += checks
        return result

    def repro(self) -> dict:
        from zfnet.bench.repro import bench_repro

        result, checks = bench_repro(Path(self.args.project))
        self.targets += checks
        return result

    # -- the run ---------------------------------------------------------------------------------

    def run(self, sections: list[str]) -> dict:
        meta = self.meta()
        if self.args.quick and "repro" not in sections:
            self.skipped["repro"] = "left out in --quick (add --only repro to run it)"
        try:
            for name in sections:
                log.info("bench: %s", name)
                before, t0 = len(self.targets), time.perf_counter()
                try:
                    self.results[name] = getattr(self, name)()
                except ImportError as exc:
                    self.skipped[name] = f"needs {exc.name or exc}: not installed"
                except Exception as exc:  # report it, run the other sections, exit 1 at the end
                    log.error("bench: section %s failed:\n%s", name, traceback.format_exc())
                    self.errors[name] = f"{type(exc).__name__}: {exc}"
                for check in self.targets[before:]:
                    check["section"] = name
                meta["section_seconds"][name] = time.perf_counter() - t0
                meta["section_load_average"][name] = os.getloadavg()[0]
        finally:
            if self._scratch is not None:
                self._scratch.close()
        meta["load_average_end"] = list(os.getloadavg())
        return {"meta": meta, "sections": self.results, "targets": self.targets, "skipped": self.skipped,
                "errors": self.errors}

    def meta(self) -> dict:
        from zfnet.bench.gemm import cpu_name
        from zfnet.train.runtime import bf16_support, cpu_features

        return {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "zfnet bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
            "quick": self.args.quick,
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_name(),
            "cpu": cpu_name(),
            "cpu_features": cpu_features(),
            "bf16_native": bf16_support(self.device)["native"],
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_start": list(os.getloadavg()),
            "git": _git_state(Path(self.args.project)),
            "section_seconds": {},
            "section_load_average": {},  # 1-minute load average when each section ended
        }


def _git_state(project: Path) -> str | None:
    """``<commit>`` of the measured checkout, ``+`` if it has uncommitted changes; None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+" if dirty else "")


# -- human output ----------------------------------------------------------------------------------


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return {True: "yes", False: "no", None: "n/a"}[v]
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _table(headers: list[str], rows: list[list]) -> str:
    from tabulate import tabulate

    return tabulate([[_fmt(c) for c in r] for r in rows], headers, tablefmt="github", disable_numparse=True)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _human_train(r: dict) -> list[str]:
    out = []
    for label, m in r["models"].items():
        out.append(f"ZFNet {label}: {m['input_size']}x{m['input_size']}, batch {m['batch']}, widths {m['widths']}, "
                   f"fc {m['fc_sizes']}, {m['train_gflop_per_image']:.3g} GFLOP/image (3 x forward); the loop runs "
                   f"'{m['loop_variant']}'; fp32 GEMM peak in the same race {m['peak_gflops']:.3g} GFLOP/s")
        rows = [[name, v["images_per_s"], 1e3 * v["step_s"], v["gflops"], _pct(v["peak_fraction"])]
                for name, v in m["variants"].items()]
        out.append(_table(["variant", "images/s", "ms/step", "GFLOP/s", "of fp32 peak"], rows))
        if m.get("breakdown"):
            names, parts = list(m["breakdown"]), list(m["breakdown"].values())
            out.append("Where a step goes (each unit's forward + backward alone, raced with the whole step and "
                       "the GEMM): " + "; ".join(f"'{n}' parts sum to {b['sum_ms']:.4g} ms, whole step "
                                                 f"{b['step_ms']:.4g} ms, peak {b['peak_gflops']:.3g} GFLOP/s"
                                                 for n, b in zip(names, parts)))
            kinds = sorted(parts[0]["kinds"], key=lambda k: -parts[0]["kinds"][k]["ms"])
            rows = [[k, *(f"{b['kinds'][k]['ms']:.3g} ({_pct(b['kinds'][k]['share'])})" for b in parts)] for k in kinds]
            out.append(_table(["kind", *(f"{n}: ms (share)" for n in names)], rows))
            rows = []
            for i, unit in enumerate(parts[0]["units"]):
                if "gflops" in unit:
                    cells = [b["units"][i] for b in parts]
                    rows.append([unit["name"], *(f"{u['ms']:.3g} ms, {u['gflops']:.3g} GFLOP/s "
                                                 f"({_pct(u['peak_fraction'])})" for u in cells)])
            out.append(_table(["layer (fwd+bwd)", *names], rows))
    return out


def _human_rows(name: str, r: dict) -> list[str]:
    if name == "gemm":
        rows = [[f"fp32 mm {n}x{n}", g] for n, g in r["fp32_by_size"].items()]
        rows += [[f"bf16 mm {n}x{n}", g] for n, g in r["bf16_by_size"].items()]
        rows += [["fp32 peak", r["fp32_gflops"]], ["bf16 peak", r["bf16_gflops"]],
                 ["bf16 native", f"{_fmt(r['bf16_native'])} ({r['bf16_why']})"]]
        return [_table(["GEMM", "GFLOP/s"], rows)]
    if name == "train":
        return _human_train(r)
    if name == "layer":
        r = {label: {**m, "projection_operators": ", ".join(f"{k[6:]} {_pct(v)}" for k, v in m["projection_operators"].items())}
             for label, m in r.items()}
    if name in ("deconv", "top9", "preprocess", "layer", "loader"):  # one column per model or dataset
        keys = list(dict.fromkeys(k for m in r.values() for k in m))
        header = [f"{label} JPEGs" if name == "preprocess" else label if name == "layer" else f"ZFNet {label}"
                  for label in r]
        return [_table(["measurement", *header], [[k, *(m.get(k) for m in r.values())] for k in keys])] if r else []
    if name == "occlusion":
        r = {**r, "captum_s": ", ".join(f"{k}: {v:.3g}" for k, v in r["captum_s"].items())}
    if name == "repro":
        stages = [[stage, seconds, _pct(seconds / r["full_s"])] for stage, seconds in r["stages"].items()]
        return [_table(["measurement", "value"], [[k, v] for k, v in r.items() if k != "stages"]),
                _table(["stage (until the next starts)", "seconds", "share"], stages)]
    return [_table(["measurement", "value"], [[k, v] for k, v in r.items()])]


def human(report: dict) -> str:
    """The report as readable text: a table per section, then the targets."""
    meta = report["meta"]
    lines = [f"zfnet bench on {meta['device_name']} ({meta['device']}), code {meta['git']}, torch {meta['torch']}, "
             f"{meta['threads']} threads, {meta['date']}; 1-minute load average "
             f"{meta['load_average_start'][0]:.2f} -> {meta['load_average_end'][0]:.2f}"]
    for name, r in report["sections"].items():
        lines += ["", f"## {name}", *_human_rows(name, r)]
    if report["targets"]:
        rows = [[t["name"], f"{_fmt(t['value'])} {t['unit']}".strip(), f"{t['op']} {_fmt(t['limit'])}", t["ratio"],
                 {True: "PASS", False: "FAIL", None: "n/a"}[t["ok"]] + (f" ({t['note']})" if t["note"] else "")]
                for t in report["targets"]]
        lines += ["", "## targets", _table(["target", "value", "target", "ratio", "status"], rows)]
    for title, items in (("skipped", report["skipped"]), ("errors", report["errors"])):
        if items:
            lines += ["", f"## {title}", *(f"- {k}: {v}" for k, v in items.items())]
    return "\n".join(lines)
