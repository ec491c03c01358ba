#!/usr/bin/env bash
# One prepared GPU check (docs/benchmarks.md): on a fresh GPU machine without network it builds our
# CUDA ops, runs the CUDA tests in strict mode, the ops benchmark at StyleGAN2's real shapes, and the
# training-throughput comparison, ours (noaug/ada/ada+asa) against upstream StyleGAN2-ADA (noaug/ada),
# at paper256 and at 64 px --cfg=auto. Everything goes into one log, $OUT/gpu_check.log (each step's
# output also in $OUT/steps/), ending with a summary table. Designed to finish in under 6 minutes:
# a step that would start after GPU_CHECK_BUDGET seconds is skipped, and each step's timeout is cut
# to the time left, both logged.
#
#   bash bench/gpu_check.sh                                          # ours only
#   UPSTREAM_DIR=~/stylegan2-ada-pytorch bash bench/gpu_check.sh     # also upstream
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh                          # CPU rehearsal, tiny settings
#
# UPSTREAM_DIR is a pristine checkout and is only read: bench/upstream_copy.py makes a throw-away
# copy in a temp folder with exactly the two harness fixes of patches/compat.py (InfiniteSampler's
# super().__init__(dataset) and the plugin loader keeping the module cpp_extension.load returns).
# Env: OUT (default ./gpu_check_out), GPU_CHECK_ITERS (measured training iterations, default 8),
#      GPU_CHECK_BUDGET (default 330; 540 gives a 9-minute run that leaves fewer steps out; 1500 in
#      the dry run, whose step timeouts are 6x longer),
#      GPU_CHECK_SKIP (comma-separated step names to leave out, e.g. to finish a run whose budget
#      ran out: GPU_CHECK_SKIP=cuda-tests,ops-bench,train-ours-256,train-upstream-256),
#      PYTHON (default python), GPU_CHECK_COMMIT (logged without .git).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
OUT="${OUT:-gpu_check_out}"
DRY="${GPU_CHECK_DRY:-0}"
ITERS="${GPU_CHECK_ITERS:-8}"
if [ "$DRY" = 1 ]; then BUDGET="${GPU_CHECK_BUDGET:-1500}"; SCALE=6; else BUDGET="${GPU_CHECK_BUDGET:-330}"; SCALE=1; fi
UPSTREAM_DIR="${UPSTREAM_DIR:-}"
mkdir -p "$OUT/steps"
LOG="$OUT/gpu_check.log"
: > "$LOG"
WORK="$(mktemp -d -t gpucheck-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export TORCH_EXTENSIONS_DIR="$WORK/torch_extensions"     # fresh builds, shared by every step
export PYTHONUNBUFFERED=1
if [ "$DRY" = 1 ]; then DEVICE=cpu; else DEVICE=cuda; fi

log() { echo "$*" | tee -a "$LOG"; }

# step NAME MAX_SECONDS CMD...: run CMD with its output in the log and in steps/NAME.txt; skipped
# when the budget is spent, timeout cut to the time left.
step() {
    local name="$1" max=$(( $2 * SCALE )) left rc start
    shift 2
    left=$(( BUDGET + 25 - SECONDS ))
    if [[ ",${GPU_CHECK_SKIP:-}," == *",$name,"* ]]; then
        log "=== $name: SKIPPED (GPU_CHECK_SKIP)"
        return 0
    fi
    if [ "$SECONDS" -ge "$BUDGET" ]; then
        log "=== $name: SKIPPED (budget of ${BUDGET}s spent at ${SECONDS}s)"
        return 0
    fi
    [ "$left" -lt "$max" ] && max="$left"
    log "=== $name (t=${SECONDS}s, timeout ${max}s): $*"
    start=$SECONDS
    timeout "$max" "$@" > "$OUT/steps/$name.txt" 2>&1
    rc=$?
    tee -a "$LOG" < "$OUT/steps/$name.txt" > /dev/null
    tail -n 40 "$OUT/steps/$name.txt"
    if [ "$rc" -eq 124 ]; then log "=== $name: TIMEOUT after $(( SECONDS - start ))s"
    else log "=== $name: rc=$rc in $(( SECONDS - start ))s"; fi
}

#----------------------------------------------------------------------------
log "=== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) dry=$DRY iters=$ITERS budget=${BUDGET}s"
log "commit: $(git rev-parse HEAD 2>/dev/null || echo "${GPU_CHECK_COMMIT:-unknown (no .git; set GPU_CHECK_COMMIT)}")"
git status --short 2>/dev/null | head -n 20 | sed 's/^/  dirty: /' | tee -a "$LOG"
log "cpus: $(nproc)"
(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv 2>&1 || echo "nvidia-smi: not available") | tee -a "$LOG"
(nvcc --version 2>&1 | tail -n 2 || echo "nvcc: not on PATH") | tee -a "$LOG"
"$PYTHON" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" 2>&1 | tee -a "$LOG"

