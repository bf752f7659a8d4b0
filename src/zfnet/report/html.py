"""The report as one static, self-contained HTML page.

``reports/index.html`` plus ``reports/img/<path as in the project>`` (the figures, copied), with
relative links only and no external CSS, scripts or fonts, so the folder can be opened from disk,
archived, or served anywhere. Every :class:`~zfnet.report.registry.Item` gets a section with its
caption, the verdicts of the paper's claims it shows (:mod:`zfnet.findings`), figures, tables (the
paper's columns marked) and numbers next to the paper's, and the MLflow runs of the stages that
produced it; a missing input is shown as "not produced by this run". Rendered by Jinja2 with
autoescaping from ``templates/index.html.j2``.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from zfnet.io import write_text
from zfnet.report.registry import ITEMS, Item, Number, expand

IMAGES = "img"  # figures are copied to <out>/img/<their path in the project>


@dataclass
class Run:
    """One MLflow run as the report shows it."""

    run_id: str
    name: str
    stage: str
    variant: str
    status: str
    start_time: str  # ISO 8601, UTC
    experiment_id: str
    parent_run_id: str = ""
    dvc_stage: str = ""  # the dvc.yaml stage that logged it (``transfer@caltech101`` for ``transfer@caltech101-15``)


@dataclass
class Meta:
    """Run metadata shown at the top of the report."""

    generated: str  # ISO 8601 date and time, UTC
    git_commit: str
    profile: str
    data_hash: str  # md5 of the prepared data (dvc.lock)
    params_yaml: str  # the full params.yaml, shown collapsed
    tracking_uri: str
    experiment: str
    mlflow_ui: str = ""  # base URL of an MLflow UI; run ids become links when set
    runs: list[Run] = field(default_factory=list)


@dataclass
class Resolved:
    """An item's inputs as found on disk (paths relative to the project root)."""

    item: Item
    figures: list[str]
    tables: list[str]
    numbers: list[tuple[Number, Any]]  # (number, our value or None)
    missing: list[str]  # patterns/paths that matched nothing

    @property
    def status(self) -> str:
        """``produced`` (every input there), ``partial`` or ``missing`` (nothing there). Whether the
        paper's claims hold on them is the findings' verdict, not this."""
        found = len(self.figures) + len(self.tables) + sum(v is not None for _, v in self.numbers)
        if not found:
            return "missing"
        return "partial" if self.missing else "produced"


def resolve(item: Item, root: Path, params: dict) -> Resolved:
    """Find ``item``'s figures and tables (paths or glob patterns) and metric values under ``root``;
    ``{a.b}`` in a path is the param ``a.b`` (``params``: nested, as params.yaml)."""
    missing: list[str] = []

    def find(patterns: tuple[str, ...]) -> list[str]:
        paths: list[str] = []
        for pattern in (expand(p, params) for p in patterns):
            found = sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
            paths += [f for f in found if f not in paths]
            if not found:
                missing.append(pattern)
        return paths

    figures, tables = find(item.figures), find(item.tables)
    numbers = []
    for number in item.numbers:
        value = _lookup(_metrics(root / expand(number.path, params)), number.key)
        numbers.append((number, value))
        if value is None:
            missing.append(f"{number.path}: {number.key}")
    return Resolved(item, figures, tables, numbers, missing)


