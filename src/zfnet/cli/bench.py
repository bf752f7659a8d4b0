"""``zfnet bench``: the benchmark suite (:mod:`zfnet.bench.suite`) from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from zfnet.bench import suite
from zfnet.bench.suite import SECTIONS, Bench, human, sections
from zfnet.cli.options import new_file
from zfnet.io import write_text


def _section_list(text: str) -> list[str]:
    """``--only``'s value: comma-separated section names."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = sorted(set(names) - set(SECTIONS))
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {bad or [text]}; choose from {', '.join(SECTIONS)}")
    return names


def _run(args: argparse.Namespace) -> int:
    bench = Bench(args)
    with contextlib.redirect_stdout(sys.stderr):  # stray prints from libraries must not break --json
        report = bench.run(sections(args.only, args.quick))
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        write_text(args.out, text + "\n")
    print(text if args.json else human(report))
    return 1 if report["errors"] else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark training, data, visualisation and the pipeline on this machine",
                       description=suite.__doc__.split("\n\n")[0] + " Sections: " + ", ".join(SECTIONS) + ".")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats, no repro or torch.compile (CI)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to measure (default: cpu)")
    p.add_argument("--only", metavar="SECTION,...", type=_section_list,
                   help=f"run only these sections ({', '.join(SECTIONS)}); repro runs in --quick only when named here")
    p.add_argument("--out", metavar="FILE", type=new_file, help="also write the JSON report to FILE")
    p.add_argument("--params", default="params.yaml", help="params file, relative to --project (default: params.yaml)")
    p.add_argument("--project", default=".", help="the repository root: params and the pipeline of repro (default: .)")
    p.set_defaults(func=_run)
