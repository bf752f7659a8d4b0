#!/usr/bin/env bash
# The README's setup command: install zfnet with its dev extras into the active virtualenv
# (make one first: python3 -m venv .venv && . .venv/bin/activate).
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ]; then
  echo "setup.sh: no virtualenv is active; run: python3 -m venv .venv && . .venv/bin/activate" >&2
  exit 2
fi
python -m pip install -e ".[dev]"
python -c "import torch, torchvision, dvc, mlflow, hydra; print('zfnet setup ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
