#!/usr/bin/env bash
# W8A8 int8 and the FP8 KV cache against float32, side by side in one run (docs/benchmarks.md).
# Usage: bash benchmarks/quantization.sh [W8A8_DIR]   (makes W8A8_DIR and W8A8_DIR-lm-head from the default model when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
W8A8=${1:-benchmarks/smollm2-w8a8}
BIN=.venv/bin
lscpu | grep "Model name"
[ -d "$W8A8" ] || $BIN/pagedllm quantize --method w8a8 default "$W8A8"
# The same with an int8 lm_head.
[ -d "$W8A8-lm-head" ] || $BIN/pagedllm quantize --method w8a8 --quantize-lm-head default "$W8A8-lm-head"
W1="--num-prompts ${NUM_PROMPTS:-16} --no-baseline --matmul-size 1024"
W4="--num-iters 3 --num-warmup 1 --no-baseline"
echo "## W1 float32"; $BIN/pagedllm bench throughput $W1 --dtype float32 --quantization none
echo "## W1 W8A8"; $BIN/pagedllm bench throughput $W1 --model "$W8A8"
echo "## W1 W8A8, int8 lm_head"; $BIN/pagedllm bench throughput $W1 --model "$W8A8-lm-head"
echo "## W1 float32, fp8 KV cache"; $BIN/pagedllm bench throughput $W1 --dtype float32 --quantization none --kv-cache-dtype fp8 --calculate-kv-scales
echo "## W4 float32"; $BIN/pagedllm bench latency $W4 --dtype float32 --quantization none
echo "## W4 W8A8"; $BIN/pagedllm bench latency $W4 --model "$W8A8"
echo "## W4 W8A8, int8 lm_head"; $BIN/pagedllm bench latency $W4 --model "$W8A8-lm-head"
echo "## FP8 KV agreement"; $BIN/python benchmarks/fp8_kv_agreement.py
