"""The report stage and ``zfnet runs`` on a small project: real stage runs in a real MLflow store.

The ``outputs`` fixture lays out a project the way the stages leave it (figures, CSV tables with
the paper's columns, metrics JSON) for every registry item except two, logs real child runs with
:func:`zfnet.tracking.stage_run`, and runs the ``report`` stage's body on it (the stage under
``dvc repro`` is checked end to end by ``tests/test_mlflow_compare.py``).
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import replace
from fnmatch import fnmatch
from markupsafe import escape  # as the report (Jinja2) escapes
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from PIL import Image

from zfnet.report.registry import ITEMS, expand, inputs, paper_refs

REPO = Path(__file__).resolve().parents[1]
LEFT_OUT = ("fig5", "table6")  # items whose files the fixture does not write
DATA_HASH = "0123456789abcdef0123456789abcdef.dir"


PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _example(pattern: str) -> str:
    """A file name the registry's ``pattern`` matches."""
    return expand(pattern, PARAMS).replace("*", "x")


def _write_item(root: Path, item, seed: int) -> None:
    for i, pattern in enumerate(item.figures):
        path = root / _example(pattern)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (60 + 10 * i, 40), (40 * seed % 255, 90, 160)).save(path)
    for pattern in item.tables:
        path = root / _example(pattern)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([["row", "paper val top-1", "ours val top-1"], ["ZFNet", "38.4", "12.34567"],
                                     ["random", "-", "not run"]])
    for number in item.numbers:
        path = root / _example(number.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[number.key] = 1.23456 + seed
        path.write_text(json.dumps(data))


FINDINGS = {"findings": [
    {"id": "pointing", "paper": "Fig. 7", "claim": "Occlusion finds the object", "verdict": "holds", "statistic": "s",
     "test": "t", "value": 0.5, "threshold": 0.1, "detail": "hit 90% vs chance 40%"},
    {"id": "correspondence_layer5", "paper": "Table 1", "claim": "Parts correspond at layer 5", "verdict": "fails",
     "statistic": "s", "test": "t", "value": -0.1, "threshold": 0.01, "detail": "gap -0.1 <beyond> noise"},
], "holds": 1, "fails": 1, "inconclusive": 0}


def write_outputs(root: Path) -> None:
    """Stage outputs for every registry item except :data:`LEFT_OUT`, where the registry expects them."""
    for seed, item in enumerate(ITEMS):
        if item.key not in LEFT_OUT:
            _write_item(root, item, seed)


class Page(HTMLParser):
    """Tags and attributes of a page, and its text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def attrs(self, tag: str, name: str) -> list[str]:
        return [a[name] for t, a in self.tags if t == tag and name in a]

    def section(self, key: str, html: str) -> str:
        match = re.search(rf'<section id="{re.escape(key)}">(.*?)</section>', html, re.S)
        assert match, f"no section {key}"
        return match.group(1)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """``(root, out)``: a project with stage outputs, MLflow runs and the report the stage wrote."""
    import mlflow

    from zfnet import tracking
    from zfnet.config import load_params, to_dict
    from zfnet.stages import report as report_stage

    root = tmp_path_factory.mktemp("project")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_params(REPO / "params.yaml")
    cfg = replace(cfg, profile="small-test", tracking=replace(cfg.tracking, uri=uri, log_model=False))
    (root / "params.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "preprocess": {"outs": [{"path": "data/prepared", "md5": DATA_HASH}]}}}))
    write_outputs(root)
    (root / "metrics/findings.json").write_text(json.dumps(FINDINGS))

    env_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for stage, variant, error in (("train", "", 20.0), ("ablate", "zfnet", 21.0), ("ablate", "no_fc7", 23.5),
                                      ("visualize", "", None)):
            with tracking.stage_run(cfg, stage, variant):
                if error is not None:
                    mlflow.log_metrics({"val_top1_error": error, "val_top5_error": error / 4, "final_val_top1_error": error,
                                        "final_val_top1_error_mean": error})  # per epoch, and at the end
        for n in (15, 30):  # one dvc.yaml stage, a run per training-set size
            with tracking.stage_run(cfg, "transfer", f"caltech101-{n}", dvc_stage="transfer@caltech101",
                                    setting={"dataset": "caltech101", "train_per_class": n}):
                mlflow.log_metrics({"pretrained_accuracy": 40.0 + n})
        report_stage.main(load_params("params.yaml"))
    finally:
        os.chdir(cwd)
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri
    return root, root / cfg.report.out


def test_registry_covers_every_figure_and_table_of_the_paper():
    wanted = {f"Fig. {n}" for n in (2, 4, 5, 6, 7, 8, 9)} | {f"Table {n}" for n in range(1, 8)}
    refs = paper_refs()
    assert wanted <= set(refs)
    assert len(refs) == len(set(refs)), "each paper item in one place"
    assert len({i.key for i in ITEMS}) == len(ITEMS)


def test_report_page_shows_every_item_with_its_files_numbers_and_runs(outputs):
    root, out = outputs
    html = (out / "index.html").read_text()
    page = Page(html)
    images = page.attrs("img", "src")
    assert all(src.startswith("img/") and (out / src).is_file() for src in images)
    written = {_example(p) for i in ITEMS if i.key not in LEFT_OUT for p in i.figures}
    assert {src.removeprefix("img/") for src in images} == written
    for tag, attr in (("script", "src"), ("link", "href"), ("img", "src")):
        assert not [v for v in page.attrs(tag, attr) if re.match(r"[a-z]+:|//", v)], "self-contained"

    for item in ITEMS:
        section = page.section(item.key, html)
        if item.key in LEFT_OUT:
            assert "not produced by this run" in section and "<img" not in section
            continue
        assert "not produced" not in section and item.caption[:40] in section
        for number in item.numbers:  # ours (seed-dependent value) next to the paper's
            row = re.search(rf"<td>{re.escape(escape(number.label))}</td>(.*?)</tr>", section).group(1)
            assert f">{escape(number.paper)}<" in row and re.search(r">\d+\.\d{3}<", row)
        if item.tables:
            assert '<th class="paper">paper val top-1</th>' in section
            assert '<td class="paper num">38.4</td>' in section and '<td class="num">12.346</td>' in section
            assert "<td>not run</td>" in section

    runs = page.section("run", html)
    assert DATA_HASH in runs and "small-test" in runs and "<details><summary>params.yaml" in runs
    assert "tracking:" in runs  # the params text
    assert "ablate@no_fc7" in runs and "ablate@zfnet" in runs
    ablation = page.section("table2-3", html)
    assert "ablate@zfnet" in ablation and "ablate@no_fc7" in ablation and "visualize" not in ablation
    table4 = page.section("table4", html)  # linked by its dvc.yaml stage, transfer@caltech101
    assert "transfer@caltech101-15" in table4 and "transfer@caltech101-30" in table4 and "no MLflow run" not in table4


def test_report_metrics_count_what_was_produced_and_what_holds(outputs):
    root, _ = outputs
    counts = json.loads((root / "metrics/report.json").read_text())
    assert counts["items"] == len(ITEMS)
    assert counts["items_produced"] == len(ITEMS) - len(LEFT_OUT)
    assert (counts["claims"], counts["claims_hold"], counts["claims_fail"], counts["claims_inconclusive"]) == (2, 1, 1, 0)


def test_report_shows_each_claims_verdict_beside_its_item_and_a_summary(outputs):
    _, out = outputs
    html = (out / "index.html").read_text()
    assert "1 of 2 claims hold</b>,\n0 inconclusive, 1 fail" in html
    fig7, table1 = Page("").section("fig7", html), Page("").section("table1", html)
    assert '<span class="badge holds">holds</span>' in fig7 and "hit 90% vs chance 40%" in fig7
    assert '<span class="badge fails">fails</span>' in table1 and "gap -0.1 &lt;beyond&gt; noise" in table1
    assert "badge holds" not in Page("").section("fig2", html)  # no verdict of its own in this file


def test_a_missing_file_makes_its_item_partial(outputs, tmp_path):
    from zfnet.report.html import Meta, write_report

    root, _ = outputs
    item = next(i for i in ITEMS if i.figures and i.numbers)
    meta = Meta("now", "abc", "p", DATA_HASH, "", "sqlite://", "zfnet")
    before = write_report(tmp_path / "a", meta, PARAMS, root)
    hidden = root / _example(item.figures[0])
    hidden.rename(hidden.with_suffix(".bak"))
    try:
        after = write_report(tmp_path / "b", meta, PARAMS, root)
    finally:
        hidden.with_suffix(".bak").rename(hidden)
    assert (after["items_partial"], after["items_produced"]) == (before["items_partial"] + 1,
                                                                   before["items_produced"] - 1)
    section = Page("").section(item.key, (tmp_path / "b/index.html").read_text())
    assert "partly produced" in section and f"<code>{expand(item.figures[0], PARAMS)}</code>" in section


def _resolve(path: str, params: dict, item: str = "") -> str:
    """``${a.b}`` from params.yaml and a foreach stage's ``${item}`` substituted into a dvc.yaml path."""
    def value(m: re.Match) -> str:
        if m.group(1) == "item":
            return item
        found = params
        for part in m.group(1).split("."):
            found = found[part]
        return str(found)

    return re.sub(r"\$\{([\w.]+)\}", value, path)


def expand_stages(dvc: dict, params: dict) -> list[tuple[str, dict, str]]:
    """``(name, stage, item)`` for every stage; a foreach stage once per item."""
    out = []
    for name, stage in dvc["stages"].items():
        if "foreach" not in stage:
            out.append((name, stage, ""))
            continue
        items = stage["foreach"]
        items = yaml.safe_load(_resolve(items, params)) if isinstance(items, str) else items
        out += [(f"{name}@{i}", stage["do"], str(i)) for i in items]
    return out


def test_report_stage_depends_on_every_registry_input_the_pipeline_produces():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    report = dvc["stages"]["report"]
    deps = [_resolve(d, params) for d in report["deps"]]
    produced = {}
    for name, stage, item in expand_stages(dvc, params):
        if name == "report":
            continue
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                produced[_resolve(next(iter(out)) if isinstance(out, dict) else out, params, item)] = name
    for pattern in inputs(params):
        prefix = pattern.split("*")[0]
        makers = [p for p in produced if prefix == p or prefix.startswith(p.rstrip("/") + "/") or fnmatch(p, pattern)]
        for path in makers:
            assert any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps), \
                f"report reads {pattern}, which stage {produced[path]} writes ({path}), but does not depend on it"
    for module in ("src/zfnet/stages/report.py", "src/zfnet/report"):
        assert module in deps
    assert report["params"] == ["report"]


