"""``zfnet bench``: the real CLI in --quick mode runs every section and emits valid JSON (no timing asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zfnet.bench.timing import Rounds, race, target

REPO = Path(__file__).resolve().parents[1]


def numbers(tree, path: str = ""):
    """Every ``(path, number)`` leaf of a JSON tree (booleans are not numbers)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


@pytest.mark.slow
def test_quick_json_has_every_section(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    proc = subprocess.run([sys.executable, "-m", "zfnet.cli", "bench", "--quick", "--json", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # stdout is the JSON object and nothing else
    assert json.loads(out.read_text()) == report
    assert report["errors"] == {}
    assert set(report["sections"]) == {"gemm", "train", "loader", "preprocess", "deconv", "occlusion", "top9", "layer",
                                       "explore"}
    assert "repro" in report["skipped"]
    meta = report["meta"]
    assert meta["quick"] is True and meta["threads"] >= 1 and meta["torch"]
    assert set(meta["cpu_features"]) >= {"avx2", "avx512_bf16", "amx_bf16"}

    s = report["sections"]
    assert {"fp32_gflops", "bf16_gflops", "bf16_native"} <= set(s["gemm"])
    for label in ("224", "default"):
        model = s["train"]["models"][label]
        assert {"fp32", "fp32 channels_last"} <= set(model["variants"])
        assert (any(v.startswith("bf16 autocast") for v in model["variants"])
                or f"train: {label} bf16 autocast" in report["skipped"])
        assert model["loop_variant"] in model["variants"]
        for v in model["variants"].values():
            assert {"images_per_s", "step_s", "gflops", "peak_fraction"} <= set(v)
        assert {"conv", "linear", "norm", "optimizer"} <= set(model["breakdown"][model["loop_variant"]]["kinds"])
    assert {"epoch_s", "compute_s", "overhead"} <= set(s["loader"]["default"])
    assert {"read_images_per_s", "crop_images_per_s", "reader_images_per_s", "loader_images_per_s",
            "per_core_images_per_s", "host_images_per_s", "headroom_h100", "headroom"} <= set(s["loader"]["224"])
    assert {"decode_images_per_s", "preprocess_images_per_s"} <= set(s["preprocess"]["default"])
    assert {"batched_s", "loop_s", "speedup"} <= set(s["deconv"]["default"])
    assert {"top9_s", "inference_s", "top9_over_inference"} <= set(s["top9"]["default"])
    assert {"ours_s", "captum_best_s", "captum_best_over_ours"} <= set(s["occlusion"])
    for label in ("ZFNet", "AlexNet"):
        assert {"inference_s", "top9_s", "projections_s", "ratio", "descent_over_forward"} <= set(s["layer"][label])
    assert {"layer_page_s", "channel_page_s", "upload_s", "index_bytes"} <= set(s["explore"])
    for path, value in numbers(s):
        assert math.isfinite(value) and value > 0, f"{path} = {value}"

    names = [t["name"] for t in report["targets"]]
    assert any("loader" in n for n in names) and any("deconvnet" in n for n in names)
    assert sum(n.startswith("loader 224") for n in names) == 2  # against an H100, and against this CPU's step
    assert any("top-9" in n for n in names) and any("fp32 GEMM peak" in n for n in names)
    assert any("top-9 + projections" in n for n in names)
    assert any(n.startswith("explore: layer page") for n in names) and any("JPEG analysed" in n for n in names)
    for t in report["targets"]:
        assert t["ok"] in (True, False, None) and t["section"] in s


def test_unknown_section_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "zfnet.cli", "bench", "--only", "gemm,warp"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "warp" in proc.stderr


def test_race_interleaves_and_keeps_the_best_round():
    calls = []
    best = race({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                Rounds(repeats=2, warmup=1))
    assert calls == ["a", "b", "a", "b", "a", "b"] and set(best) == {"a", "b"} and min(best.values()) >= 0


def test_target_ratio_and_judgement():
    assert target("x", 3.0, ">=", 2.0)["ok"] is True
    above = target("x", 3.0, "<=", 2.0)
    assert above["ok"] is False and above["ratio"] == 1.5
    assert target("x", 0.5, ">=", 1.0, judged=False)["ok"] is None
