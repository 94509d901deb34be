#!/usr/bin/env bash
# llama-cpp-python built from source (its sdist carries llama.cpp) in its own virtualenv
# (benchmarks/llamacpp/.venv), for benchmarks/compare_llamacpp.py. The build targets the CPU it runs
# on (llama.cpp's default GGML_NATIVE=ON: AVX2/FMA/F16C where present), as a from-source install
# for one machine would. Takes 10-30 minutes on a small machine; idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1

LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"

if [ ! -x "$venv/bin/python" ]; then
    python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        "$venv/bin/pip" install -q --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
fi
"$venv/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__); print(llama_cpp.llama_print_system_info().decode())"
