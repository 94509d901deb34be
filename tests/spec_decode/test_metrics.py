"""The server's /metrics counts speculative drafts with vLLM's metric names."""

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from pagedllm_core import SamplingParams
from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.async_engine import AsyncLLMEngine
from pagedllm_core.server.metrics import ServerMetrics


async def generate(engine: AsyncLLMEngine) -> None:
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    stream = await engine.add_request("r", "The quick brown fox", params)
    with stream:
        async for _ in stream:
            pass


def test_metrics_count_drafts_and_accepted_tokens(tiny_model_dir):
    directory = str(tiny_model_dir("LlamaForCausalLM"))
    engine = AsyncLLMEngine.from_config(
        EngineConfig.build(**{
            "model": directory,
            "dtype": "float32",
            "kv_cache_memory": "16MiB",
            # The target drafting for itself: every greedy draft is accepted.
            "speculative_config": {"method": "draft_model", "model": directory, "num_speculative_tokens": 3},
        })
    )
    try:
        asyncio.run(generate(engine))
        text = ServerMetrics(engine).render().decode()
    finally:
        engine.shutdown(timeout=5)
    families = text_string_to_metric_families(text)
    samples = {sample.name: sample.value for family in families for sample in family.samples}
    assert samples["pagedllm:spec_decode_num_drafts_total"] >= 3
    assert samples["pagedllm:spec_decode_num_draft_tokens_total"] >= 9
    num_draft_tokens = samples["pagedllm:spec_decode_num_draft_tokens_total"]
    assert samples["pagedllm:spec_decode_num_accepted_tokens_total"] == num_draft_tokens