#----------------------------------------------------------------------------
# Preparation on the CPU, in parallel: datasets, upstream's fixed copy, and all plugin builds.

D256="$WORK/emoji256.zip"; D64="$WORK/emoji64.zip"
prep() {
    "$PYTHON" dataset_tool.py --source=datasets/emoji32.zip --dest="$D256" --resolution=256 --max-images=256 &
    "$PYTHON" dataset_tool.py --source=datasets/emoji32.zip --dest="$D64" --resolution=64 --max-images=256 &
    if [ -n "$UPSTREAM_DIR" ]; then
        "$PYTHON" bench/upstream_copy.py --upstream="$UPSTREAM_DIR" --dest="$WORK/upstream" || return 1
        if [ "$DRY" != 1 ]; then       # upstream's own _init() builds and loads its plugins
            (cd "$WORK/upstream" && "$PYTHON" -c "import torch
from torch_utils.ops import bias_act, upfirdn2d
print('upstream plugins loaded: bias_act', bias_act._init(), 'upfirdn2d', upfirdn2d._init())") &
        fi
    fi
    if [ "$DRY" != 1 ]; then           # one process per op, so both build at once
        for op in bias_act upfirdn2d; do
            STYLEGAN_ASA_STRICT_OPS=1 "$PYTHON" -c "import time, torch
from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d
t = time.time(); x = torch.zeros([1, 2, 8, 8], device='cuda')
bias_act.bias_act(x, act='lrelu') if '$op' == 'bias_act' else upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1], device='cuda'))
torch.cuda.synchronize(); print('$op built and ran in %.1fs:' % (time.time() - t), custom_ops.impl_report())" &
        done
    fi
    local failed=0
    for job in $(jobs -p); do wait "$job" || failed=1; done
    return $failed
}
export -f prep
export PYTHON DRY UPSTREAM_DIR WORK D256 D64
step prepare 200 bash -c prep

if [ "$DRY" = 1 ]; then
    step cuda-tests 60 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests/test_ops_cuda.py
    step ops-bench 120 "$PYTHON" bench/ops.py --device=cpu --shape=2x16x16 --iters=2
    TRAIN_256=(--cfg=tiny --data=datasets/emoji32.zip --iters=1 --batch=4 --device=cpu)
    TRAIN_64=(--cfg=tiny --data=datasets/emoji32.zip --iters=1 --batch=4 --device=cpu)
    UP_FLAGS=(--dry-run)
else
    step cuda-tests 150 env STYLEGAN_ASA_STRICT_OPS=1 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests
    step ops-bench 150 env STYLEGAN_ASA_STRICT_OPS=1 "$PYTHON" bench/ops.py --device=cuda --iters=3
    TRAIN_256=(--cfg=paper256 --data="$D256" --iters="$ITERS" --device=cuda)
    TRAIN_64=(--cfg=auto --data="$D64" --iters="$ITERS" --device=cuda)
    UP_FLAGS=()
fi

#----------------------------------------------------------------------------
# Training throughput, ours then upstream per resolution (same data, same measured iterations).

step train-ours-256 150 env STYLEGAN_ASA_STRICT_OPS=1 "$PYTHON" bench/train.py "${TRAIN_256[@]}" --aug=noaug --aug=ada --aug=ada+asa
if [ -n "$UPSTREAM_DIR" ]; then
    step train-upstream-256 120 "$PYTHON" bench/upstream_train.py --upstream="$WORK/upstream" --data="$D256" --cfg=paper256 \
        --iters="$ITERS" --aug=noaug --aug=ada "${UP_FLAGS[@]}"
fi
step train-ours-64 90 env STYLEGAN_ASA_STRICT_OPS=1 "$PYTHON" bench/train.py "${TRAIN_64[@]}" --aug=noaug --aug=ada --aug=ada+asa
if [ -n "$UPSTREAM_DIR" ]; then
    step train-upstream-64 90 "$PYTHON" bench/upstream_train.py --upstream="$WORK/upstream" --data="$D64" --cfg=auto \
        --iters="$ITERS" --aug=noaug --aug=ada "${UP_FLAGS[@]}"
fi

#----------------------------------------------------------------------------
log "=== summary (t=${SECONDS}s)"
grep -h -E '^(goals met|device:)' "$OUT/steps/ops-bench.txt" 2>/dev/null | tee -a "$LOG"
grep -h -E 'passed|failed|skipped|error' "$OUT/steps/cuda-tests.txt" 2>/dev/null | tail -n 1 | sed 's/^/cuda tests: /' | tee -a "$LOG"
"$PYTHON" bench/train_summary.py "$OUT"/steps/train-*.txt 2>&1 | tee -a "$LOG"
log "=== done in ${SECONDS}s; log: $LOG"
