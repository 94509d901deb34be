"""How much of a single-stream decode step's forward pass is Python: the model's forward against the same
compiled calls replayed back to back.

The engine decodes one greedy request until a decode step's forward pass is captured (its inputs, KV caches and
attention metadata). That forward pass then runs again and again, and so does the list of the C++ kernel calls
it made (the GGUF matmuls, the attention kernel and the layer kernels, with the very same arguments), recorded
once by wrapping the extensions' functions. The difference is what the model's Python costs per step:
``nn.Module`` calls, parameter lookups, views and the wrappers around each kernel. Per kernel, the table gives
the replayed time of its calls in one step. The decoder program (pagedllm_core.model.native_decode), which the
engine runs decode steps with unless ``enforce_eager``, is timed on the same step beside them.

    .venv/bin/python benchmarks/decode_step_python.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from pagedllm_core.bench.docs_section import cpu_name
from pagedllm_core.config import EngineConfig
from pagedllm_core.engine.llm_engine import LLMEngine
from pagedllm_core.sampling_params import SamplingParams


def kernel_modules():
    """The compiled extensions a float32 decode step of the default model calls."""
    from pagedllm_attention_cpu.kernels import load_kernels as attention_kernels
    from pagedllm_core.model.layers.cpu_kernels import load_kernels as layer_kernels
    from pagedllm_quant_gguf.kernels import load_kernels as gguf_kernels

    return [gguf_kernels(), attention_kernels(), layer_kernels()]


def capture_decode_forward(engine: LLMEngine, prompt_len: int):
    """The arguments of a decode step's ``model.forward`` (one sequence, ``prompt_len`` tokens of context)."""
    model = engine.executor.worker.model_runner.model
    captured = {}
    forward = model.forward

    def capturing_forward(*args):
        captured["args"] = args
        return forward(*args)

    model.forward = capturing_forward
    engine.add_request("decode", list(range(100, 100 + prompt_len)), SamplingParams(max_tokens=4, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()
    del model.forward  # the instance attribute; the class's forward is back
    return model, captured["args"]


def record_kernel_calls(model, args) -> list[tuple]:
    """Every C++ call one forward pass makes, as (function, args, kwargs)."""
    calls = []
    originals = []
    for module in kernel_modules():
        for name in dir(module):
            function = getattr(module, name)
            if name.startswith("_") or type(function).__name__ != "builtin_function_or_method":
                continue
            originals.append((module, name, function))

            def recording(*call_args, _function=function, **kwargs):
                calls.append((_function, call_args, kwargs))
                return _function(*call_args, **kwargs)

            setattr(module, name, recording)
    try:
        model(*args)
    finally:
        for module, name, function in originals:
            setattr(module, name, function)
    return calls


def milliseconds(run, repeats: int) -> float:
    """The fastest of 3 passes of ``repeats`` runs, per run."""
    fastest = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(repeats):
            run()
        fastest = min(fastest, (time.perf_counter() - began) / repeats)
    return fastest * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--prompt-len", type=int, default=128, help="tokens of context (default: 128)")
    parser.add_argument("--repeats", type=int, default=200, help="forward passes per timed pass (default: 200)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = LLMEngine(EngineConfig.build(dtype="float32", max_num_seqs=1))
    runner = engine.executor.worker.model_runner
    native_decoder, runner.native_decoder = runner.native_decoder, None  # the capture needs the layers' Python
    model, forward_args = capture_decode_forward(engine, args.prompt_len)
    with torch.inference_mode():
        calls = record_kernel_calls(model, forward_args)

        def replay():
            for function, call_args, kwargs in calls:
                function(*call_args, **kwargs)

        forward_ms = milliseconds(lambda: model(*forward_args), args.repeats)
        replay_ms = milliseconds(replay, args.repeats)
        program_ms = native_decoder and milliseconds(lambda: native_decoder.forward(*forward_args), args.repeats)
        per_kernel = defaultdict(lambda: [0, 0.0])
        for function, call_args, kwargs in calls:
            per_kernel[function.__name__][0] += 1
            per_kernel[function.__name__][1] += milliseconds(lambda: function(*call_args, **kwargs), 20)
    print(f"One decode step's forward pass of the default model (float32, {args.prompt_len} tokens of context), "
          f"{args.threads} thread(s), {cpu_name()}; fastest of 3 passes of {args.repeats}.\n")
    print("| work | ms per step |")
    print("| --- | ---: |")
    print(f"| the model's forward pass | {forward_ms:.2f} |")
    print(f"| its {len(calls)} C++ calls, replayed back to back | {replay_ms:.2f} |")
    print(f"| the difference: the model's Python | {forward_ms - replay_ms:.2f} |")
    if program_ms:
        print(f"| the decoder program: embedding, rotary lookup and every layer in one call | {program_ms:.2f} |")
    for name, (count, ms) in sorted(per_kernel.items(), key=lambda item: -item[1][1]):
        print(f"| {name} ({count} calls, each timed alone) | {ms:.2f} |")


if __name__ == "__main__":
    main()
