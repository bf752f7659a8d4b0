"""The report as one static, self-contained HTML page.

``reports/index.html`` plus ``reports/img/<path as in the project>`` (the figures, copied), with
relative links only and no external CSS, scripts or fonts, so the folder can be opened from disk,
archived, or served anywhere. Every :class:`~zfnet.report.registry.Item` gets a section with its
caption, figures, tables (the paper's columns marked) and numbers next to the paper's, and the
MLflow runs of the stages that produced it; a missing input is shown as "not produced by this run".
"""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
        """``reproduced`` (every input there), ``partial`` or ``missing`` (nothing there)."""
        found = len(self.figures) + len(self.tables) + sum(v is not None for _, v in self.numbers)
        if not found:
            return "missing"
        return "partial" if self.missing else "reproduced"


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


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em; color: #222; }
h1 { margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.paper { background: #fff7e0; } .caption { color: #444; max-width: 60em; }
.badge { display: inline-block; padding: 0 .5em; border-radius: .6em; font-size: 12px; color: #fff; }
.reproduced { background: #2e7d32; } .partial { background: #ef6c00; } .missing { background: #9e9e9e; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #555; } .note { color: #777; font-style: italic; }
code, pre { font-size: 13px; } pre { background: #f7f7f7; padding: .6em; overflow-x: auto; }
"""


def _run_link(run: Run, meta: Meta) -> str:
    label = f"<code>{_e(run.run_id)}</code>"
    if not meta.mlflow_ui:
        return label
    url = f"{meta.mlflow_ui.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run.run_id}"
    return f'<a href="{_e(url)}">{label}</a>'


def _runs_of(item: Item, runs: list[Run]) -> list[Run]:
    """The runs of the item's stages: by stage (``ablate``: every variant) or by ``dvc.yaml`` stage
    (``transfer@caltech101``: each of its training-set sizes)."""
    return [r for r in runs if {r.stage, r.name, r.dvc_stage} & set(item.stages)]


def _table_html(path: Path, source: str) -> str:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return f'<p class="note">{_e(source)} is empty.</p>'
    header, body = rows[0], rows[1:]
    paper = ["paper" in h.lower() for h in header]
    head = "".join(f'<th class="paper">{_e(h)}</th>' if p else f"<th>{_e(h)}</th>" for h, p in zip(header, paper))
    lines = []
    for row in body:
        cells = []
        for value, p in zip(row, paper):
            shown = _fmt(value)
            cls = " ".join(c for c in ("paper" if p else "", "num" if _is_number(value) else "") if c)
            cells.append(f'<td class="{cls}">{_e(shown)}</td>' if cls else f"<td>{_e(shown)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><caption>{_e(source)} (the paper's numbers are the shaded columns)</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>")


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _numbers_html(numbers: list[tuple[Number, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(n.label)}</td><td class=\"paper num\">{_e(n.paper)}</td>"
        f"<td class=\"num\">{_e(_fmt(v)) if v is not None else '<span class=note>not produced</span>'}</td>"
        f"<td>{_e(n.unit)}</td><td><code>{_e(n.path)}</code> <code>{_e(n.key)}</code></td></tr>"
        for n, v in numbers
    )
    return ('<table><thead><tr><th>quantity</th><th class="paper">paper</th><th>this run</th><th>unit</th>'
            f"<th>source</th></tr></thead><tbody>{rows}</tbody></table>")


def _section(r: Resolved, root: Path, meta: Meta) -> str:
    item = r.item
    parts = [f'<section id="{_e(item.key)}"><h2>{_e(", ".join(item.paper))}: {_e(item.title)} '
             f'<span class="badge {r.status}">{_status_text(r.status)}</span></h2>',
             f'<p class="caption">{_e(item.caption)}</p>']
    runs = _runs_of(item, meta.runs)
    stage_list = ", ".join(f"<code>{_e(s)}</code>" for s in item.stages)
    if runs:
        links = ", ".join(f"{_e(r_.name)} {_run_link(r_, meta)}" for r_ in runs)
        parts.append(f"<p>Stages {stage_list}; MLflow runs: {links}</p>")
    else:
        parts.append(f"<p>Stages {stage_list}; no MLflow run of them found in this pipeline.</p>")
    if r.status == "missing":
        parts.append('<p class="note">Not produced by this run.</p>')
    if r.numbers:
        parts.append(_numbers_html(r.numbers))
    parts += [_table_html(root / t, t) for t in r.tables]
    parts += [f'<figure><img src="{IMAGES}/{_e(f)}" alt="{_e(f)}"><figcaption>{_e(f)}</figcaption></figure>'
              for f in r.figures]
    if r.missing and r.status != "missing":
        parts.append('<p class="note">Not produced by this run: '
                     + ", ".join(f"<code>{_e(m)}</code>" for m in r.missing) + "</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _status_text(status: str) -> str:
    return {"missing": "not produced by this run", "partial": "partly produced", "reproduced": "reproduced"}[status]


def _meta_html(meta: Meta) -> str:
    rows = [("generated", meta.generated), ("git commit", meta.git_commit), ("profile", meta.profile),
            ("data hash (dvc.lock, preprocess)", meta.data_hash), ("MLflow tracking store", meta.tracking_uri),
            ("MLflow experiment", meta.experiment)]
    table = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    if meta.runs:
        runs = "".join(
            f"<tr><td>{_e(r.name)}</td><td>{_e(r.stage)}</td><td>{_e(r.variant)}</td><td>{_e(r.status)}</td>"
            f"<td>{_e(r.start_time)}</td><td>{_run_link(r, meta)}</td><td><code>{_e(r.parent_run_id)}</code></td></tr>"
            for r in meta.runs
        )
        runs = ("<table><thead><tr><th>run</th><th>stage</th><th>variant</th><th>status</th><th>started (UTC)</th>"
                f"<th>run id</th><th>pipeline (parent) run id</th></tr></thead><tbody>{runs}</tbody></table>")
    else:
        runs = '<p class="note">No MLflow runs found for this pipeline.</p>'
    return (f'<section id="run"><h2>This run</h2><table>{table}</table>'
            f"<h3>MLflow runs (latest of each stage)</h3>{runs}"
            f"<details><summary>params.yaml</summary><pre>{_e(meta.params_yaml)}</pre></details></section>")


def _toc_html(resolved: list[Resolved]) -> str:
    rows = "".join(
        f'<tr><td><a href="#{_e(r.item.key)}">{_e(ref)}</a></td><td>{_e(r.item.title)}</td>'
        f'<td><span class="badge {r.status}">{_status_text(r.status)}</span></td></tr>'
        for r in resolved
        for ref in r.item.paper
    )
    return ("<section id=\"contents\"><h2>The paper's figures and tables</h2><table><thead><tr><th>paper</th>"
            f"<th>what</th><th>status</th></tr></thead><tbody>{rows}</tbody></table></section>")


def render(resolved: list[Resolved], root: Path, meta: Meta) -> str:
    """The page's HTML; image links point to ``img/<path>`` next to it."""
    body = "\n".join([_toc_html(resolved), _meta_html(meta), *(_section(r, root, meta) for r in resolved)])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zfnet: Zeiler &amp; Fergus (2014) reproduced</title>
<style>{CSS}</style></head>
<body><h1>Visualizing and Understanding Convolutional Networks, reproduced</h1>
<p class="caption">Zeiler &amp; Fergus, ECCV 2014 (arXiv 1311.2901): every figure and table of the
paper as this pipeline run reproduced it, with the paper's numbers next to ours.
Profile <code>{_e(meta.profile)}</code>, commit <code>{_e(meta.git_commit[:12])}</code>,
generated {_e(meta.generated)}.</p>
{body}
</body></html>
"""


def write_report(out: str | Path, meta: Meta, params: dict, root: str | Path = ".",
                 items: tuple[Item, ...] = ITEMS) -> dict:
    """Write ``out/index.html`` on the outputs under ``root`` (``params``: nested, as params.yaml, for
    the ``{a.b}`` in the registry's paths) and copy its figures to ``out/img/``; return counts.

    Returns ``{"items", "items_reproduced", "items_partial", "items_missing", "figures", "tables"}``.
    """
    root, out = Path(root), Path(out)
    resolved = [resolve(item, root, params) for item in items]
    out.mkdir(parents=True, exist_ok=True)
    if (out / IMAGES).exists():
        shutil.rmtree(out / IMAGES)
    for fig in dict.fromkeys(f for r in resolved for f in r.figures):
        (out / IMAGES / fig).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / fig, out / IMAGES / fig)
    page = render(resolved, root, meta)
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out / "index.html")
    statuses = [r.status for r in resolved]
    return {
        "items": len(resolved),
        "items_reproduced": statuses.count("reproduced"),
        "items_partial": statuses.count("partial"),
        "items_missing": statuses.count("missing"),
        "figures": len({f for r in resolved for f in r.figures}),
        "tables": sum(len(r.tables) for r in resolved),
    }
