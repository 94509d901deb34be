"""``pagedllm bench latency`` on the tiny model."""

from pagedllm_core.bench.latency import time_engine_stream
from pagedllm_core.bench.transformers_baseline import load_transformers_model, time_single_stream
from pagedllm_core.entrypoints.cli import main


def test_one_stream_is_timed_token_by_token(engine):
    timing = time_engine_stream(engine, [5, 6, 7, 8], output_len=6)
    assert timing.num_output_tokens == 6 and timing.ttft > 0 and timing.decode_seconds > 0
    model = load_transformers_model(engine.config, engine.model_info.dtype, engine.device)
    timing = time_single_stream(model, [5, 6, 7, 8], output_len=6, pad_token_id=0)
    assert timing.num_output_tokens == 6 and timing.ttft > 0 and timing.decode_seconds > 0


def test_command_reports_both_systems(tiny_llama, tmp_path, capsys):
    plot = tmp_path / "latency.png"
    main(["bench", "latency", "--model", str(tiny_llama), "--input-len", "16", "--output-len", "5",
          "--num-iters", "2", "--num-warmup", "1", "--kv-cache-memory", "1MiB", "--plot", str(plot)])
    report = capsys.readouterr().out
    assert "2 timed iterations after 1 warm-up" in report
    assert "| pagedllm |" in report and "| transformers generate |" in report
    assert plot.is_file()
