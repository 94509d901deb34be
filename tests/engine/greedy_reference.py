"""The workload the engine's greedy outputs are compared on."""

ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "OPTForCausalLM"]
PROMPTS = [
    "The quick brown fox",
    "Once upon a time, in a land far away, there lived a",
    "Hello",
    "Paged attention stores keys and values in fixed-size blocks so that memory is not wasted on",
]
NUM_NEW_TOKENS = 12
