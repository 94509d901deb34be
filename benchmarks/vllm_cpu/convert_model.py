"""Convert pagedllm's default model (SmolLM2-135M-Instruct, Q4_1 GGUF) into a Hugging Face directory.

vLLM cannot reach the Hub here and its GGUF path wants a separate tokenizer directory, so both engines
load the same converted directory instead: config, tokenizer and float32 safetensors dequantized once
from the GGUF file by transformers. float32 keeps the dequantized values exactly; each engine is then
told the dtype to compute in. Runs in pagedllm's venv (which has the model package and ``gguf``).

    .venv/bin/python benchmarks/vllm_cpu/convert_model.py --out benchmarks/vllm_cpu/model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write (skipped if already complete)")
    args = parser.parse_args()
    if (args.out / "config.json").is_file() and list(args.out.glob("model*.safetensors")):
        print(f"{args.out} already holds a converted model")
        return

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pagedllm_core.model.source import default_model_source

    source = default_model_source()
    tokenizer = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(source.directory, gguf_file=source.gguf_file, dtype=torch.float32)
    # transformers marks a model read from GGUF as quantized and refuses to save it; the weights are
    # already dequantized, so copy them into a plain model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out} from {source.directory / source.gguf_file}")


if __name__ == "__main__":
    main()
