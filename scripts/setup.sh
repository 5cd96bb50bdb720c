#!/usr/bin/env bash
# Creates (or updates) the virtual environment .venv (or $HEXZ_VENV) with exactly the versions
# in requirements.lock, and builds the Cython extensions in place. Used by README's commands
# and by CI. Safe and quick to run again: when the venv already holds what the lock, pyproject
# and setup.py ask for (a stamp file in the venv holds their hash) no pip command runs; the
# extensions are rebuilt whenever a .pyx/.pxd is newer than its compiled module.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${HEXZ_VENV:-.venv}
STAMP="$VENV/.pyhexz-setup"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
want=$(cat requirements.lock pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  echo "[setup] dependencies up to date ($STAMP)"
else
  echo "[setup] installing dependencies from requirements.lock"
  rm -f "$STAMP"
  pip() { command pip -q --disable-pip-version-check "$@"; }
  pip install --upgrade pip
  # The CPU build of torch first, at the lock's version, so nothing pulls a CUDA build (the
  # lock leaves torch's CUDA packages out; see pyproject.toml [tool.uv]).
  torch=$(grep -E '^torch==' requirements.lock)
  pip install "$torch"
  pip install -r requirements.lock
  echo "[setup] building pyhexz"
  pip install --no-build-isolation --no-deps -e .
  unset -f pip
  echo "$want" > "$STAMP"
fi
# Also compile next to the sources, as the original pyhexz did, so `pytest` from a checkout
# always sees the current extensions (incremental: only a changed .pyx/.pxd is recompiled).
python setup.py -q build_ext --build-lib=src >/dev/null
echo "[setup] done: $(python -c 'import pyhexz, torch; print("pyhexz", pyhexz.__version__, "torch", torch.__version__)')"
