"""``pagedllm bench tp``'s collective timings on the model's shapes, between two gloo processes."""

from types import SimpleNamespace

from pagedllm_core.bench.tensor_parallel import CollectiveTimes, measure_collectives


def test_collectives_are_timed_per_batch_size_between_two_processes():
    hf_config = SimpleNamespace(hidden_size=64, vocab_size=511)
    times = measure_collectives(2, hf_config, [1, 8], iterations=5)
    assert [time.rows for time in times] == [1, 8]
    assert all(time.all_reduce > 0 and time.all_gather > 0 and time.broadcast > 0 for time in times)


def test_a_decode_step_makes_two_all_reduces_per_layer_one_more_a_gather_and_a_broadcast():
    assert CollectiveTimes(1, all_reduce=1.0, all_gather=10.0, broadcast=100.0).per_step(num_layers=30) == 61 + 10 + 100
