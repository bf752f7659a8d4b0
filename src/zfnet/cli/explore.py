"""``zfnet explore``: a local web app to browse every feature map of a pipeline run (``--run DIR``,
what the ``visualize`` stage indexed) or of any checkpoint or ``--model`` on a folder of images
(indexed on the first request, then cached), and to analyse an uploaded image; ``--export DIR``
writes the same pages as static files. The app is :mod:`zfnet.explore`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _explorer(args: argparse.Namespace):
    """The :class:`~zfnet.explore.source.Explorer` the options name: a run, or a network on images."""
    from zfnet.cli.model import from_args
    from zfnet.cli.options import device
    from zfnet.config import ConfigError
    from zfnet.explore.source import of_network, of_run
    from zfnet.viz.layers import LayerError, check_maps

    if args.checkpoint is None and args.model is None:
        if args.images is not None or args.layers:
            raise ConfigError("--images, --layers: name the model too (--checkpoint or --model); "
                              "a run's index was made by its visualize stage")
        return of_run(args.run, args.mlflow_ui, device(args.device))
    network = from_args(args, device(args.device))
    if network.checkpoint is None and args.images is None:
        raise ConfigError("--images: needed with --model (a folder of your images to scan)")
    if args.layers:
        try:
            check_maps(network.model, args.layers, network.inputs.size)
        except LayerError as exc:
            raise ConfigError(f"--layers: {exc}") from None
    files = [Path(args.checkpoint)] if args.checkpoint else [Path(args.weights)]
    milestones = sorted((files[0].parent / "milestones").glob("epoch-*.pt")) if args.checkpoint else []
    return of_network(network, files, args.images, args.prepared, milestones, args.layers, args.cache,
                      args.max_images or None, args.max_pixels)


def _run(args: argparse.Namespace) -> int:
    from zfnet.explore.app import serve
    from zfnet.explore.export import export

    explorer = _explorer(args)
    if args.export:
        print(json.dumps(export(explorer, args.export), indent=2))
        print(f"zfnet explore: wrote {args.export}/ (open index.html)", file=sys.stderr)
        return 0
    print(f"zfnet explore: http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    serve(explorer, args.host, args.port, max_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
          patch=args.patch, stride=args.stride)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from zfnet.cli.model import add_options
    from zfnet.cli.options import max_pixels_option, mirror, number
    from zfnet.config import OcclusionConfig, VizConfig
    from zfnet.explore.analyze import UPLOAD_MAX_BYTES, UPLOAD_MAX_PIXELS

    p = sub.add_parser(
        "explore", help="browse every feature map of a run or any model in a local web app (or --export static pages)",
        description="Serve a local web app over every feature map of every layer: each map's top-9 deconvnet "
        "projections beside their receptive-field patches (Fig. 2), its evolution over the milestone "
        "checkpoints (Fig. 4), the classes of its top-9, and an upload form that analyses your image "
        "(predictions, the occlusion maps of Fig. 7, a projection). Without --checkpoint/--model it shows "
        "the pipeline run in --run (what the visualize stage indexed); with them, the index of that model on "
        "--images (or the prepared validation split) is computed on the first request and cached.",
    )
    p.add_argument("--run", default=".", metavar="DIR", help="the project folder of a pipeline run (default: .)")
    add_options(p)
    p.add_argument("--images", metavar="DIR", help="with --checkpoint/--model: a folder of images to scan (any layout)")
    p.add_argument("--prepared", default="data/prepared", metavar="DIR",
                   help="with --checkpoint and no --images: the prepared shards whose val split is scanned "
                   "(default: data/prepared)")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="with --checkpoint/--model: the layers to index "
                   "(default: ZFNet's conv1..conv5; module names of your --model, e.g. features.11)")
    mirror(p, "--max-images", VizConfig, "max_images", "images scanned, 0 = all", type=number(int, ge=0))
    p.add_argument("--cache", metavar="DIR", help="where the index of --checkpoint/--model is computed (default: a "
                   "new outputs/explore/<key>/ per model and images; a `zfnet visualize --out DIR` folder is reused)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                   "only; any other is warned about: the app has no login)")
    p.add_argument("--port", type=number(int, gt=0, lt=65536), default=8000, help="port (default: 8000)")
    p.add_argument("--mlflow-ui", metavar="URL", help="the MLflow UI to link the run's stages to (default: the "
                   "run's report.mlflow_ui)")
    p.add_argument("--max-upload-mb", type=number(float, gt=0), default=UPLOAD_MAX_BYTES / 2**20, metavar="MB",
                   help=f"largest upload accepted (default: {UPLOAD_MAX_BYTES / 2**20:.0f})")
    max_pixels_option(p, UPLOAD_MAX_PIXELS)
    mirror(p, "--patch", OcclusionConfig, "patch", "occluder side for uploads, input pixels", type=number(int, gt=0))
    mirror(p, "--stride", OcclusionConfig, "stride", "occluder step for uploads, input pixels", type=number(int, gt=0))
    mirror(p, "--device", VizConfig, "device", "where the model runs", choices=("auto", "cpu", "cuda"))
    p.add_argument("--export", metavar="DIR", help="write the pages (without the upload form) as static files "
                   "into DIR instead of serving them")
    p.set_defaults(func=_run)
