"""End to end against a real ``mlflow server``: the tiny pipeline's runs (its store served by
``mlflow server``), read back through the REST API. (Logging to a server: ``test_mlflow_server``.)

Every stage of ``dvc.yaml`` (each variant of a ``foreach`` stage: ablations, transfer datasets)
must log child runs of the one pipeline run (tag ``dvc_stage``: one run, or one per setting where
a stage has several, such as transfer's training-set sizes), with the flattened params, the git
commit, the data hash of ``dvc.lock`` and ``params.yaml`` as an artifact; the variants of one
experiment must be comparable side by side in the MLflow UI: the same metric names, the same
param names, the same artifact folders. The report of that pipeline must link every run on the server and load in
Chromium; ``dvc plots show`` and ``dvc exp show`` must show the curves and the key metrics.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
import yaml
from chromium import CHROMIUM, Browser, open_page
from conftest import mlflow_server
from test_pipeline import run
from test_report import expand_stages

from zfnet.findings import FINDINGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_pipeline):
    """A real ``mlflow server`` over the tiny pipeline's SQLite store, at the address its report links to."""
    root, _, url, _ = tiny_pipeline
    with mlflow_server(root / "mlflow.db", root.parent / "artifacts", int(url.rsplit(":", 1)[1])) as served:
        yield served


def api(url: str, endpoint: str, body: dict | None = None, **query) -> dict:
    """GET (with ``query``) or POST (``body``) ``/api/2.0/mlflow/<endpoint>`` and decode the JSON reply."""
    address = f"{url}/api/2.0/mlflow/{endpoint}"
    if query:
        address += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(address, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def pipeline(tiny_pipeline, server):
    """``(root, env, url, runs)``: the tiny pipeline (reproduced once per session) and its runs as the
    server's REST API gives them."""
    root, env, _, _ = tiny_pipeline
    exp = api(server, "experiments/get-by-name", experiment_name="zfnet")["experiment"]
    runs = api(server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 1000})["runs"]
    return root, env, server, runs


def _tags(r: dict) -> dict:
    return {t["key"]: t["value"] for t in r["data"].get("tags", [])}


def _children(runs: list[dict]) -> dict[str, dict]:
    """Stage runs by name (``train``, ``ablate@zfnet``)."""
    out = {}
    for r in runs:
        tags = _tags(r)
        if tags.get("stage"):
            name = f"{tags['stage']}@{tags['variant']}" if tags.get("variant") else tags["stage"]
            assert name not in out, f"two runs of {name}"
            out[name] = r
    return out


def _artifacts(url: str, run_id: str) -> set[str]:
    return {f["path"] for f in api(url, "artifacts/list", run_id=run_id).get("files", [])}


