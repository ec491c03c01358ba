#!/usr/bin/env bash
# Compile-check (no link) every .cu/.cpp under torch_utils/ (or the files given as arguments)
# against the installed torch headers.
# Works on a CPU-only machine with nvcc: the CPU wheel ships the ATen/c10 CUDA headers, and the
# few cuBLAS/cuSPARSE/cuSOLVER declarations they pull in come from stub headers written to a temp
# dir (never into the repo). Prints one line per file; exits 1 on a compile error, 0 with
# "skipped: nvcc not found" when there is no CUDA toolkit.
# Env: CUDA_HOME (toolkit root; default: derived from nvcc on PATH), CUDA_CHECK_ARCH (default sm_90),
#      CUDA_CHECK_JOBS (parallel compiles; default: number of CPUs, at most 4), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
ARCH="${CUDA_CHECK_ARCH:-sm_90}"

#----------------------------------------------------------------------------
# Find the toolkit root. `nvcc` on PATH may be a wrapper script that execs the real one.

find_cuda_root() {
    if [ -n "${CUDA_HOME:-}" ]; then echo "$CUDA_HOME"; return; fi
    local nvcc real
    nvcc="$(command -v nvcc 2>/dev/null)" || return 0
    real="$(readlink -f "$nvcc")"
    if head -c 2 "$real" | grep -q '#!'; then
        real="$(grep -oE '/[^ "]+/bin/nvcc' "$real" | head -n 1)"
        [ -n "$real" ] || return 0
        real="$(readlink -f "$real")"
    fi
    dirname "$(dirname "$real")"
}

CUDA_ROOT="$(find_cuda_root)"
if [ -z "$CUDA_ROOT" ]; then
    echo "compile_cuda: skipped: nvcc not found (set CUDA_HOME or put nvcc on PATH to check the CUDA sources)"
    exit 0
fi
NVCC="$CUDA_ROOT/bin/nvcc"
if [ ! -x "$NVCC" ]; then
    echo "compile_cuda: FAIL: $NVCC not found (CUDA_HOME must be the CUDA toolkit root)"
    exit 1
fi

if [ "$#" -gt 0 ]; then
    SOURCES=("$@")                               # explicit files (e.g. to check a single kernel)
else
    mapfile -t SOURCES < <(find torch_utils -type f \( -name '*.cu' -o -name '*.cpp' \) | sort)
fi
if [ "${#SOURCES[@]}" -eq 0 ]; then
    echo "compile_cuda: no .cu/.cpp files under torch_utils"
    exit 0
fi

#----------------------------------------------------------------------------
# Stub library headers + torch's include paths and nvcc flags, in a temp dir removed on exit.

WORK="$(mktemp -d -t cudacheck-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/stubs" "$WORK/obj" "$WORK/log"
cat > "$WORK/stubs/cublas_v2.h" <<'EOF'
#pragma once
#include <cuda_runtime_api.h>
typedef struct cublasContext* cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum { CUBLAS_SIDE_LEFT = 0, CUBLAS_SIDE_RIGHT = 1 } cublasSideMode_t;
typedef enum { CUBLAS_FILL_MODE_LOWER = 0, CUBLAS_FILL_MODE_UPPER = 1 } cublasFillMode_t;
typedef enum { CUBLAS_DIAG_NON_UNIT = 0, CUBLAS_DIAG_UNIT = 1 } cublasDiagType_t;
typedef enum { CUBLAS_POINTER_MODE_HOST = 0, CUBLAS_POINTER_MODE_DEVICE = 1 } cublasPointerMode_t;
extern "C" cublasStatus_t cublasSetPointerMode(cublasHandle_t, cublasPointerMode_t);
extern "C" cublasStatus_t cublasGetPointerMode(cublasHandle_t, cublasPointerMode_t*);
extern "C" const char* cublasGetStatusString(cublasStatus_t);
EOF
printf '#pragma once\n#include "cublas_v2.h"\ntypedef struct cublasLtContext* cublasLtHandle_t;\n' > "$WORK/stubs/cublasLt.h"
cat > "$WORK/stubs/cusparse.h" <<'EOF'
#pragma once
typedef struct cusparseContext* cusparseHandle_t;
typedef enum { CUSPARSE_STATUS_SUCCESS = 0 } cusparseStatus_t;
extern "C" const char* cusparseGetErrorString(cusparseStatus_t);
EOF
printf '#pragma once\ntypedef enum { CUSOLVER_STATUS_SUCCESS = 0, CUSOLVER_STATUS_INVALID_VALUE = 3 } cusolverStatus_t;\n' > "$WORK/stubs/cusolver_common.h"
printf '#pragma once\n#include "cusolver_common.h"\ntypedef struct cusolverDnContext* cusolverDnHandle_t;\n' > "$WORK/stubs/cusolverDn.h"

