"""``pagedllm bench attention``: time registered attention backends on decode and prefill steps.

Each backend runs ``forward`` (cache write plus attention) on the same random paged step. On CUDA
the table also gives the memory-bandwidth floor of each decode step: the bytes of K/V it must read
divided by the device's copy bandwidth, and the fraction of that floor the backend reaches.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pagedllm_core.attention.backend import AttentionSpec
from pagedllm_core.attention.metadata import AttentionMetadata
from pagedllm_core.registry import PluginKind, default_registry

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Large enough to stream far past the GPU's caches.
_BANDWIDTH_PROBE_BYTES = 1 << 30


@dataclass
class RandomStep:
    """One step of random attention inputs over a randomly laid out paged KV cache."""

    spec: AttentionSpec
    query: torch.Tensor  # [num_tokens, num_heads, head_size]
    key: torch.Tensor  # [num_tokens, num_kv_heads, head_size]
    value: torch.Tensor  # [num_tokens, num_kv_heads, head_size]
    kv_cache: torch.Tensor  # [2, num_blocks, block_size, num_kv_heads, head_size], random everywhere
    metadata: AttentionMetadata


def build_random_step(
    seq_lens: list[int],
    query_lens: list[int],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> RandomStep:
    """A step where sequence ``i`` has ``seq_lens[i]`` tokens of context, the last ``query_lens[i]`` new.

    Blocks are handed out in a shuffled order so that kernels must follow the block tables, and
    the whole cache (including the new tokens' slots) starts random so that a missing cache write
    shows up as a mismatch.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    num_blocks_per_seq = [-(-seq_len // block_size) for seq_len in seq_lens]
    # A few spare blocks so that block ids are not simply 0..n-1.
    num_blocks = sum(num_blocks_per_seq) + 3
    block_order = torch.randperm(num_blocks, generator=generator).tolist()
    max_blocks = max(num_blocks_per_seq)
    block_tables = torch.zeros(len(seq_lens), max_blocks, dtype=torch.int32)
    slots: list[int] = []
    for seq, (seq_len, query_len, seq_num_blocks) in enumerate(
        zip(seq_lens, query_lens, num_blocks_per_seq, strict=True)
    ):
        block_ids = [block_order.pop() for _ in range(seq_num_blocks)]
        block_tables[seq, :seq_num_blocks] = torch.tensor(block_ids, dtype=torch.int32)
        for position in range(seq_len - query_len, seq_len):
            slots.append(block_ids[position // block_size] * block_size + position % block_size)

    num_tokens = sum(query_lens)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    query_start_loc = torch.zeros(len(seq_lens) + 1, dtype=torch.int32)
    query_start_loc[1:] = torch.tensor(query_lens).cumsum(0)
    metadata = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        query_start_loc=query_start_loc.to(device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_tables=block_tables.to(device),
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
    )
    spec = AttentionSpec(num_heads, num_kv_heads, head_size, head_size**-0.5, block_size, dtype, device)
    return RandomStep(
        spec=spec,
        query=random(num_tokens, num_heads, head_size),
        key=random(num_tokens, num_kv_heads, head_size),
        value=random(num_tokens, num_kv_heads, head_size),
        kv_cache=random(2, num_blocks, block_size, num_kv_heads, head_size),
        metadata=metadata,
    )


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"8x1024,1x4096"`` -> ``[(8, 1024), (1, 4096)]`` (number of sequences x tokens each)."""
    shapes = []
    for item in text.split(","):
        try:
            num_seqs, num_tokens = (int(part) for part in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"shape {item!r} is not NUM_SEQSxTOKENS, e.g. 8x1024") from None
        shapes.append((num_seqs, num_tokens))
    return shapes


def add_attention_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``pagedllm bench attention``."""
    parser.add_argument(
        "--backends", default=None, help="comma-separated attention backend names (default: every registered one)"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument(
        "--dtype",
        choices=["auto", *_DTYPES],
        default="auto",
        help="query and KV cache dtype (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    parser.add_argument("--num-heads", type=int, default=32)
    parser.add_argument("--num-kv-heads", type=int, default=8)
    parser.add_argument("--head-size", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument(
        "--decode-shapes",
        type=parse_shapes,
        default=parse_shapes("1x8192,8x4096,64x2048,256x1024"),
        help="decode steps as NUM_SEQSxCONTEXT_LEN, comma-separated",
    )
    parser.add_argument(
        "--prefill-shapes",
        type=parse_shapes,
        default=parse_shapes("1x2048,4x512"),
        help="prefill steps as NUM_SEQSxPROMPT_LEN, comma-separated",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--iters", type=int, default=20, help="timed calls, averaged")


def run_attention_bench(args: argparse.Namespace) -> str:
    """Time each backend on each shape; returns a markdown table."""
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    dtype = _DTYPES.get(args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    registry = default_registry()
    names = args.backends.split(",") if args.backends else registry.names(PluginKind.ATTENTION_BACKEND)
    backend_classes = {name: registry.resolve(PluginKind.ATTENTION_BACKEND, name) for name in names}
    bandwidth = _device_bandwidth(device) if device.type == "cuda" else None

    # (kind, number of sequences, context length, new tokens per sequence)
    steps = [("decode", num_seqs, length, 1) for num_seqs, length in args.decode_shapes]
    steps += [("prefill", num_seqs, length, length) for num_seqs, length in args.prefill_shapes]
    lines = [
        f"device: {_device_name(device)}; dtype {str(dtype).removeprefix('torch.')}; {args.num_heads} query heads, "
        f"{args.num_kv_heads} KV heads, head size {args.head_size}, block size {args.block_size}",
    ]
    if bandwidth is not None:
        lines.append(f"measured copy bandwidth: {bandwidth / 1e9:.0f} GB/s")
    lines += [
        "",
        "| backend | step | seqs x tokens | time per call | K/V read | bandwidth floor | of floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, num_seqs, length, query_len in steps:
        step = build_random_step(
            [length] * num_seqs,
            [query_len] * num_seqs,
            num_heads=args.num_heads,
            num_kv_heads=args.num_kv_heads,
            head_size=args.head_size,
            block_size=args.block_size,
            dtype=dtype,
            device=device,
        )
        kv_bytes = num_seqs * length * args.num_kv_heads * args.head_size * 2 * step.kv_cache.element_size()
        floor = kv_bytes / bandwidth if bandwidth is not None and kind == "decode" else None
        for name, backend_class in backend_classes.items():
            shape = f"{num_seqs} x {length}"
            reasons = backend_class.unsupported_reasons(step.spec)
            if reasons:
                lines.append(f"| {name} | {kind} | {shape} | unsupported: {'; '.join(reasons)} | | | |")
                continue
            backend = backend_class(step.spec)
            backend.prepare(step.metadata)
            forward = functools.partial(backend.forward, step.query, step.key, step.value, step.kv_cache, step.metadata)
            seconds = _time_per_call(forward, device, args.warmup, args.iters)
            time_text = _format_seconds(seconds)
            # Triton runs on the CPU only through its interpreter, which emulates every program in numpy.
            if name == "triton" and device.type == "cpu":
                time_text += " (Triton interpreter: not a speed)"
            floor_text = _format_seconds(floor) if floor is not None else "-"
            fraction = f"{floor / seconds:.0%}" if floor is not None else "-"
            lines.append(
                f"| {name} | {kind} | {shape} | {time_text} | {kv_bytes / 2**20:.1f} MiB | {floor_text} | {fraction} |"
            )
    return "\n".join(lines)


def _time_per_call(call: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        call()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            call()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3 / iters
    began = time.perf_counter()
    for _ in range(iters):
        call()
    return (time.perf_counter() - began) / iters


def _device_bandwidth(device: torch.device) -> float:
    """Bytes per second a large device-to-device copy moves (each byte read once and written once)."""
    source = torch.empty(_BANDWIDTH_PROBE_BYTES, dtype=torch.uint8, device=device)
    destination = torch.empty_like(source)
    seconds = _time_per_call(lambda: destination.copy_(source), device, warmup=2, iters=10)
    return 2 * _BANDWIDTH_PROBE_BYTES / seconds


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _format_seconds(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"
