#!/usr/bin/env bash
# Creates (or updates) the virtual environment .venv (or $HEXZ_VENV) with exactly the versions
# in requirements.lock, and builds the Cython extensions in place. Used by README's commands
# and by CI. Safe and quick to run again: when the venv already holds what the lock, pyproject
# and setup.py ask for (a stamp file in the venv holds their hash) no pip command runs; the
# extensions are rebuilt only when one is missing or a .pyx/.pxd or setup.py is newer than it.
# So a run with nothing to do starts no build and imports no torch: about two seconds.
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
installed=0
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  echo "[setup] dependencies up to date ($STAMP)"
else
  installed=1
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
# Whether any needs it is decided here: setuptools and Cython take seconds just to start.
suffix=$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
extensions_stale() {
  local pyx so
  while IFS= read -r pyx; do
    so="${pyx%.pyx}$suffix"
    [ -f "$so" ] || return 0
    [ -z "$(find src/pyhexz setup.py \( -name '*.pyx' -o -name '*.pxd' -o -name setup.py \) \
            -newer "$so" -print -quit)" ] || return 0
  done < <(find src/pyhexz -name '*.pyx')
  return 1
}
if [ "$installed" = 1 ] || extensions_stale; then
  echo "[setup] building the extensions"
  python setup.py -q build_ext --build-lib=src >/dev/null
  # build_ext leaves a module it found current as it was: mark them all current now.
  find src/pyhexz -name "*$suffix" -exec touch {} +
else
  echo "[setup] extensions up to date"
fi
if [ "$installed" = 1 ]; then   # a fresh install: prove that it imports
  echo "[setup] done: $(python -c 'import pyhexz, torch; print("pyhexz", pyhexz.__version__, "torch", torch.__version__)')"
else
  echo "[setup] done: $(python -c 'from importlib.metadata import version as v; print("pyhexz", v("pyhexz"), "torch", v("torch"))')"
fi