def _zfnet(*argv: str, capsys) -> tuple[int, str, str]:
    from zfnet.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_runs_list_and_compare(outputs, capsys):
    root, _ = outputs
    params = str(root / "params.yaml")
    code, out, _ = _zfnet("runs", "--params", params, "list", "--stage", "ablate", capsys=capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and "key metrics" in lines[0]
    assert "no_fc7" in lines[1] and "val_top1_error_mean=23.5" in lines[1] and "zfnet" in lines[2] and "=21" in lines[2]

    code, out, _ = _zfnet("runs", "--params", params, "list", "--latest", capsys=capsys)
    assert code == 0 and {"train", "ablate@zfnet", "ablate@no_fc7", "visualize", "report"} <= set(out.split())
    assert "pipeline-" not in out and max(map(len, out.splitlines())) <= 120
    rows = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert "pretrained_accuracy=70" in rows["transfer@caltech101-30"]  # each stage's key metric, no NaN
    code, wide, _ = _zfnet("runs", "--params", params, "list", "--latest", "--wide", capsys=capsys)
    assert code == 0 and "variant" in wide.splitlines()[0] and "val_top1_error" in wide.splitlines()[0]

    code, out, _ = _zfnet("runs", "--params", params, "compare", "ablate@zfnet", "ablate@no_fc7", capsys=capsys)
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.strip().splitlines()[1:]}
    assert rows["metrics.val_top1_error"] == ["21", "23.5"] and rows["variant"] == ["zfnet", "no_fc7"]
    assert not [r for r in rows if r.startswith("params.")], "same params: none differ"

    code, out, _ = _zfnet("runs", "--params", params, "compare", "transfer@caltech101-15", "transfer@caltech101-30",
                          capsys=capsys)
    rows = {line.split()[0]: line.split()[1:] for line in out.strip().splitlines()[1:]}
    assert code == 0 and [r for r in rows if r.startswith("params.")] == ["params.setting.train_per_class"]
    assert rows["params.setting.train_per_class"] == ["15", "30"]


def test_runs_errors_are_one_line(outputs, capsys, tmp_path, monkeypatch):
    root, _ = outputs
    code, out, err = _zfnet("runs", "--params", str(root / "params.yaml"), "compare", "nosuchrun", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("zfnet runs: error: no run 'nosuchrun'")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = _zfnet("runs", "list", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "no MLflow store" in err
    for argv in (["runs", "--help"], ["runs", "list", "--help"], ["runs", "compare", "--help"]):
        with pytest.raises(SystemExit) as exc:
            _zfnet(*argv, capsys=capsys)
        assert exc.value.code == 0