def _groups(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs to compare side by side: the variants of a ``foreach`` stage (``ablate@*``), and the
    settings one stage logs as separate runs (``transfer@caltech101-*``, ``probe@*``)."""
    children = _children(runs).values()
    per_stage: dict[str, list[dict]] = {}
    for r in children:
        per_stage.setdefault(_tags(r)["dvc_stage"], []).append(r)
    groups: dict[str, list[dict]] = {}
    for r in children:
        tags = _tags(r)
        if tags["variant"]:
            several = len(per_stage[tags["dvc_stage"]]) > 1
            groups.setdefault(tags["dvc_stage"] if several else tags["stage"], []).append(r)
    return groups


def test_every_stage_logs_children_of_the_pipeline_run(pipeline):
    root, _, url, runs = pipeline
    parents = [r for r in runs if _tags(r).get("zfnet.role") == "pipeline"]
    assert len(parents) == 1
    parent = parents[0]["info"]["run_id"]
    children = _children(runs)
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert {name for name, _, _ in expand_stages(dvc, params)} == {_tags(r)["dvc_stage"] for r in children.values()}
    transfer = [n for n, r in children.items() if _tags(r)["dvc_stage"] == "transfer@caltech101"]
    assert len(transfer) == len(params["transfer"]["caltech101_train"]) >= 2  # one run per training-set size
    data_hash = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["preprocess"]["outs"][0]["md5"]
    param_keys = {p["key"] for p in parents[0]["data"]["params"]}
    for name, r in children.items():
        tags = _tags(r)
        assert r["info"]["status"] == "FINISHED", name
        assert tags["mlflow.parentRunId"] == parent and tags["profile"] == "tiny", name
        assert tags["git_commit"] not in ("", "unknown"), name
        if name not in ("data", "preprocess"):  # they run before dvc.lock records the prepared data
            assert tags["data_hash"] == data_hash, name
        assert {p["key"] for p in r["data"]["params"]} >= param_keys, name
        assert "params.yaml" in _artifacts(url, r["info"]["run_id"]), name


def test_variants_of_an_experiment_compare_side_by_side(pipeline):
    """Each group of variants (ablations, transfer sizes per dataset, probe datasets): the same
    metric, param and artifact names."""
    root, _, url, runs = pipeline
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    groups = _groups(runs)
    assert {"ablate", "probe", "transfer@caltech101", "transfer@caltech256"} <= set(groups)
    foreach = {name for name, stage in dvc["stages"].items() if "foreach" in stage}
    assert all(any(g == f or g.startswith(f + "@") for g in groups) for f in foreach), (foreach, set(groups))
    for stage, members in groups.items():
        if stage == "transfer":  # the one run of transfer@voc2012: nothing beside it to compare
            assert [_tags(r)["variant"] for r in members] == ["voc2012"]
            continue
        assert len(members) >= 2, stage
        metric_names = [{m["key"] for m in r["data"].get("metrics", [])} for r in members]
        assert metric_names[0] and all(m == metric_names[0] for m in metric_names), f"{stage}: metric names differ"
        param_names = [{p["key"] for p in r["data"]["params"]} for r in members]
        assert all(p == param_names[0] for p in param_names), f"{stage}: param names differ"
        artifacts = [_artifacts(url, r["info"]["run_id"]) for r in members]
        assert all(a == artifacts[0] for a in artifacts), f"{stage}: artifacts differ: {artifacts}"
        key = sorted(metric_names[0])[0]
        history = api(url, "metrics/get-history", run_id=members[0]["info"]["run_id"], metric_key=key)
        assert history["metrics"], f"{stage}: no history of {key}"


def test_zfnet_runs_compares_variants_on_the_server(pipeline):
    root, env, url, runs = pipeline
    variants = sorted(n for n in _children(runs) if "@" in n)[:2]
    header, *rows = run(["zfnet", "runs", "compare", *variants], root, {**env, "MLFLOW_TRACKING_URI": url}).stdout.splitlines()
    assert header.split() == variants
    assert any(r.startswith("metrics.") for r in rows)


def test_runs_compare_shows_what_each_variant_ran_with(pipeline):
    """The variants' params are their own configs, so comparing them shows the change (Table 2's)."""
    root, env, url, _ = pipeline
    out = run(["zfnet", "runs", "compare", "ablate@zfnet", "ablate@krizhevsky"], root,
              {**env, "MLFLOW_TRACKING_URI": url}).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["params.model.arch"] == ["zfnet", "krizhevsky"]
    assert rows["params.model.conv1_kernel"] == ["7", "11"] and rows["params.model.conv1_stride"] == ["2", "4"]
    out = run(["zfnet", "runs", "compare", "transfer@caltech101-3", "transfer@caltech101-5"], root,
              {**env, "MLFLOW_TRACKING_URI": url}).stdout
    assert [line.split()[0] for line in out.splitlines() if line.startswith("params.")] == [
        "params.setting.train_per_class"]


def test_runs_list_shows_every_stages_key_metric_in_120_columns(pipeline):
    root, env, url, runs = pipeline
    out = run(["zfnet", "runs", "list", "--latest"], root, {**env, "MLFLOW_TRACKING_URI": url}).stdout
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120, max(map(len, lines))
    start = lines[0].index("key metrics")
    shown = {line.split()[1]: line[start:].strip() for line in lines[1:]}
    assert set(shown) == set(_children(runs)), set(_children(runs)) ^ set(shown)
    assert all(shown.values()), [name for name, metrics in shown.items() if not metrics]
    assert "pointing_game=" in shown["analyze"] and "pretrained_accuracy=" in shown["transfer@caltech101-3"]
    assert "pretrained_map=" in shown["transfer@voc2012"] and "accuracy_fc7=" in shown["probe@caltech101"]


def test_report_links_every_run_on_the_server(pipeline, tmp_path):
    root, _, url, runs = pipeline
    html = (root / "reports/index.html").read_text()
    assert "no MLflow run of them found" not in html  # every item links its runs (Tables 4, 5 by dvc.yaml stage)
    for r in runs:
        if _tags(r).get("stage") and _tags(r)["stage"] != "report":
            run_id = r["info"]["run_id"]
            assert f'{url}/#/experiments/{r["info"]["experiment_id"]}/runs/{run_id}' in html, _tags(r)["stage"]
    counts = json.loads((root / "metrics/report.json").read_text())
    assert counts["items_produced"] >= 3 and counts["claims"] == len(FINDINGS)  # every claim judged, whatever its verdict
    if CHROMIUM is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium)")
    browser = Browser(tmp_path / "chromium-profile")
    try:
        open_page(browser, root / "reports/index.html")
        widths = browser.evaluate("Array.from(document.images, i => i.naturalWidth)")
        assert widths and all(w > 0 for w in widths)
        assert browser.errors() == []
    finally:
        browser.close()


def test_dvc_plots_and_exp_show(pipeline):
    root, env, _, _ = pipeline
    shown = json.loads(run(["dvc", "plots", "show", "--json"], root, env).stdout)["data"]
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    defined = [next(iter(p)) if isinstance(p, dict) else p for p in dvc["plots"]]
    for name in defined:
        assert any(name in key for key in shown), f"dvc plots show lacks {name}"
    exps = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    text = json.dumps(exps)
    for metric in ("val_top1_error", "val_top5_error", "items_produced"):
        assert metric in text, f"dvc exp show lacks {metric}"
