"""The workload the engine's greedy outputs are compared on, and where the engine runs it.

The environment picks the engine's side so that the same comparisons run on a GPU with a chosen
attention backend (scripts/gpu_check.sh does): ``PAGEDLLM_TEST_DEVICE`` (``cpu``, ``cuda``; unset:
the engine's ``auto``), ``PAGEDLLM_TEST_ATTENTION_BACKEND`` (unset: ``auto``) and
``PAGEDLLM_TEST_HEAD_SIZE`` (the tiny models' head size, 16 when unset; compiled kernels need 64+).
transformers' side always runs on the CPU in float32.
"""

import os

ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "OPTForCausalLM"]
PROMPTS = [
    "The quick brown fox",
    "Once upon a time, in a land far away, there lived a",
    "Hello",
    "Paged attention stores keys and values in fixed-size blocks so that memory is not wasted on",
]
NUM_NEW_TOKENS = 12


def engine_settings() -> dict:
    """The LLM keyword arguments the environment asks for."""
    names = {"device": "PAGEDLLM_TEST_DEVICE", "attention_backend": "PAGEDLLM_TEST_ATTENTION_BACKEND"}
    return {field: os.environ[variable] for field, variable in names.items() if os.environ.get(variable)}


def model_overrides(architecture: str) -> dict:
    """Config overrides that give the tiny ``architecture`` the head size the environment asks for."""
    head_size = os.environ.get("PAGEDLLM_TEST_HEAD_SIZE")
    if not head_size:
        return {}
    if architecture == "OPTForCausalLM":
        # OPT derives its head size from hidden_size and its 4 heads.
        return {"hidden_size": 4 * int(head_size)}
    return {"head_dim": int(head_size)}
