"""Every ``zfnet`` command on bad input: one line ``zfnet <command>: error: ...`` and exit status 2,
never a traceback; and what the commands do with a user's images and where they write.

Commands run in-process through :func:`zfnet.cli.main` (an exception escaping it is the traceback a
user would see), a few through a real subprocess. The model is a small real checkpoint; the images
are real files of every awkward kind (truncated, text named ``.jpg``, a 12000 x 12000 PNG, a PNG
header declaring ten gigapixels).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import zfnet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from zfnet.cli import build_parser
from zfnet.config import InvarianceConfig, ModelConfig, OcclusionConfig, VizConfig
from zfnet.data.synthetic import CLASS_NAMES, render_image
from zfnet.models import build
from zfnet.train.checkpoint import FORMAT, atomic_save

REPO = Path(__file__).resolve().parents[1]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB pixels, with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with ``model.pt`` (a small real checkpoint of 4 synthetic classes, 64x64 input) and
    good and bad inputs."""
    root = tmp_path_factory.mktemp("cli")
    cfg = ModelConfig(widths=[6, 8, 8, 8, 6], fc_sizes=[16, 16])
    torch.manual_seed(0)
    atomic_save({"format": FORMAT, "epoch": 1, "model": build(cfg, 4, 64).state_dict(), "model_config": asdict(cfg),
                 "num_classes": 4, "input_size": 64, "input_scale": 1 / 64, "classes": [f"n{i}" for i in range(4)],
                 "class_names": list(CLASS_NAMES[:4]), "mean": torch.full((3, 72, 72), 120.0)}, root / "model.pt")
    torch.save({"weights": torch.zeros(2)}, root / "foreign.pt")
    import torchvision  # your own model: random-weight torchvision ResNet-18 state dicts, one fitting, three not

    resnet = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(resnet, root / "resnet18.pth")
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), root / "resnet10.pth")
    torch.save({k: v for k, v in resnet.items() if k != "fc.bias"}, root / "nobias.pth")
    torch.save({**resnet, "extra": torch.zeros(1)}, root / "extra.pth")
    (root / "random.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    rng = np.random.default_rng(0)
    (root / "mine").mkdir()
    for i in range(3):
        render_image(rng, CLASS_NAMES[i], (90, 80))[0].save(root / "mine" / f"{i}.jpg")
    good = (root / "mine" / "0.jpg").read_bytes()
    (root / "good.jpg").write_bytes(good)
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "text.jpg").write_text("not a photo\n")
    (root / "empty.jpg").write_bytes(b"")
    (root / "bomb.png").write_bytes(_png_header(100_000, 100_000))
    (root / "texts").mkdir()
    (root / "texts" / "a.jpg").write_text("hello")
    return root


