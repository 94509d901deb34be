"""The default scheduler with prefix caching: admitted sequences skip their cached prefix."""

from pagedllm_core.engine.sequence import SequenceStatus
from tests.core.test_scheduler import make_sequence, make_scheduler, run_step


def run_to_completion(scheduler):
    while scheduler.has_unfinished_sequences():
        run_step(scheduler)


def test_a_second_request_with_the_same_long_prefix_schedules_only_the_rest():
    scheduler, manager = make_scheduler(num_blocks=32, block_size=4)
    first = make_sequence("first", 40)
    scheduler.add_sequence(first)
    output, _ = run_step(scheduler)
    assert output.scheduled[0].num_new_tokens == 40

    # While "first" still runs, its prompt blocks are named and a same-prefix sequence shares them.
    second = make_sequence("second", 40)
    second.token_ids[38:] = second.prompt_token_ids[38:] = [500, 501]
    scheduler.add_sequence(second)
    output, _ = run_step(scheduler)
    assert [(item.sequence.seq_id, item.num_new_tokens) for item in output.scheduled] == [("first", 1), ("second", 4)]
    assert manager.block_tables["second"][:9] == manager.block_tables["first"][:9]

    run_to_completion(scheduler)
    stats = manager.prefix_cache_stats()
    assert (stats.num_queried_tokens, stats.num_hit_tokens) == (80, 36)
    assert manager.num_used_blocks == 0
    assert all(count == 0 for count in manager.pool.ref_counts)


def test_a_preempted_request_resumes_from_its_own_cached_blocks():
    # 5 blocks of 4: two 7-token prompts fit until both need a third block.
    scheduler, manager = make_scheduler(num_blocks=5, block_size=4)
    early = make_sequence("early", 7, max_output_tokens=3)
    late = make_sequence("late", 7, max_output_tokens=3)
    late.prompt_token_ids = [token + 100 for token in late.prompt_token_ids]
    late.token_ids = list(late.prompt_token_ids)
    scheduler.add_sequence(early)
    scheduler.add_sequence(late)
    run_step(scheduler)
    run_step(scheduler)
    output, _ = run_step(scheduler)
    assert [sequence.seq_id for sequence in output.preempted] == ["late"]
    assert early.is_finished  # and its blocks are freed after late's

    output, _ = run_step(scheduler)
    # 7 prompt + 2 output tokens; the first 8 are in the two blocks "late" freed when preempted.
    assert [(item.sequence.seq_id, item.num_new_tokens) for item in output.scheduled] == [("late", 1)]
    run_to_completion(scheduler)
    assert late.num_output_tokens == 3
    assert manager.num_used_blocks == 0


def test_aborting_requests_that_share_cached_blocks_leaks_nothing():
    scheduler, manager = make_scheduler(num_blocks=16, block_size=4, max_num_seqs=2)
    for name in ("a", "b", "c"):
        scheduler.add_sequence(make_sequence(name, 10, max_output_tokens=8, n=2))
    run_step(scheduler)
    run_step(scheduler)
    scheduler.finish_sequences(["a", "a.1", "b", "b.1", "c"], SequenceStatus.FINISHED_ABORTED)
    assert not scheduler.has_unfinished_sequences()
    assert manager.num_used_blocks == 0
    assert all(count == 0 for count in manager.pool.ref_counts)
    assert manager.prefix_cache_stats().num_cached_blocks == 2


def test_without_prefix_caching_every_prompt_is_computed_in_full():
    scheduler, _ = make_scheduler(num_blocks=32, block_size=4, enable_prefix_caching=False)
    scheduler.add_sequence(make_sequence("first", 40, max_output_tokens=1))
    run_to_completion(scheduler)
    scheduler.add_sequence(make_sequence("second", 40, max_output_tokens=1))
    output, _ = run_step(scheduler)
    assert output.scheduled[0].num_new_tokens == 40
