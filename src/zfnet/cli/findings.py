"""``zfnet findings``: the paper's claims and their verdicts on a run (``metrics/findings.json``).

``zfnet findings`` lists them; ``--markdown`` prints the README's table; ``--readme README.md``
writes that table between the README's ``<!-- findings:start -->`` and ``<!-- findings:end -->``
markers; ``--compare A B`` shows which verdicts differ between two runs (each a findings.json or
a folder holding ``metrics/findings.json``, e.g. the checkout of a run with another seed) and, for
folders, whether each ablation row (``metrics/ablate/<variant>.json``) agrees within 2 sd.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

START, END = "<!-- findings:start -->", "<!-- findings:end -->"


def read(path: str | Path) -> dict:
    """A findings.json, given itself or a folder holding ``metrics/findings.json``."""
    from zfnet.config import ConfigError

    path = Path(path)
    file = path / "metrics" / "findings.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{file}: no findings (run `dvc repro findings` first)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc})") from None


def readme_block(markdown: str) -> str:
    return f"{START}\n{markdown}{END}"


def with_findings(readme: str, markdown: str) -> str:
    """``readme`` with its findings block replaced by ``markdown``; ValueError without the markers."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {START} ... {END} block")
    return readme[:start] + readme_block(markdown) + readme[end + len(END):]


def differences(a: dict, b: dict) -> list[tuple[str, str, str]]:
    """``[(claim id, verdict in a, verdict in b)]`` for every claim whose verdict differs (or is missing in one)."""
    va = {f["id"]: f["verdict"] for f in a["findings"]}
    vb = {f["id"]: f["verdict"] for f in b["findings"]}
    return [(i, va.get(i, "-"), vb.get(i, "-")) for i in dict.fromkeys([*va, *vb]) if va.get(i) != vb.get(i)]


def ablation_rows(folder: str | Path) -> dict[str, dict]:
    """``{variant: metrics}`` of a run folder's ``metrics/ablate/*.json`` (``{}`` for a findings file)."""
    folder = Path(folder) / "metrics" / "ablate"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def row_agreement(a: dict[str, dict], b: dict[str, dict], key: str = "val_top1_error") -> list[tuple]:
    """Per variant in both runs: ``(variant, mean_a, sd_a, mean_b, sd_b, agree)``; two rows agree when
    their means differ by at most 2 standard deviations of one training: the larger of the two seed
    sds, and never less than the binomial error of one training's validation error on its
    ``val_images`` (two seeds that happen to agree give an sd near 0, below what the validation set
    can resolve)."""
    from zfnet.stats import binomial_se

    rows = []
    for variant in (v for v in a if v in b):
        (ma, sa), (mb, sb) = ((r[f"{key}_mean"], r[f"{key}_sd"]) for r in (a[variant], b[variant]))
        floor = max(binomial_se(m, r["val_images"]) if "val_images" in r else 0.0
                    for m, r in ((ma, a[variant]), (mb, b[variant])))
        rows.append((variant, ma, sa, mb, sb, abs(ma - mb) <= 2 * max(sa, sb, floor)))
    return rows


def _compare(first: str, second: str) -> None:
    a, b = read(first), read(second)
    diff = differences(a, b)
    print(f"{first}: {a['holds']} hold, {a['inconclusive']} inconclusive, {a['fails']} fail; "
          f"{second}: {b['holds']} hold, {b['inconclusive']} inconclusive, {b['fails']} fail")
    for claim, x, y in diff:
        print(f"  {claim}: {x} -> {y}")
    print(f"{len(diff)} of {len({f['id'] for f in a['findings'] + b['findings']})} verdicts differ")
    rows = row_agreement(ablation_rows(first), ablation_rows(second))
    for variant, ma, sa, mb, sb, agree in rows:
        print(f"  ablation {variant}: val top-1 {ma:.1f} +- {sa:.1f} vs {mb:.1f} +- {sb:.1f} %: "
              + ("agree within 2 sd" if agree else "DIFFER by more than 2 sd"))
    if rows:
        print(f"{sum(r[-1] for r in rows)} of {len(rows)} ablation rows agree within 2 sd "
              "(an sd at least the validation set's binomial error)")


def _run(args: argparse.Namespace) -> int:
    from zfnet.config import ConfigError
    from zfnet.findings import markdown
    from zfnet.io import write_text

    if args.compare:
        _compare(*args.compare)
        return 0
    result = read(args.file)
    if args.readme:
        path = Path(args.readme)
        try:
            write_text(path, with_findings(path.read_text(), markdown(result)))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        print(f"wrote the findings table into {path}")
    elif args.markdown:
        print(markdown(result), end="")
    else:
        for f in result["findings"]:
            print(f"{f['verdict']:<13} {f['paper']:<11} {f['claim']}\n{'':<13} {f['detail']}")
        print(f"{result['holds']} of {len(result['findings'])} claims hold, {result['inconclusive']} inconclusive, "
              f"{result['fails']} fail")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("findings", help="the paper's claims and whether this run's numbers show them",
                       description="The paper's claims as verdicts (holds / fails / inconclusive) with the numbers "
                       "behind them, from metrics/findings.json (the findings stage).")
    p.add_argument("--file", default="metrics/findings.json", help="findings file or run folder (default: %(default)s)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--markdown", action="store_true", help="print the README's findings table")
    mode.add_argument("--readme", metavar="README", help="write the table between the findings markers of this file")
    mode.add_argument("--compare", nargs=2, metavar=("A", "B"), help="which verdicts differ between two runs (findings files or run folders; "
                      "folders also compare their ablation rows)")
    p.set_defaults(func=_run)