BAD = [  # (argv with {f} for the files folder, {model} for --model torchvision:resnet18 (and --images for visualize),
    # {own} for {model} with its --weights; words the error line must hold, {f} the files folder)
    ("occlude {f}/truncated.jpg", "truncated.jpg: truncated JPEG"),
    ("occlude {f}/text.jpg", "text.jpg: not an image"),
    ("occlude {f}/empty.jpg", "empty file"),
    ("occlude {f}/missing.jpg", "missing.jpg: unreadable"),
    ("occlude {f}/mine", "unreadable (Is a directory)"),
    ("occlude {f}/bomb.png", "decompression bomb (10000000000 pixels > 250000000) (--max-pixels raises"),
    ("occlude {f}/good.jpg --max-pixels 100", "decompression bomb"),
    ("occlude {f}/good.jpg --max-pixels 0", "argument --max-pixels: must be > 0, got 0"),
    ("occlude {f}/good.jpg --patch 0", "argument --patch: must be > 0, got 0"),
    ("occlude {f}/good.jpg --patch 65", "--patch: must be <= the model's input side (64), got 65"),
    ("occlude {f}/good.jpg --patch x", "argument --patch: expected an integer, got 'x'"),
    ("occlude {f}/good.jpg --stride 0", "argument --stride: must be > 0, got 0"),
    ("occlude {f}/good.jpg --stride -3", "argument --stride: must be > 0, got -3"),
    ("occlude {f}/good.jpg --layer conv9", "--layer: ConvNet has no layer 'conv9'; its layers with feature maps: "
     "conv1, conv2, conv3, conv4, conv5"),
    ("occlude {f}/good.jpg --layer fc7", "--layer: ConvNet layer 'fc7' has no feature maps"),
    ("occlude {f}/good.jpg --max-batch 0", "argument --max-batch: must be > 0"),
    ("occlude {f}/good.jpg --label cat", "--label: 'cat' is neither a class index (0..3) nor one of"),
    ("occlude {f}/good.jpg --label 4", "--label: '4' is neither a class index (0..3)"),
    ("occlude {f}/good.jpg --device tpu", "argument --device: invalid choice: 'tpu'"),
    ("occlude {f}/good.jpg --out {f}/good.jpg", "good.jpg: File exists"),
    ("occlude", "the following arguments are required: image"),
    ("occlude {f}/good.jpg --checkpoint {f}/random.pt", "random.pt: not a zfnet checkpoint: not the zip archive"),
    ("occlude {f}/good.jpg --checkpoint {f}/foreign.pt", "foreign.pt: not a zfnet checkpoint (expected format"),
    ("occlude {f}/good.jpg --checkpoint {f}/none.pt", "none.pt: no such checkpoint file"),
    ("invariance {f}/truncated.jpg", "truncated.jpg: truncated JPEG"),
    ("invariance {f}/text.jpg", "text.jpg: not an image"),
    ("invariance {f}/good.jpg --steps 0", "argument --steps: must be > 0, got 0"),
    ("invariance {f}/good.jpg --rotation-step 0", "argument --rotation-step: must be > 0, got 0"),
    ("invariance {f}/good.jpg --rotation-step 361", "argument --rotation-step: must be <= 360, got 361"),
    ("invariance {f}/good.jpg --scale 0 1", "argument --scale: must be > 0, got 0"),
    ("invariance {f}/good.jpg --scale 2 1", "--scale: MIN must be < MAX, got 2 1"),
    ("invariance {f}/good.jpg --scale 1 1", "--scale: MIN must be < MAX, got 1 1"),
    ("invariance {f}/good.jpg --scale 2", "argument --scale: expected 2 arguments"),
    ("invariance {f}/good.jpg --translation nan", "argument --translation: must be a finite number, got 'nan'"),
    ("invariance {f}/good.jpg --translation -1", "argument --translation: must be > 0, got -1"),
    ("invariance {f}/good.jpg --checkpoint {f}/random.pt", "not the zip archive torch.save writes"),
    ("visualize --checkpoint {f}/model.pt --images {f}/none", "none: no such file or folder"),
    ("visualize --checkpoint {f}/model.pt --images {f}/texts", "no readable image found (1 unreadable files: "),
    ("visualize --checkpoint {f}/model.pt --prepared {f}/none", "no manifest.json"),
    ("visualize --checkpoint {f}/model.pt --images {f}/mine --maps 0", "argument --maps: must be > 0"),
    ("visualize --checkpoint {f}/model.pt --images {f}/mine --stable 10", "argument --stable: must be <= 9"),
    ("visualize --checkpoint {f}/model.pt --images {f}/mine --dead-ratio 1", "argument --dead-ratio: must be < 1"),
    ("visualize --checkpoint {f}/model.pt --images {f}/mine --split test", "argument --split: invalid choice"),
    ("visualize --checkpoint {f}/model.pt --images {f}/mine --max-images -1", "argument --max-images: must be >= 0"),
    ("visualize --checkpoint {f}/model.pt --images {f}/mine --compare early", "expected LABEL=CHECKPOINT, got 'early'"),
    ("visualize --checkpoint {f}/model.pt --images {f}/mine --compare a={f}/random.pt", "not the zip archive"),
    ("visualize --checkpoint {f}/model.pt --images {f}/mine --milestones {f}/mine", "--milestones: no epoch-NNN.pt"),
    ("visualize --checkpoint {f}/random.pt --images {f}/mine", "random.pt: not a zfnet checkpoint"),
    ("config experiment=nonexistent", "conf/: no config 'nonexistent' in group 'experiment'; choose from: paper, tiny"),
    ("config train.lrr=1", "override train.lrr: no key 'lrr' in train; keys: crop, epochs, batch_size, lr,"),
    ("config foo", "override 'foo': missing EQUAL at '<EOF>' (an override is KEY=VALUE"),
    ("config train=nope", "no config 'nope' in group 'train'; choose from: paper, small"),
    ("config train.lr=-1", "train.lr: must be > 0, got -1.0"),
    ("config --params {f}/text.jpg", "text.jpg: expected a mapping at the top level"),
    ("config --params {f}/none.yaml", "none.yaml: file not found"),
    ("config --write {f}/none/params.yaml", "argument --write: "),
    ("ablation overrides no_layer9", "unknown variant(s) ['no_layer9']; known: zfnet, no_fc7"),
    ("ablation overrides zfnet -S experiment=nonexistent", "no config 'nonexistent' in group 'experiment'"),
    ("ablation run zfnet", "argument action: invalid choice: 'run'"),
    ("runs list --max 0", "argument --max: must be > 0, got 0"),
    ("runs --params {f}/none.yaml --experiment nope list", "no MLflow store at"),
    ("retrain experiment=nonexistent", "no config 'nonexistent' in group 'experiment'"),
    ("retrain train.lrr=1", "no key 'lrr' in train"),
    ("visualize {own} --layers layer9", "--layers: ResNet has no layer 'layer9'; its layers with feature maps: conv1, "
     "bn1, relu, maxpool, layer1, layer1.0, layer1.0.conv1"),
    ("visualize {own} --layers layer1.0.relu", "--layers: ResNet layer 'layer1.0.relu' has no feature maps (an (N, C, "
     "h, w) output, called once per forward)"),
    ("visualize {own} --layers fc", "--layers: ResNet layer 'fc' has no feature maps"),
    ("visualize {own}", "--layers: name the layers to visualise for a ResNet"),
    ("visualize {model} --layers layer1 --weights {f}/resnet10.pth", "--weights: {f}/resnet10.pth does not fit the model: "
     "key 'fc.weight' is (10, 512) in the file, the model's is (1000, 512)"),
    ("visualize {model} --layers layer1 --weights {f}/nobias.pth", "nobias.pth does not fit the model: missing key 'fc.bias'"),
    ("visualize {model} --layers layer1 --weights {f}/extra.pth", "extra.pth does not fit the model: unexpected key 'extra'"),
    ("visualize {model} --layers layer1 --weights {f}/random.pt", "random.pt: refused to load as a state dict (weights_only"),
    ("visualize {model} --layers layer1 --weights {f}/none.pth", "--weights: {f}/none.pth: no such weights file"),
    ("visualize --model torchvision:resnet18 --images {f}/mine", "--model: needs --weights FILE (no weights are ever "
     "downloaded)"),
    ("visualize --model torchvision:resnet81 --weights {f}/resnet18.pth --images {f}/mine",
     "--model: torchvision has no model 'resnet81' (e.g. alexnet, vgg11, resnet18)"),
    ("visualize --model resnet18 --weights {f}/resnet18.pth --images {f}/mine",
     "--model: expected torchvision:NAME or package.module:factory, got 'resnet18'"),
    ("visualize --model no_such_module:make --weights {f}/resnet18.pth --images {f}/mine",
     "--model: cannot import 'no_such_module'"),
    ("visualize --model zfnet.models:nothing --weights {f}/resnet18.pth --images {f}/mine",
     "--model: module 'zfnet.models' has no 'nothing'"),
    ("visualize --model torchvision:resnet18 --weights {f}/resnet18.pth --layers layer1", "--images: needed with --model"),
    ("visualize {own} --layers layer1 --checkpoint {f}/model.pt", "--model: give --checkpoint or --model, not both"),
    ("visualize --checkpoint {f}/model.pt --weights {f}/resnet18.pth --images {f}/mine", "--weights: needs --model"),
    ("visualize {own} --layers layer1 --milestones {f}", "--milestones, --compare: zfnet checkpoints only"),
    ("visualize {own} --layers layer1 --input-size 0", "argument --input-size: must be > 0, got 0"),
    ("visualize {own} --layers layer1 --std 0.2 0 0.2", "argument --std: must be > 0, got 0"),
    ("visualize {own} --layers layer1 --mean 0.5 0.5", "argument --mean: expected 3 arguments"),
    ("occlude {f}/good.jpg {own}", "--layer: ResNet has no layer 'conv5'; its layers with feature maps: conv1, bn1"),
    ("occlude {f}/good.jpg {own} --layer fc", "--layer: ResNet layer 'fc' has no feature maps"),
    ("occlude {f}/good.jpg {own} --layer layer4 --patch 225", "--patch: must be <= the model's input side (224), got 225"),
    ("invariance {f}/good.jpg {own}", "--layers: name layers 1 and 7 of torchvision:resnet18; its layers: conv1, bn1"),
    ("invariance {f}/good.jpg {own} --layers relu nope", "--layers: ResNet has no layer 'nope'; its layers: conv1"),
    ("invariance {f}/good.jpg {own} --layers relu", "argument --layers: expected 2 arguments"),
    ("bench --only warp", "argument --only: unknown section(s) ['warp']"),
    ("bench --out {f}/none/bench.json", "argument --out: "),
    ("bench --project {f}/none", "params.yaml: file not found"),
    ("explore --run {f}", "/results/top9_index/index.json: no top-9 index in this run"),
    ("explore --images {f}/mine", "--images, --layers: name the model too (--checkpoint or --model)"),
    ("explore --port 0", "argument --port: must be > 0, got 0"),
    ("explore --port 65536", "argument --port: must be < 65536, got 65536"),
    ("explore --max-upload-mb 0", "argument --max-upload-mb: must be > 0, got 0"),
    ("explore --checkpoint {f}/random.pt", "random.pt: not a zfnet checkpoint: not the zip archive"),
    ("explore --checkpoint {f}/model.pt --layers conv9", "--layers: ConvNet has no layer 'conv9'"),
    ("explore --checkpoint {f}/model.pt --images {f}/none", "none: no such file or folder"),
    ("explore --checkpoint {f}/model.pt --prepared {f}/none", "val: no such file or folder (give --images, or"),
    ("explore --checkpoint {f}/model.pt --images {f}/texts --export {f}/site", "no readable image found"),
    ("explore {own} --layers layer1", "--images: needed with --model"),
    ("nosuch", "argument COMMAND: invalid choice: 'nosuch'"),
]


