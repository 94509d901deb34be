#!/usr/bin/env bash
# Download, here, the wheels scripts/gpu_check.sh installs on a GPU machine that has no network.
#
# That machine (an H200 image: Python 3.12, torch, triton, transformers, peft, pytest, ninja, nvcc)
# lacks pagedllm's server and GGUF dependencies. Each wheel is fetched at the version this checkout's
# .venv runs (so the set is known to work together), without its dependencies: the ones not listed
# here are already on that machine. The wheels land in wheels/ (ignored by git; the device tool
# carries it when told to: carry=["wheels"]).
#
#   bash scripts/gpu_wheels.sh            # Python 3.12, manylinux x86-64
#   PYTHON_VERSION=3.11 bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_VERSION=${PYTHON_VERSION:-3.12}
WHEELS_DIR=${WHEELS_DIR:-wheels}
VENV_PYTHON=.venv/bin/python
# pagedllm's own requirements the machine lacks, the guided-JSON plugin's, and setuptools to build
# pagedllm and its plugins there (their build backend, installed offline from this folder).
PACKAGES=(
    fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection
    jsonschema jsonschema-specifications referencing rpds-py
    gguf outlines-core setuptools
)

mkdir -p "$WHEELS_DIR"
for package in "${PACKAGES[@]}"; do
    version=$("$VENV_PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package")
    "$VENV_PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$WHEELS_DIR" "$package==$version"
done
ls -l "$WHEELS_DIR"
du -sh "$WHEELS_DIR"
