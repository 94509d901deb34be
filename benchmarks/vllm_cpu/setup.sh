#!/usr/bin/env bash
# vLLM's CPU build in its own virtualenv (benchmarks/vllm_cpu/.venv) on the same torch CPU wheel as
# pagedllm, and the converted default model both engines load (benchmarks/vllm_cpu/model).
# Needs pagedllm's own venv first (scripts/setup.sh): the conversion reads the default GGUF from it.
# Idempotent: re-running it only fills in what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1

VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="2.13.0+cpu"  # what vllm-cpu 0.32.0 requires on x86_64, and pagedllm's own torch

if [ ! -x "$root/.venv/bin/python" ]; then
    echo "pagedllm's venv is missing: run scripts/setup.sh first" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
# Keep every resolver step on the CPU torch wheel: an unpinned torch (or a torchvision or
# torchaudio wanting another one) would pull a multi-GB CUDA build.
constraints="$venv/constraints.txt"
printf 'torch==%s\n' "$TORCH_VERSION" > "$constraints"
if ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    "$venv/bin/pip" install -q -c "$constraints" "torch==$TORCH_VERSION"
    "$venv/bin/pip" install -q -c "$constraints" "vllm-cpu==$VLLM_CPU_VERSION"
fi
# vllm-cpu depends on torchvision, torchaudio and torchcodec, but the registry's wheels of those are
# built against the CUDA torch (libc10_cuda.so): with the CPU torch they fail on import, and
# transformers imports torchvision as soon as it is installed, which breaks `import vllm`. Text-only
# models need none of them, so they go (pip check then lists them as missing; that is expected).
"$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

# The documented CPU tuning preloads tcmalloc and Intel's OpenMP. libiomp5.so comes with vllm-cpu
# (intel-openmp, in the venv's lib/); tcmalloc is Debian's libtcmalloc-minimal4.
if ! ldconfig -p | grep -q 'libtcmalloc_minimal.so.4'; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        { apt-get update -q && apt-get install -y -q libtcmalloc-minimal4; } >/dev/null 2>&1 \
            || echo "note: libtcmalloc-minimal4 could not be installed; the tuned runs go without tcmalloc" >&2
    else
        echo "note: libtcmalloc-minimal4 is not installed; the tuned runs go without tcmalloc" >&2
    fi
fi

# Both engines load the same Hugging Face directory, converted once from pagedllm's default GGUF.
"$root/.venv/bin/python" "$here/convert_model.py" --out "$here/model"
"$venv/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'on torch', torch.__version__)"
