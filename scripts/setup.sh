#!/usr/bin/env bash
# Creates (or updates) the virtual environment .venv with everything pyhexz needs, and builds
# the Cython extensions in place. Safe to run again; used by README's commands and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${HEXZ_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
echo "[setup] installing dependencies"
pip install -q --disable-pip-version-check --upgrade pip
# The CPU build of torch first, so nothing pulls a CUDA build.
pip install -q --disable-pip-version-check torch==2.13.0
pip install -q --disable-pip-version-check -r requirements-dev.txt
echo "[setup] building pyhexz"
pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
# Also compile next to the sources, as the original pyhexz did, so `pytest` from a checkout
# always sees the current extensions.
python setup.py -q build_ext --build-lib=src >/dev/null
echo "[setup] done: $(python -c 'import pyhexz, torch; print("pyhexz", pyhexz.__version__, "torch", torch.__version__)')"
