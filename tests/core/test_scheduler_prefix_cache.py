"""The default scheduler with prefix caching: admitted requests skip their cached prefix."""

from pagedllm_core.engine.request import RequestStatus
from tests.core.test_scheduler import make_request, make_scheduler, run_step


def run_to_completion(scheduler):
    while scheduler.has_unfinished_requests():
        run_step(scheduler)


def test_a_second_request_with_the_same_long_prefix_schedules_only_the_rest():
    scheduler, manager = make_scheduler(num_blocks=32, block_size=4)
    first = make_request("first", 40)
    scheduler.add_request(first)
    output, _ = run_step(scheduler)
    assert output.scheduled[0].num_new_tokens == 40

    # While "first" still runs, its prompt blocks are named and a same-prefix request shares them.
    second = make_request("second", 40)
    second.token_ids[38:] = second.prompt_token_ids[38:] = [500, 501]
    scheduler.add_request(second)
    output, _ = run_step(scheduler)
    assert [(item.request.request_id, item.num_new_tokens) for item in output.scheduled] == [("first", 1), ("second", 4)]
    assert manager.block_tables["second"][:9] == manager.block_tables["first"][:9]

    run_to_completion(scheduler)
    stats = manager.prefix_cache_stats()
    assert (stats.num_queried_tokens, stats.num_hit_tokens) == (80, 36)
    assert manager.num_used_blocks == 0
    assert all(count == 0 for count in manager.pool.ref_counts)


def test_a_preempted_request_resumes_from_its_own_cached_blocks():
    # 5 blocks of 4: two 7-token prompts fit until both need a third block.
    scheduler, manager = make_scheduler(num_blocks=5, block_size=4)
    early = make_request("early", 7, max_output_tokens=3)
    late = make_request("late", 7, max_output_tokens=3)
    late.prompt_token_ids = [token + 100 for token in late.prompt_token_ids]
    late.token_ids = list(late.prompt_token_ids)
    scheduler.add_request(early)
    scheduler.add_request(late)
    run_step(scheduler)
    run_step(scheduler)
    output, _ = run_step(scheduler)
    assert [request.request_id for request in output.preempted] == ["late"]
    assert early.is_finished  # and its blocks are freed after late's

    output, _ = run_step(scheduler)
    # 7 prompt + 2 output tokens; the first 8 are in the two blocks "late" freed when preempted.
    assert [(item.request.request_id, item.num_new_tokens) for item in output.scheduled] == [("late", 1)]
    run_to_completion(scheduler)
    assert late.num_output_tokens == 3
    assert manager.num_used_blocks == 0


def test_aborting_requests_that_share_cached_blocks_leaks_nothing():
    scheduler, manager = make_scheduler(num_blocks=16, block_size=4, max_num_seqs=2)
    for name in ("a", "b", "c"):
        scheduler.add_request(make_request(name, 10, max_output_tokens=8, n=2))
    run_step(scheduler)
    run_step(scheduler)
    scheduler.finish_requests(["a", "a.1", "b", "b.1", "c"], RequestStatus.FINISHED_ABORTED)
    assert not scheduler.has_unfinished_requests()
    assert manager.num_used_blocks == 0
    assert all(count == 0 for count in manager.pool.ref_counts)
    assert manager.prefix_cache_stats().num_cached_blocks == 2


def test_without_prefix_caching_every_prompt_is_computed_in_full():
    scheduler, _ = make_scheduler(num_blocks=32, block_size=4, enable_prefix_caching=False)
    scheduler.add_request(make_request("first", 40, max_output_tokens=1))
    run_to_completion(scheduler)
    scheduler.add_request(make_request("second", 40, max_output_tokens=1))
    output, _ = run_step(scheduler)
    assert output.scheduled[0].num_new_tokens == 40