@pytest.mark.parametrize("line, words", BAD, ids=[a for a, _ in BAD])
def test_bad_input_is_one_line_and_status_2(files, tmp_path, monkeypatch, line, words):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model = "--model torchvision:resnet18" + (f" --images {files}/mine" if line.startswith("visualize") else "")
    argv = line.format(f=files, model=model, own=f"{model} --weights {files}/resnet18.pth").split()
    if argv[0] in ("occlude", "invariance") and "--checkpoint" not in argv and "--model" not in argv:
        argv += ["--checkpoint", str(files / "model.pt")]
    cwd = REPO if argv[0] in ("config", "ablation", "retrain") else tmp_path  # those compose conf/
    code, out, err = zfnet(argv, cwd)
    assert code == 2, (code, err)
    prefix = "zfnet" if argv[0] == "nosuch" else f"zfnet {argv[0]}"
    assert err.count("\n") == 1 and err.startswith(prefix) and ": error: " in err, err
    assert words.format(f=files) in err, err
    assert out == ""
    assert not (tmp_path / "outputs").exists(), "nothing written on bad input"


def test_a_traceback_would_fail_the_table_in_a_real_process(files, tmp_path):
    """Two rows through the installed entry points: the interpreter prints no traceback either."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    for argv, cwd in (([sys.executable, "-m", "zfnet.cli", "occlude", str(files / "truncated.jpg"), "--checkpoint",
                        str(files / "model.pt")], tmp_path),
                      ([str(Path(sys.executable).parent / "zfnet"), "config", "experiment=nonexistent"], REPO)):
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and ": error: " in proc.stderr, proc.stderr


NUMBERS = st.one_of(st.integers(-3, 40).map(str),
                    st.sampled_from(["0.5", "1.5", "-0.0", "nan", "inf", "-inf", "1e400", "", "x", "3,5", "0x10",
                                     " 2", "\u0663", "1_0"]))
OPTIONS = {  # command -> options whose values the property test draws (nargs)
    "occlude": {"--patch": 1, "--stride": 1, "--max-batch": 1, "--max-pixels": 1},
    "invariance": {"--translation": 1, "--steps": 1, "--rotation-step": 1, "--scale": 2},
    "visualize": {"--maps": 1, "--stable": 1, "--dead-ratio": 1, "--max-images": 1, "--batch-size": 1,
                  "--max-batch": 1},
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_option_value_runs_or_is_refused_in_one_line(files, tmp_path, data):
    command = data.draw(st.sampled_from(sorted(OPTIONS)))
    option = data.draw(st.sampled_from(sorted(OPTIONS[command])))
    values = [data.draw(NUMBERS) for _ in range(OPTIONS[command][option])]
    target = ["--images", str(files / "mine")] if command == "visualize" else [str(files / "good.jpg")]
    given_values = [f"{option}={values[0]}"] if len(values) == 1 else [option, *values]
    argv = [command, *target, "--checkpoint", str(files / "model.pt"), "--device", "cpu", "--out",
            str(tmp_path / "out"), *given_values]
    code, out, err = zfnet(argv, tmp_path)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith(f"zfnet {command}: error: "), (argv, err)
    else:
        json.loads(out)


def test_hand_run_commands_write_a_new_folder_under_outputs_and_say_so(files, tmp_path):
    code, out, err = zfnet(["occlude", str(files / "good.jpg"), "--checkpoint", str(files / "model.pt")], tmp_path)
    assert code == 0, err
    written = sorted((tmp_path / "outputs").iterdir())
    assert len(written) == 1 and written[0].name.startswith("occlude-")
    assert (written[0] / "occlusion.png").is_file() and f"wrote outputs/{written[0].name}/" in err
    assert f"note: this model knows only the 4 synthetic drawings it was trained on ({', '.join(CLASS_NAMES[:4])})" in err
    code, out, err = zfnet(["visualize", "--checkpoint", str(files / "model.pt"), "--images", str(files / "mine"),
                            "--maps", "2"], tmp_path)
    assert code == 0, err
    assert len(list((tmp_path / "outputs").glob("visualize-*/top9_conv1.png"))) == 1
    assert "note: only 3 images, so each top-9 shows 3, not 9" in err and json.loads(out)["images"] == 3


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_no_default_output_is_a_dvc_out():
    """Every subcommand's ``--out`` / ``--write`` default lies outside every out of ``dvc.yaml``."""
    from test_report import _resolve, expand_stages

    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    outs = {_resolve(next(iter(o)) if isinstance(o, dict) else o, params, item)
            for _, stage, item in expand_stages(dvc, params) for kind in ("outs", "metrics", "plots")
            for o in stage.get(kind, [])}
    for name, sub in _subcommands().items():
        for action in sub._actions:
            if action.dest in ("out", "write") and action.default is not None:
                assert not any(str(action.default).startswith(o) for o in outs), (name, action.default)
    assert any(a.dest == "out" for a in _subcommands()["visualize"]._actions)


