"""``zfnet config``: validate a params file, or print the composed config of a profile."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def _run(args: argparse.Namespace) -> int:
    from zfnet.cli.options import composed_config
    from zfnet.config import to_dict
    from zfnet.stages.common import load_config

    cfg = composed_config(args.overrides) if args.overrides or args.write else load_config(args.params)
    if args.write:
        from dvc.utils.hydra import compose_and_dump

        compose_and_dump(args.write, str(Path("conf").resolve()), None, "config", "", args.overrides)
        print(f"wrote {args.write} (profile {cfg.profile!r})")
    elif args.show:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    else:
        print(f"ok: profile {cfg.profile!r} is valid")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from zfnet.cli.options import new_file

    p = sub.add_parser(
        "config",
        help="validate params.yaml or a composed profile",
        description="Validate params.yaml (default) or compose conf/ with Hydra overrides "
        "(e.g. `zfnet config experiment=paper train.lr=0.02 --show`).",
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as given to `dvc exp run -S`")
    p.add_argument("--params", default="params.yaml", help="params file to validate (default: params.yaml)")
    p.add_argument("--show", action="store_true", help="print the validated config as YAML")
    p.add_argument("--write", metavar="PATH", type=new_file, help="compose conf/ (with the overrides) and write it to PATH "
                   "exactly as DVC does, e.g. `zfnet config --write params.yaml` after editing conf/")
    p.set_defaults(func=_run)
