#!/usr/bin/env bash
# The GPU path, checked in one run (BENCHMARKS.md, "GPU"; issue 14, item 5):
#   1. makes the checkout runnable (protobuf new enough for hexz_pb2.py, the Cython extensions
#      built in place);
#   2. the model, self-play and training tests on the GPU (HEXZ_TEST_DEVICE, tests/conftest.py),
#      and four short games of `pyhexz selfplay --device cuda`;
#   3. benchmarks/gpu_bench.py: self-play examples/s at batch 256, 512 and 1024 with 10 x 128,
#      5 x 64 and 3 x 32 (the shipped model's size) networks, training samples/s, torch vs
#      onnxruntime-gpu.
# Every figure is a line that starts with FIGURE (SKIP, FAIL: what did not run). One H200:
# about 5 minutes, under 8.
#
#   benchmarks/gpu_check.sh [--dry-run]
#
# --dry-run: the same steps on the CPU, with tiny sizes and three of the tests, in under 2
# minutes; tests/test_gpu_check.py runs it on every machine. Exit status: 0 when every step
# passed, 1 when a test or a figure failed, 2 when the checkout could not be made runnable.
#
# Environment: PYTHON (default .venv/bin/python when there is one, else python3);
# HEXZ_GPU_CHECK_DEVICE (default cuda; cuda:1 for another GPU); OUT: when set, the folder
# that gets gpu_check.log (everything printed) and gpu_figures.txt (the FIGURE/SKIP/FAIL lines).
#
# A machine without network gets what its Python lacks from .whl/ (git-ignored): wheels for
# its Python (3.12 on the H200 machines) of the versions requirements.lock pins, downloaded
# beforehand on a machine with network:
#   pip download --only-binary=:all: --python-version 3.12 --no-deps -d .whl \
#       protobuf==7.36.2 cython==3.3.1
# protobuf: used when pyhexz.hexz_pb2 does not import (the machine's protobuf is older than the
# generated code); cython: used when the extensions must be built and Cython is missing.
# They are installed into /tmp/site, which goes on PYTHONPATH.

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

dry=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry=1 ;;
        -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (usage: gpu_check.sh [--dry-run])" >&2
           exit 2 ;;
    esac
done

py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
device=${HEXZ_GPU_CHECK_DEVICE:-cuda}
if [ "$dry" = 1 ]; then device=cpu; fi
figures=""
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" || exit 2
    figures="$OUT/gpu_figures.txt"
    rm -f "$figures"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# Prints its arguments as one line and adds that to the figures file, atomically (a run
# cut short keeps a whole file).
record() {
    local line="$*"
    echo "$line"
    if [ -n "$figures" ]; then
        { [ -f "$figures" ] && cat "$figures"; echo "$line"; } > "$figures.tmp" \
            && mv "$figures.tmp" "$figures"
    fi
}

# install_wheel NAME WHY: NAME's wheel from .whl/ into /tmp/site, or one line saying why not.
install_wheel() {
    local wheel
    wheel=$(ls .whl/"$1"-*.whl 2>/dev/null | head -n 1)
    if [ -z "$wheel" ]; then
        echo "gpu_check: $2, and there is no .whl/$1-*.whl to install (see this script's header)"
        return 1
    fi
    echo "gpu_check: $2: installing $wheel into /tmp/site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --upgrade --root-user-action=ignore \
        --disable-pip-version-check --target /tmp/site \
        "$wheel" || return 1
    case ":$PYTHONPATH:" in *:/tmp/site:*) ;; *) export PYTHONPATH="/tmp/site:$PYTHONPATH" ;; esac
}

prepare() {
    if ! "$py" -c "import pyhexz.hexz_pb2" 2>/dev/null; then
        install_wheel protobuf "pyhexz.hexz_pb2 does not import (protobuf missing or older than \
the generated code)" || return 1
        "$py" -c "import pyhexz.hexz_pb2" || return 1
    fi
    local ext="import pyhexz.game.board, pyhexz.search.evalcache, pyhexz.search.solver, \
pyhexz.search.mcts"
    if ! "$py" -c "$ext" 2>/dev/null; then
        if ! "$py" -c "import Cython" 2>/dev/null; then
            install_wheel cython "Cython is not installed" || return 1
        fi
        echo "gpu_check: building the Cython extensions in place"
        "$py" setup.py -q build_ext --build-lib=src -j "$(nproc 2>/dev/null || echo 2)" \
            || return 1
        "$py" -c "$ext" || return 1
    fi
}

run_tests() {
    local files=(tests/test_model.py tests/test_selfplay.py tests/test_training.py
                 tests/test_local_train.py)
    local select=()
    if [ "$dry" = 1 ]; then
        select=(-k "test_predictor_tiny or test_two_games_finish or test_losses_match_hand_computed")
        files=("${files[@]:0:3}")
    fi
    local log
    log=$(mktemp)
    # A hung test must not cost the figures (or the 8 minutes): the tests get 4 at most.
    # -o addopts=: pytest.ini's `-n auto` would start one process per core, each with its own
    # CUDA context; where pytest-xdist is installed, 4 processes share the one GPU (122 s on the
    # H100 machine; one at a time they come near the 4-minute cap), else they run here.
    local workers=()
    if [ "$dry" = 0 ] && "$py" -c "import xdist" 2>/dev/null; then
        workers=(-n 4 --dist worksteal)
    fi
    HEXZ_TEST_DEVICE="$device" timeout -k 10 240 "$py" -m pytest -q -p no:cacheprovider \
        -o addopts="--strict-markers" "${workers[@]}" \
        "${files[@]}" "${select[@]}" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    record "FIGURE tests device=$device rc=$rc $(tail -n 1 "$log" | tr -s ' =' ' ' | sed 's/^ //')"
    rm -f "$log"
    return "$rc"
}

# `pyhexz selfplay --device DEVICE`, the command itself: spawned processes, a fresh network on
# the device, four short games written to files.
run_selfplay_cli() {
    local dir log rc
    dir=$(mktemp -d)
    log=$(mktemp)
    timeout -k 10 180 "$py" -m pyhexz selfplay --device "$device" --output-dir "$dir" \
        --max-games 4 --parallel-games 4 --runs-per-move 4 --seed 1 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    record "FIGURE selfplay-cli device=$device rc=$rc files=$(find "$dir" -type f | wc -l)" \
        "$(grep '^selfplay:' "$log" | sed 's/ -> .*//')"
    rm -rf "$dir" "$log"
    return "$rc"
}

main() {
    local start=$SECONDS status=0
    echo "# gpu_check$([ "$dry" = 1 ] && echo ' --dry-run'): device $device, python $py," \
         "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    if [ "$device" != cpu ] && command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    fi
    prepare || { echo "gpu_check: the checkout could not be made runnable"; return 2; }
    echo "## tests on $device ($((SECONDS - start)) s)"
    run_tests || status=1
    echo "## pyhexz selfplay --device $device ($((SECONDS - start)) s)"
    run_selfplay_cli || status=1
    echo "## gpu_bench.py ($((SECONDS - start)) s)"
    local bench=(benchmarks/gpu_bench.py --device "$device")
    if [ "$dry" = 1 ]; then bench+=(--dry-run); fi
    if [ -n "$figures" ]; then bench+=(--results "$figures"); fi
    "$py" "${bench[@]}" || status=1
    echo "## done in $((SECONDS - start)) s, status $status"
    return "$status"
}

if [ -n "${OUT:-}" ]; then
    main 2>&1 | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
main