def test_options_mirror_the_config_defaults():
    """One source of truth: an option that mirrors a config field has the field's default."""
    commands = _subcommands()
    for command, cls, fields in (("occlude", OcclusionConfig, ("patch", "stride", "layer", "max_batch")),
                                 ("invariance", InvarianceConfig, ("translation", "scale", "steps", "rotation_step")),
                                 ("visualize", VizConfig, ("split", "maps", "stable", "dead_ratio", "max_batch"))):
        defaults = {a.dest: a.default for a in commands[command]._actions}
        for field in fields:
            assert defaults[field] == getattr(cls(), field), (command, field)


def test_a_12000_pixel_square_png_is_analysed_and_a_bomb_is_not(files, tmp_path):
    big = tmp_path / "scan.png"
    image = Image.new("RGB", (12000, 12000), (90, 120, 150))
    ImageDraw.Draw(image).ellipse((3000, 3000, 9000, 9000), fill=(230, 200, 40))
    image.save(big, compress_level=1)
    del image
    argv = ["occlude", str(big), "--checkpoint", str(files / "model.pt"), "--device", "cpu", "--out", str(tmp_path / "o")]
    code, out, err = zfnet(argv, tmp_path)
    assert code == 0, err
    assert json.loads(out)["figure"] == str(tmp_path / "o" / "occlusion.png")
    code, _, err = zfnet([*argv, "--max-pixels", "100000000"], tmp_path)
    assert code == 2 and "decompression bomb (144000000 pixels > 100000000)" in err