if ! TORCH_INFO="$("$PYTHON" - <<'EOF'
import sysconfig
from torch.utils import cpp_extension as ce
for p in ce.include_paths() + [sysconfig.get_paths()['include']]:
    print('INC', p)
for flag in ce.COMMON_NVCC_FLAGS:
    print('NVCCFLAG', flag)
EOF
)"; then
    echo "compile_cuda: FAIL: could not query torch's include paths with $PYTHON"
    exit 1
fi
INCLUDES=(-I"$WORK/stubs")
NVCC_FLAGS=()
while read -r kind value; do
    case "$kind" in
        INC) INCLUDES+=(-isystem "$value") ;;      # nvcc rejects the glued form "-isystem/path"
        NVCCFLAG) NVCC_FLAGS+=("$value") ;;
    esac
done <<< "$TORCH_INFO"
DEFINES=(-DTORCH_EXTENSION_NAME=compile_check -DTORCH_API_INCLUDE_EXTENSION_H -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)

#----------------------------------------------------------------------------
# Compile one file; write its status line and log into $WORK.

compile_one() {
    local src="$1" id obj start rc
    id="$(echo "$src" | tr '/.' '__')"
    obj="$WORK/obj/$id.o"
    start=$(date +%s)
    if [[ "$src" == *.cu ]]; then
        "$NVCC" -c "$src" -o "$obj" -arch="$ARCH" -std=c++20 -Xcompiler -fPIC \
            "${NVCC_FLAGS[@]}" "${DEFINES[@]}" "${INCLUDES[@]}" > "$WORK/log/$id.log" 2>&1
    else
        c++ -c "$src" -o "$obj" -fPIC -std=c++20 "${DEFINES[@]}" "${INCLUDES[@]}" \
            -isystem "$CUDA_ROOT/include" > "$WORK/log/$id.log" 2>&1
    fi
    rc=$?
    echo "$rc $(( $(date +%s) - start ))" > "$WORK/log/$id.rc"
}

JOBS="${CUDA_CHECK_JOBS:-$(nproc 2>/dev/null || echo 2)}"
[ "$JOBS" -gt 4 ] && JOBS=4
echo "compile_cuda: checking ${#SOURCES[@]} files with $NVCC ($ARCH), $JOBS at a time"
running=0
for src in "${SOURCES[@]}"; do
    compile_one "$src" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
done
wait

#----------------------------------------------------------------------------
# Report one line per file, with the compiler's error lines for failures.

failed=0
for src in "${SOURCES[@]}"; do
    id="$(echo "$src" | tr '/.' '__')"
    read -r rc secs < "$WORK/log/$id.rc"
    if [ "$rc" -eq 0 ]; then
        echo "OK   $src (${secs}s)"
    else
        echo "FAIL $src (${secs}s)"
        grep -E 'error|fatal' "$WORK/log/$id.log" | head -n 20 | sed 's/^/    /'
        failed=1
    fi
done
exit "$failed"
