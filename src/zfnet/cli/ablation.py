"""``zfnet ablation``: the Table 3 variants outside the ``ablate@<variant>`` stages.

``zfnet ablation overrides VARIANT`` prints the Hydra overrides of a variant (relative to the
composed profile); ``zfnet ablation queue VARIANT... [-S KEY=VALUE]...`` queues one DVC experiment
per variant (``dvc exp run --queue train -n ablate-<variant> -S ...``) with the full training
budget of the profile; ``dvc queue start`` runs them and ``dvc exp show`` compares them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess


def queue_commands(variants: list[str], overrides: list[str]) -> list[list[str]]:
    """One ``dvc exp run --queue`` command per variant: the profile ``overrides`` then the variant's own."""
    from zfnet.cli.options import composed_config
    from zfnet.experiments.variants import hydra_overrides, variant_overrides

    cfg = composed_config(overrides)
    commands = []
    for name in variants:
        sets = [*overrides, *hydra_overrides(variant_overrides(cfg, name))]
        commands.append(["dvc", "exp", "run", "--queue", "train", "-n", f"ablate-{name}",
                         *[arg for s in sets for arg in ("-S", s)]])
    return commands


def _run(args: argparse.Namespace) -> int:
    import sys

    from zfnet.config import ConfigError
    from zfnet.experiments.variants import VARIANTS

    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    commands = queue_commands(args.variants, args.set)
    for cmd in commands:
        if args.action == "overrides":
            print(" ".join(shlex.quote(a) for a in cmd[cmd.index("-S"):]) if "-S" in cmd else "")
            continue
        print(" ".join(shlex.quote(a) for a in cmd))
        code = subprocess.run(cmd).returncode
        if code:
            print(f"zfnet ablation: error: `{shlex.join(cmd[:6])} ...` failed with exit status {code} (DVC's "
                  "message is above); the variants before it are queued", file=sys.stderr)
            return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablation",
        help="the Table 3 variants as DVC experiments: print their overrides or queue them",
        description="Print the -S overrides of Table 3 variants (overrides), or queue one `dvc exp run` "
        "of the train stage per variant (queue; then `dvc queue start`, `dvc exp show`).",
    )
    p.add_argument("action", choices=("overrides", "queue"))
    p.add_argument("variants", nargs="+", metavar="VARIANT", help="e.g. no_fc7 conv_wide krizhevsky")
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="profile overrides applied first, e.g. -S experiment=tiny (repeatable)")
    p.set_defaults(func=_run)
