"""Shared fixtures. ``pytest --skip-slow`` (or ``-m 'not slow'``) skips the end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_SHARD = 64  # images per shard of the tests' prepared data


def pytest_addoption(parser):
    parser.addoption("--skip-slow", action="store_true", help="skip tests marked slow (end-to-end)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--skip-slow"):
        return
    skip = pytest.mark.skip(reason="--skip-slow given")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def no_leaked_tracking_uri():
    """``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in this process's environment
    (for subprocesses), where it would outlive the test and point later tests' stores elsewhere:
    restore the variable after every test."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if "mlflow" in sys.modules:
            sys.modules["mlflow"].set_tracking_uri(before)  # sets the variable again; None leaves it unset
        elif before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture
def repo() -> Path:
    return REPO


def clean_env() -> dict:
    """This process's environment without MLflow/DVC/parent-run settings, with this venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "ZFNET_PARENT"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def make_project(dest: Path, overrides: list[str] | None = None) -> tuple[Path, dict]:
    """A git copy of the project's files (tracked and untracked, not ignored) in ``dest``, with
    ``params.yaml`` composed for the Hydra ``overrides`` (None: as committed); returns it and :func:`clean_env`."""
    from zfnet.bench.repro import copy_project

    copy_project(REPO, dest, overrides)
    return dest, clean_env()


def tiny_raw(*overrides: str) -> dict:
    """The tiny profile (``conf/experiment/tiny.yaml``) composed with Hydra ``overrides``, as the tests
    train it: on one CPU thread, without logging the model to MLflow."""
    from zfnet.config import compose

    return compose(["experiment=tiny", "train.threads=1", "tracking.log_model=false", *overrides], REPO / "conf")


def prepare_data(raw: dict, out: Path) -> Path:
    """``out/raw`` from the real generator and ``out/prepared`` from the real preprocessing (shards of
    :data:`TINY_SHARD` images, one process) for the data settings of ``raw``; returns ``out/prepared``."""
    from zfnet.config import from_dict
    from zfnet.data.preprocess import preprocess
    from zfnet.data.synthetic import write_imagenet

    cfg = from_dict(raw)
    write_imagenet(out / "raw", cfg.data.synthetic, progress=False)
    preprocess(out / "raw", out / "prepared", cfg.preprocess.size, TINY_SHARD, 1, progress=False)
    return out / "prepared"


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """``data/prepared`` of the tiny profile, made once per session; tests read it, and copy it
    (:func:`tiny_project`) to run stages on."""
    return prepare_data(tiny_raw(), tmp_path_factory.mktemp("tiny-data"))


def tiny_project(root: Path, prepared: Path, raw: dict | None = None) -> Path:
    """A project folder as the stages see it: ``root/data/prepared`` (a copy of ``prepared``) and,
    given ``raw``, ``root/params.yaml``; returns ``root``."""
    import yaml

    shutil.copytree(prepared, root / "data/prepared")
    if raw is not None:
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A sitecustomize that records, per process, each zfnet module it imports as a JSON line
# ``[sys.argv[0], module]`` in ``$ZFNET_TEST_IMPORTS/<pid>.jsonl`` (an audit hook sees every import;
# spawned workers carry their parent's argv by then): what each pipeline stage really loads.
IMPORT_RECORDER = """
import json, os, sys
_out = os.environ.get("ZFNET_TEST_IMPORTS")

def _record(event, args):
    if event == "import" and (args[0] == "zfnet" or args[0].startswith("zfnet.")):
        with open(os.path.join(_out, f"{os.getpid()}.jsonl"), "a") as fh:
            fh.write(json.dumps([sys.argv[0] if sys.argv else "", args[0]]) + "\\n")

if _out:
    sys.addaudithook(_record)
"""


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> tuple[Path, dict, str, str]:
    """``(root, env, ui, stdout)``: the tiny profile's whole ``dvc repro``, run once per session out of
    the box (the default SQLite store ``<root>/mlflow.db``), in a git copy of the project.

    ``report.mlflow_ui`` names ``ui`` (a free localhost port), where a test may serve that store with
    ``mlflow server`` and check the report's links. Tests that change the project work on a copy.
    The zfnet modules each process imports are recorded in ``<root>/../imports/`` (:data:`IMPORT_RECORDER`);
    each stage's wall time, ``{stage: seconds}`` in run order, in ``<root>/../stage_seconds.json``.
    """
    ui = f"http://127.0.0.1:{free_port()}"
    base = tmp_path_factory.mktemp("e2e")
    root, env = make_project(base / "project", ["experiment=tiny", f"report.mlflow_ui='{ui}'"])
    (base / "recorder").mkdir()
    (base / "recorder" / "sitecustomize.py").write_text(IMPORT_RECORDER)
    (base / "imports").mkdir()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(base / "recorder"), env.get("PYTHONPATH")]))
    env["ZFNET_TEST_IMPORTS"] = str(base / "imports")
    from zfnet.bench.repro import timed_repro

    _, seconds, output = timed_repro(root, env)  # RuntimeError with the output's tail if it fails
    (base / "stage_seconds.json").write_text(json.dumps(seconds))
    return root, env, ui, output


@contextlib.contextmanager
def mlflow_server(db: Path, artifacts: Path, port: int | None = None):
    """A real ``mlflow server`` over the SQLite store ``db`` (proxied artifacts in ``artifacts``) on
    localhost ``port`` (None: a free one); yields its URL once ``/health`` answers."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}",
         "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=db.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "mlflow server did not come up in 180 s"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # a graceful stop takes seconds; the stores are throwaways
        server.wait(timeout=30)


def zfnet(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """``zfnet ARGV`` in-process in ``cwd``: ``(exit status, stdout, stderr)``."""
    import contextlib
    import io

    from zfnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help, or a refused option
                code = exc.code
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()
