"""Wall time of the whole default ``dvc repro``, per stage, and of a no-op ``dvc repro`` after it.

The project's files (``git ls-files -co --exclude-standard``: tracked and untracked, not ignored,
so no data, models or cache) are copied into a temporary folder that becomes a fresh git
repository; ``dvc repro`` runs there from nothing, with its own DVC cache and MLflow store, then
runs again (nothing changed: every stage is skipped, the time is DVC's own bookkeeping). The
checkout the command runs from is never touched. Stage times are read from DVC's
``Running stage '<name>'`` lines, each stage lasting until the next one starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from zfnet.bench.timing import target

STAGE_LINE = re.compile(r"Running stage '([^']+)'")


def copy_project(src: Path, dest: Path, overrides: Sequence[str] | None = None) -> None:
    """Copy the project's non-ignored files from ``src`` into ``dest`` and commit them in a new git repo.

    ``overrides``: Hydra overrides (``["experiment=tiny", ...]``) to compose ``conf/`` into
    ``dest/params.yaml`` with before the commit, as ``dvc exp run -S`` would; None keeps the copy's.
    """
    from dvc.utils.hydra import compose_and_dump

    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (src / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):  # another process's scratch file, gone meanwhile
                shutil.copy2(src / name, dest / name)
    if overrides is not None:
        compose_and_dump(dest / "params.yaml", str(dest / "conf"), None, "config", "", list(overrides))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=zfnet", "-c", "user.email=zfnet@localhost", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)


def timed_repro(root: Path, env: dict) -> tuple[float, dict[str, float], str]:
    """Run ``dvc repro`` in ``root``: wall seconds, ``{stage: seconds}`` (in run order) and its output.

    Raises ``RuntimeError`` with the output's tail if it fails.
    """
    t0 = time.perf_counter()
    starts: list[tuple[str, float]] = []
    lines: list[str] = []
    with subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        for line in proc.stdout:
            lines.append(line)
            if match := STAGE_LINE.search(line):
                starts.append((match.group(1), time.perf_counter()))
    wall = time.perf_counter() - t0
    output = "".join(lines)
    if proc.returncode:
        raise RuntimeError(f"dvc repro failed in {root} (exit {proc.returncode}):\n{output[-3000:]}")
    ends = [s for _, s in starts[1:]] + [t0 + wall]
    return wall, {name: end - start for (name, start), end in zip(starts, ends)}, output


def bench_repro(project: Path, keep: bool = False) -> tuple[dict, list[dict]]:
    """Time a full ``dvc repro`` of ``project``'s default pipeline from nothing, then a no-op one.

    Args:
        project: the repository root (holds ``dvc.yaml`` and ``params.yaml``).
        keep: keep the temporary copy (its path is in the result) instead of removing it.

    Returns ``full_s``, ``noop_s``, ``stages`` (``{stage: seconds}``; foreach stages by their
    ``name@item``), ``noop_skipped_all`` and ``copy``; and the target checks (<= 15 min, <= 10 s).
    """
    project = Path(project).resolve()
    if not (project / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{project}: no dvc.yaml (run zfnet bench from the repository root, or pass --project)")
    dest = Path(tempfile.mkdtemp(prefix="zfnet-bench-repro-")) / "project"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    try:
        copy_project(project, dest)
        full, stages, _ = timed_repro(dest, env)
        noop, again, _ = timed_repro(dest, env)
    finally:
        if not keep:
            shutil.rmtree(dest.parent, ignore_errors=True)
    result = {"full_s": full, "noop_s": noop, "stages": stages, "noop_skipped_all": not again,
              "copy": str(dest) if keep else None}
    return result, [target("repro: default `dvc repro` from nothing", full / 60, "<=", 15, "min"),
                    target("repro: no-op `dvc repro`", noop, "<=", 10, "s",
                           note="" if not again else f"stages ran again: {sorted(again)}")]
