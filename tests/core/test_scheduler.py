from pagedllm_core.config import EngineConfig
from pagedllm_core.default_plugins.default_scheduler import ContinuousBatchingScheduler
from pagedllm_core.engine.kv_cache_manager import KVCacheManager
from pagedllm_core.engine.sequence import Sequence, SequenceStatus
from pagedllm_core.sampling_params import SamplingParams

EOS = 99


def make_scheduler(num_blocks=16, block_size=4, **settings):
    config = EngineConfig.build(block_size=block_size, **settings)
    manager = KVCacheManager(num_blocks, block_size, enable_prefix_caching=config.enable_prefix_caching)
    return ContinuousBatchingScheduler(config, manager), manager


def make_sequence(seq_id, num_prompt_tokens, max_output_tokens=4, **params):
    return Sequence(
        seq_id, list(range(1, num_prompt_tokens + 1)), SamplingParams(**params), max_output_tokens, frozenset({EOS})
    )


def run_step(scheduler, token=7):
    plan = scheduler.schedule()
    sampled = {item.sequence.seq_id: [token] * item.num_samples for item in plan.scheduled if item.num_samples}
    return plan, scheduler.update_from_output(plan, sampled)


def test_prefill_and_decode_share_a_step_and_finished_requests_leave_at_once():
    scheduler, manager = make_scheduler()
    first = make_sequence("first", 5, max_output_tokens=2)
    scheduler.add_sequence(first)
    output, _ = run_step(scheduler)
    assert [(item.sequence.seq_id, item.num_new_tokens) for item in output.scheduled] == [("first", 5)]

    second = make_sequence("second", 3)
    scheduler.add_sequence(second)
    output, progressed = run_step(scheduler)
    # The decode of "first" and the whole prefill of "second" run together.
    assert [(item.sequence.seq_id, item.num_new_tokens) for item in output.scheduled] == [("first", 1), ("second", 3)]
    assert first.status is SequenceStatus.FINISHED_LENGTH
    assert scheduler.num_running_sequences == 1
    assert "first" not in manager.block_tables


def test_long_prompt_is_chunked_under_the_token_budget():
    scheduler, _ = make_scheduler(max_num_batched_tokens=4)
    sequence = make_sequence("long", 10)
    scheduler.add_sequence(sequence)
    chunks = []
    while sequence.num_output_tokens == 0:
        output, _ = run_step(scheduler)
        chunks.append(output.scheduled[0].num_new_tokens)
    assert chunks == [4, 4, 2]


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_step():
    scheduler, _ = make_scheduler(max_num_batched_tokens=6, enable_chunked_prefill=False)
    scheduler.add_sequence(make_sequence("a", 4))
    scheduler.add_sequence(make_sequence("b", 4))
    output, _ = run_step(scheduler)
    assert [item.sequence.seq_id for item in output.scheduled] == ["a"]


def test_max_num_seqs_caps_running_requests():
    scheduler, _ = make_scheduler(max_num_seqs=2)
    for index in range(3):
        scheduler.add_sequence(make_sequence(str(index), 2))
    output, _ = run_step(scheduler)
    assert len(output.scheduled) == 2
    assert scheduler.num_waiting_sequences == 1


def test_pool_exhaustion_preempts_the_latest_request_which_resumes_by_recompute():
    # 4 blocks of 2 tokens: two sequences of 3 prompt tokens fit (2 blocks each) until they grow.
    scheduler, manager = make_scheduler(num_blocks=4, block_size=2)
    early = make_sequence("early", 3, max_output_tokens=3)
    late = make_sequence("late", 3, max_output_tokens=3)
    scheduler.add_sequence(early)
    scheduler.add_sequence(late)
    run_step(scheduler)  # both prefilled: positions 0-2, 4 blocks used
    run_step(scheduler)  # position 3 still fits each second block
    output, _ = run_step(scheduler)  # position 4 needs a third block each: "late" is preempted
    assert [r.seq_id for r in output.preempted] == ["late"]
    assert late.status is SequenceStatus.PREEMPTED and late.num_computed_tokens == 0
    assert late.num_output_tokens == 2  # its sampled tokens are kept and recomputed later

    while scheduler.has_unfinished_sequences():
        run_step(scheduler)
    assert early.num_output_tokens == 3 and late.num_output_tokens == 3
    assert manager.num_used_blocks == 0


def test_abort_frees_blocks_of_running_and_waiting_requests():
    scheduler, manager = make_scheduler(max_num_seqs=1)
    scheduler.add_sequence(make_sequence("running", 5))
    scheduler.add_sequence(make_sequence("waiting", 5))
    run_step(scheduler)
    assert manager.num_used_blocks > 0
    aborted = scheduler.finish_sequences(["running", "waiting", "unknown"], SequenceStatus.FINISHED_ABORTED)
    assert {r.seq_id for r in aborted} == {"running", "waiting"}
    assert all(r.status is SequenceStatus.FINISHED_ABORTED for r in aborted)
    assert manager.num_used_blocks == 0
    assert not scheduler.has_unfinished_sequences()


def test_stop_token_finishes_request():
    scheduler, manager = make_scheduler()
    sequence = make_sequence("a", 3, max_output_tokens=10)
    scheduler.add_sequence(sequence)
    run_step(scheduler, token=EOS)
    assert sequence.status is SequenceStatus.FINISHED_STOPPED and sequence.stop_reason == EOS
    assert manager.num_used_blocks == 0


def test_best_of_forks_siblings_that_share_the_prompt_blocks():
    scheduler, manager = make_scheduler(num_blocks=16, block_size=4)
    parent = make_sequence("p", 6, max_output_tokens=3, n=3)
    scheduler.add_sequence(parent)
    output = scheduler.schedule()
    assert [item.num_samples for item in output.scheduled] == [3]
    progressed = scheduler.update_from_output(output, {"p": [5, 6, 7]})
    assert [(r.seq_id, r.output_token_ids) for r in progressed] == [("p", [5]), ("p.1", [6]), ("p.2", [7])]
    assert manager.num_used_blocks == 2  # the prompt's two blocks, held three times
    assert all(table == manager.block_tables["p"] for table in manager.block_tables.values())

    output, _ = run_step(scheduler)  # each writes position 6 into the shared half-full block
    assert len(output.block_copies) == 2  # two copies; the last holder writes in place
    assert manager.num_used_blocks == 4
    while scheduler.has_unfinished_sequences():
        run_step(scheduler)
    assert manager.num_used_blocks == 0
