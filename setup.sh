#!/usr/bin/env bash
# The README's setup command: install zfnet with its dev extras into the active virtualenv
# (make one first: python3 -m venv .venv && . .venv/bin/activate), and Chromium for the report's
# browser test where apt-get can install it (set ZFNET_NO_BROWSER=1 to skip that).
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ]; then
  echo "setup.sh: no virtualenv is active; run: python3 -m venv .venv && . .venv/bin/activate" >&2
  exit 2
fi
python -m pip install -e ".[dev]"
# Chromium: the report's browser test (tests/test_report_browser.py) loads reports/index.html in it.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "setup.sh: chromium found"
elif [ -n "${ZFNET_NO_BROWSER:-}" ]; then
  echo "setup.sh: ZFNET_NO_BROWSER is set: not installing chromium (the browser test will skip)"
elif command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
  as_root=""; [ "$(id -u)" = 0 ] || as_root="sudo -n"
  echo "setup.sh: installing chromium with apt-get (for the report's browser test)"
  $as_root apt-get update -qq && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "setup.sh: chromium not installed (needs apt-get as root or passwordless sudo); the report's browser test will skip"
fi
python -c "import torch, torchvision, dvc, mlflow, hydra; print('zfnet setup ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
