"""``pagedllm bench throughput`` end to end on the tiny model: exact token counts, sane KV figures."""

from pagedllm_core.bench.kv_usage import KVUsageTally
from pagedllm_core.bench.roofline import ModelFlops
from pagedllm_core.bench.throughput import run_throughput, workload_for_engine
from pagedllm_core.bench.transformers_baseline import load_transformers_model, pad_token_id_for, run_static_batches
from pagedllm_core.bench.workloads import Workload, throughput_workload
from pagedllm_core.entrypoints.cli import main


def small_workload(engine, num_prompts=6):
    return workload_for_engine(engine, throughput_workload, num_prompts=num_prompts, min_input_len=5,
                               max_input_len=40, output_len=7)


def test_every_request_generates_exactly_output_len_tokens_under_preemption(engine):
    workload = small_workload(engine)
    special = set(engine.tokenizer.all_special_ids)
    assert not special & {token for prompt in workload.prompts for token in prompt}
    kv_usage = KVUsageTally()
    result = run_throughput(engine, workload, kv_usage)
    assert result.num_requests == 6 and result.num_output_tokens == 6 * 7
    assert result.num_prompt_tokens == workload.num_prompt_tokens
    assert result.elapsed > 0 and result.peak_memory_bytes > 0
    flops = ModelFlops.of_model(engine.executor.worker.model_runner.model, engine.model_info.hf_config)
    assert result.model_flops == sum(flops.sequence_flops(len(prompt), 7) for prompt in workload.prompts) > 0
    assert engine.scheduler.num_preemptions > 0  # 6 sequences of up to 47 tokens share 96 slots
    assert kv_usage.num_steps > 0 and 0 < kv_usage.peak_usage <= 1 and 0 < kv_usage.mean_usage <= kv_usage.peak_usage
    assert 0 <= kv_usage.waste < 1
    assert 2 <= kv_usage.peak_running_sequences <= 6  # the pool holds at least two whole sequences
    stats = engine.kv_cache_stats()
    assert stats.num_referenced_blocks == 0 and stats.num_computed_tokens == 0


def test_waste_counts_the_unfilled_tail_of_the_last_block(engine):
    kv_usage = KVUsageTally()
    run_throughput(engine, Workload("five tokens", [[6] * 5], output_len=2), kv_usage)
    # After step 1 the 5 prompt tokens are cached in 2 blocks of 4; after step 2 the request is done.
    assert (kv_usage.num_used_slots, kv_usage.num_allocated_slots) == (5, 8)
    assert kv_usage.waste == 3 / 8


def test_baseline_generates_the_same_number_of_tokens(engine):
    workload = small_workload(engine, num_prompts=5)
    model = load_transformers_model(engine.config, engine.model_info.dtype, engine.device)
    result = run_static_batches(model, workload, batch_size=2, pad_token_id=pad_token_id_for(engine))
    assert result.system == "transformers, static batch 2"
    assert result.num_output_tokens == 5 * 7 and result.num_prompt_tokens == workload.num_prompt_tokens


def test_command_prints_the_tables_and_draws_the_chart(tiny_llama, tmp_path, capsys):
    docs, plot = tmp_path / "benchmarks.md", tmp_path / "images" / "throughput.png"
    exit_code = main([
        "bench", "throughput", "--model", str(tiny_llama), "--num-prompts", "5", "--min-input-len", "5",
        "--max-input-len", "40", "--output-len", "7", "--matmul-size", "64", "--baseline-batch-sizes", "2,4",
        "--block-size", "4", "--kv-cache-memory", "64KiB", "--max-model-len", "64",
        "--write-docs", str(docs), "--plot", str(plot),
    ])
    assert exit_code == 0
    report = capsys.readouterr().out
    for row in ("| pagedllm |", "| transformers, static batch 2 |", "| transformers, static batch 4 |"):
        assert row in report
    assert "waste " in report and "of float32 peak" in report
    assert "| static batch 4 (left-padded to the batch's longest prompt) |" in report
    assert "![throughput of pagedllm and transformers](images/throughput.png)" in docs.read_text()
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_command_without_baseline(tiny_llama, capsys):
    main(["bench", "throughput", "--model", str(tiny_llama), "--num-prompts", "2", "--min-input-len", "5",
          "--max-input-len", "9", "--output-len", "3", "--matmul-size", "64", "--kv-cache-memory", "1MiB",
          "--no-baseline"])
    report = capsys.readouterr().out
    assert "| pagedllm |" in report and "| transformers" not in report
