"""Step messages are plain data: a mixed step and a beam-search step survive pickling and the wire's
restricted unpickler, which refuses anything but message types."""

import pickle

import pytest

from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.default_scheduler import ContinuousBatchingScheduler
from pagedllm_core.engine.beam_search import BeamSearchGroup
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.sequence import Sequence
from pagedllm_core.engine.step_messages import StepMessageBuilder
from pagedllm_core.executor import wire
from pagedllm_core.sampling.constraints import ConstraintState, pack_token_ids
from pagedllm_core.sampling_params import BeamSearchParams, SamplingParams
from pagedllm_core.structured_outputs import StructuredOutputsParams

EOS = 99
VOCAB = 100


class EvenTokens(ConstraintState):
    """Allows even token ids only."""

    def allowed_token_bitmask(self):
        import torch

        return pack_token_ids(torch.arange(0, VOCAB, 2), VOCAB)

    def accept_token(self, token_id):
        return token_id % 2 == 0

    def is_complete(self):
        return False

    def copy(self):
        return EvenTokens()


def make_engine_side(num_blocks=12, block_size=4):
    config = EngineConfig.build(block_size=block_size)
    manager = KVCacheManager(num_blocks, block_size, enable_prefix_caching=True)
    return ContinuousBatchingScheduler(config, manager), StepMessageBuilder(manager.block_tables, block_size)


def sequence(seq_id, num_prompt_tokens, max_output_tokens=8, **params):
    return Sequence(seq_id, list(range(1, num_prompt_tokens + 1)), SamplingParams(**params), max_output_tokens, frozenset({EOS}))


def step(scheduler, builder, token=8):
    plan = scheduler.schedule()
    message = builder.build(plan)
    sampled = {item.sequence.seq_id: [token] * item.num_samples for item in plan.scheduled if item.num_samples}
    progressed = scheduler.update_from_output(plan, sampled)
    builder.finish([s.seq_id for s in progressed if s.is_finished])
    return plan, message


def round_trip(message):
    assert pickle.loads(pickle.dumps(message)) == message
    decoded = wire.decode(wire.encode(message))
    assert decoded == message
    return decoded


def test_a_mixed_step_round_trips_new_running_forked_and_preempted_sequences_and_copies():
    scheduler, builder = make_engine_side(num_blocks=9, block_size=2)
    guided = sequence(
        "guided", 3, temperature=0.7, seed=3, logit_bias={5: 1.5}, stop=["x"], min_tokens=1,
        structured_outputs=StructuredOutputsParams(regex="[0-9]+"),
    )
    guided.constraint = EvenTokens()
    fan = sequence("fan", 3, n=2, temperature=1.0)
    late = sequence("late", 3)
    for s in (guided, fan, late):
        scheduler.add_sequence(s)
    _, first = step(scheduler, builder)
    assert [data.seq_id for data in first.new_sequences] == ["guided", "fan", "late"]
    assert set(first.allowed_token_bitmasks) == {"guided"}
    _, second = step(scheduler, builder)  # fan forked fan.1 last step; copies for the shared block
    messages = [first, second]
    while not any(m.preempted_seq_ids for m in messages):
        messages.append(step(scheduler, builder)[1])
    for message in messages:
        round_trip(message)
    assert any(data.seq_id == "fan.1" for m in messages for data in m.new_sequences)
    assert any(m.block_copies for m in messages)
    assert messages[-1].preempted_seq_ids
    cached = second.cached_sequences[0]
    assert cached.new_token_ids == [8]  # the sampled-token feedback
    assert any(m.new_sequences and m.cached_sequences for m in messages)


def test_a_beam_search_step_round_trips_and_names_its_candidates():
    scheduler, builder = make_engine_side()
    root = Sequence("root", [1, 2, 3], SamplingParams(max_tokens=4, ignore_eos=True), 4, frozenset())
    ids = iter(range(100))
    BeamSearchGroup("beams", root, BeamSearchParams(beam_width=3, max_tokens=4), frozenset({EOS}), lambda: f"b{next(ids)}")
    scheduler.add_sequence(root)
    plan = scheduler.schedule()
    message = round_trip(builder.build(plan))
    (data,) = message.new_sequences
    assert data.num_beam_candidates == 6 and data.num_samples == 1


@pytest.mark.parametrize("payload", [pickle.dumps(print), pickle.dumps(pickle.loads), b"cos\nsystem\n(S'true'\ntR."])
def test_the_wire_refuses_anything_but_messages(payload):
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        wire.decode(payload)


def test_the_start_message_carries_the_engine_config():
    config = EngineConfig.build(model="some/model", kv_cache_memory="1GiB", distributed_executor_backend="mp")
    assert wire.decode(wire.encode(wire.StartWorker(config))).config == config
