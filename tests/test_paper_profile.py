"""The paper profile end to end: its whole `dvc repro` graph on a handful of images at 256/224.

``experiment=paper`` reads an ImageNet layout (``data.source: imagenet``): here a synthetic one of
4 classes drawn at ImageNet-like sizes, so every stage runs its 224 path (shards at 256, 224 crops,
the 10-crop evaluation, 729 occlusion positions, receptive fields and invariance at 224, transfer
features at 224). The counts shrink as in ``conf/experiment/tiny.yaml`` and the model is narrowed
(conv widths 8/16/16/16/8, fc 32): the geometry, the recipe and every code path are the paper's,
the arithmetic is CI-sized. The run also shows that the outs stay single copies on the disk: each
workspace file of ``data/prepared`` and ``models`` is a link into the DVC cache (``.dvc/config``
``cache.type``), not a second copy.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, make_project

COUNTS = [  # a handful of images and tiny epoch counts; everything else is the paper profile's
    "model.widths=[8,16,16,16,8]", "model.fc_sizes=[32,32]",
    "train.epochs=2", "train.milestones=[1,2]", "train.batch_size=16", "train.threads=1",
    "ablation.variants=[zfnet,krizhevsky]", "ablation.epochs=1",
    "viz.maps=4", "viz.evolution_maps=2",
    "analyze.occlusion.images=4", "analyze.occlusion.figure_images=2", "analyze.invariance.images=2",
    "analyze.invariance.steps=3", "analyze.invariance.rotation_step=90.0", "analyze.invariance.test_images=8",
    "analyze.correspondence.sets=3", "analyze.correspondence.per_set=3",
    "transfer.synthetic.caltech101_classes=3", "transfer.synthetic.caltech256_classes=4",
    "transfer.synthetic.caltech101_images=[8,10]", "transfer.synthetic.caltech256_images=[8,10]",
    "transfer.synthetic.background_images=2", "transfer.synthetic.voc_images=24", "transfer.synthetic.min_side=48",
    "transfer.synthetic.max_side=56", "transfer.caltech101_train=[3,5]", "transfer.caltech256_train=[3,6]",
    "transfer.test_per_class=4", "transfer.splits=2", "transfer.max_iter=20", "transfer.scratch_steps=2",
    "transfer.scratch_batch_size=8", "transfer.probe.caltech101_train=5", "transfer.probe.caltech256_train=6",
    "tracking.log_model=false",
]


def imagenet_layout(root: Path) -> Path:
    """A synthetic ImageNet layout of 4 classes (8 train, 4 val images each) at 256-300 px."""
    from zfnet.config import SyntheticConfig
    from zfnet.data.synthetic import write_imagenet

    write_imagenet(root, SyntheticConfig(classes=4, train_per_class=8, val_per_class=4, min_side=256, max_side=300),
                   progress=False)
    return root


def linked(path: Path) -> bool:
    """Whether ``path`` shares its bytes with the DVC cache (a hard link, or a symlink across filesystems)."""
    return path.is_symlink() or path.stat().st_nlink > 1


def test_the_paper_profile_bounds_its_analyses():
    """On ImageNet's 50,000 validation images, occluding every one at 224 (729 positions each) would
    take 36 M forward passes: the paper profile scores a fixed number, what Fig. 7 and the pointing
    game need (docs/cost.md)."""
    from zfnet.config import compose, from_dict

    cfg = from_dict(compose(["experiment=paper"], REPO / "conf"))
    positions = ((cfg.train.crop - cfg.analyze.occlusion.patch) // cfg.analyze.occlusion.stride + 1) ** 2
    assert positions == 729 and 0 < cfg.analyze.occlusion.images <= 200
    assert 0 < cfg.analyze.invariance.test_images <= 200 and cfg.analyze.correspondence.sets <= 100


@pytest.mark.slow
def test_the_paper_profile_runs_its_whole_graph_at_224(tmp_path):
    raw = imagenet_layout(tmp_path / "imagenet")
    root, env = make_project(tmp_path / "project", ["experiment=paper", f"data.root={raw}", *COUNTS])
    proc = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"dvc repro failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    manifest = json.loads((root / "data/prepared/train/manifest.json").read_text())
    assert manifest["size"] == 256 and manifest["count"] == 32
    from zfnet.train.checkpoint import load_model

    model, ckpt = load_model(root / "models/model.pt")
    assert ckpt["input_size"] == 224 and ckpt["epoch"] == 2 and ckpt["input_scale"] == 1.0
    details = json.loads((root / "metrics/train_details.json").read_text())
    assert details["eval_crops"] == 10 and details["val_images"] == 16
    analyze = json.loads((root / "metrics/analyze.json").read_text())
    assert analyze["occlusion_images"] == 4  # bounded by analyze.occlusion.images, not every validation image
    report = json.loads((root / "metrics/report.json").read_text())
    assert report  # the last stage ran
    status = subprocess.run(["dvc", "status"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert "up to date" in status.stdout, status.stdout[-2000:]

    shards = sorted((root / "data/prepared/train").glob("shard-*.images.npy"))
    for path in [*shards, root / "models/model.pt", *(root / "models/milestones").iterdir()]:
        assert linked(path), f"{path} is a second copy of its DVC cache entry"  # one copy on the disk
    assert not (root / ".zfnet/state/train").exists()  # the resume state and its milestones are gone
    print(f"paper profile graph: {proc.stdout.count('Running stage')} stages; disk: "
          + ", ".join(f"{p} {du(root / p)} B" for p in ("data/prepared", "models", ".dvc/cache"))
          + f", all three {du(root / 'data/prepared', root / 'models', root / '.dvc/cache')} B")


def du(*paths: Path) -> int:
    """Bytes on the disk under ``paths`` together, a hard-linked file counted once (``du``)."""
    out = subprocess.run(["du", "-s", "-c", "-B1", *map(str, paths)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1].split()[0])
