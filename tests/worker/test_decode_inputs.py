"""A plain decode step's inputs, built without per-token expansion, equal the general builder's."""

import torch

from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.llm_engine import LLMEngine
from pagedllm_core.sampling_params import SamplingParams


def test_decode_inputs_equal_the_general_path(tiny_model_dir):
    engine = LLMEngine(EngineConfig(model=str(tiny_model_dir("LlamaForCausalLM")), dtype="float32", block_size=4))
    params = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)
    for index, length in enumerate([3, 9, 14]):  # contexts ending inside and at the edge of blocks
        engine.add_request(str(index), list(range(5, 5 + length)), params)
    for _ in range(6):
        engine.step()
    runner = engine.executor.worker.model_runner
    scheduled = [(held, 1, 1) for held in runner.batch.sequences.values()]
    fast = runner._prepare_decode_inputs(scheduled)
    general = runner._prepare_chunk_inputs(scheduled)
    for tensor, expected in zip(fast[:2], general[:2]):  # input ids, positions
        assert torch.equal(tensor, expected)
    assert fast[3] == general[3]  # query start rows
    for name in ("slot_mapping", "query_start_loc", "seq_lens", "block_tables"):
        actual, expected = getattr(fast[2], name), getattr(general[2], name)
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), name
    assert (fast[2].max_query_len, fast[2].max_seq_len) == (general[2].max_query_len, general[2].max_seq_len)
    engine.shutdown()