def _metrics(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _lookup(data: Any, key: str) -> Any:
    """``data["a"]["b"]`` for the key ``a.b`` (as ``dvc metrics show`` names nested values); None if absent."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _fmt(value: Any) -> str:
    """Numbers to at most 3 decimals without trailing zeros; anything else as text."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    try:
        return _fmt(float(value)) if str(value).strip() not in ("", "nan") else str(value)
    except ValueError:
        return str(value)


CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em; color: #222; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.paper { background: #fff7e0; } .caption { color: #444; max-width: 60em; }
.badge { display: inline-block; padding: 0 .5em; border-radius: .6em; font-size: 12px; color: #fff; }
.produced { background: #546e7a; } .partial { background: #ef6c00; } .missing { background: #9e9e9e; }
.holds { background: #2e7d32; } .fails { background: #c62828; } .inconclusive { background: #f9a825; color: #222; }
.verdict { margin: .5em 0; padding: .4em .7em; border-left: 5px solid; max-width: 62em; font-size: 14px; }
.holds-box { border-color: #2e7d32; background: #f1f8f1; } .fails-box { border-color: #c62828; background: #fdf0f0; }
.inconclusive-box { border-color: #f9a825; background: #fffbea; } .test { color: #666; font-size: 13px; }
.summary { font-size: 16px; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #555; } .note { color: #777; font-style: italic; }
code, pre { font-size: 13px; } pre { background: #f7f7f7; padding: .6em; overflow-x: auto; }
"""
STATUS_TEXT = {"missing": "not produced by this run", "partial": "partly produced", "produced": "produced"}


def _run_link(run: Run, meta: Meta) -> Markup:
    label = Markup("<code>{}</code>").format(run.run_id)
    if not meta.mlflow_ui:
        return label
    url = f"{meta.mlflow_ui.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    return Markup('<a href="{}">{}</a>').format(url, label)


def _runs_of(item: Item, runs: list[Run]) -> list[Run]:
    """The runs of the item's stages: by stage (``ablate``: every variant) or by ``dvc.yaml`` stage
    (``transfer@caltech101``: each of its training-set sizes)."""
    return [r for r in runs if {r.stage, r.name, r.dvc_stage} & set(item.stages)]


def _table(path: Path, source: str) -> dict:
    """A CSV as the template shows it: ``header`` ``[(name, is the paper's)]``, ``rows`` ``[[(text, css class)]]``."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {"source": source, "header": [], "rows": []}
    paper = ["paper" in h.lower() for h in rows[0]]
    body = [[(_fmt(v), " ".join(c for c in ("paper" if p else "", "num" if _is_number(v) else "") if c))
             for v, p in zip(row, paper)] for row in rows[1:]]
    return {"source": source, "header": list(zip(rows[0], paper)), "rows": body}


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def render(resolved: list[Resolved], root: Path, meta: Meta, findings: dict | None = None) -> str:
    """The page's HTML (Jinja2, autoescaped); image links point to ``img/<path>`` next to it.
    ``findings``: ``metrics/findings.json`` (:func:`zfnet.findings.judge_all`), shown beside each item."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("zfnet.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    by_id = {f["id"]: f for f in (findings or {}).get("findings", [])}
    meta_rows = [("generated", meta.generated), ("git commit", meta.git_commit), ("profile", meta.profile),
                 ("data hash (dvc.lock, preprocess)", meta.data_hash), ("MLflow tracking store", meta.tracking_uri),
                 ("MLflow experiment", meta.experiment)]
    return env.get_template("index.html.j2").render(
        css=CSS, meta=meta, meta_rows=meta_rows, resolved=resolved, findings=findings, images=IMAGES,
        status_text=STATUS_TEXT, fmt=_fmt, run_link=lambda run: _run_link(run, meta),
        runs_of=lambda item: _runs_of(item, meta.runs), tables_of=lambda r: [_table(root / t, t) for t in r.tables],
        verdicts_of=lambda item: [by_id[i] for i in item.findings if i in by_id],
    )


def write_report(out: str | Path, meta: Meta, params: dict, root: str | Path = ".",
                 items: tuple[Item, ...] = ITEMS, findings: dict | None = None) -> dict:
    """Write ``out/index.html`` on the outputs under ``root`` (``params``: nested, as params.yaml, for
    the ``{a.b}`` in the registry's paths) and copy its figures to ``out/img/``; return counts.
    ``findings``: the verdicts to show (``metrics/findings.json``), None for none.

    Returns ``{"items", "items_produced", "items_partial", "items_missing", "figures", "tables",
    "claims", "claims_hold", "claims_fail", "claims_inconclusive"}``.
    """
    root, out = Path(root), Path(out)
    resolved = [resolve(item, root, params) for item in items]
    out.mkdir(parents=True, exist_ok=True)
    if (out / IMAGES).exists():
        shutil.rmtree(out / IMAGES)
    for fig in dict.fromkeys(f for r in resolved for f in r.figures):
        (out / IMAGES / fig).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / fig, out / IMAGES / fig)
    page = render(resolved, root, meta, findings)
    write_text(out / "index.html", page)
    statuses = [r.status for r in resolved]
    return {
        "items": len(resolved),
        "items_produced": statuses.count("produced"),
        "items_partial": statuses.count("partial"),
        "items_missing": statuses.count("missing"),
        "figures": len({f for r in resolved for f in r.figures}),
        "tables": sum(len(r.tables) for r in resolved),
        "claims": len((findings or {}).get("findings", [])),
        **{f"claims_{k}": (findings or {}).get(key, 0) for k, key in (("hold", "holds"), ("fail", "fails"),
                                                                      ("inconclusive", "inconclusive"))},
    }
