"""``pagedllm quantize --method METHOD MODEL OUT``: write a quantized checkpoint of a float model.

Each method lives in the plugin that also runs its checkpoints; this command only finds it.
"""

from __future__ import annotations

import argparse
import importlib

from pagedllm_core.errors import ConfigError

# method -> ("module:function(model, output)", the pip extra that installs it)
QUANTIZE_METHODS = {
    "w8a8": ("pagedllm_quant_int8.convert:quantize_w8a8", "int8"),
}


def add_quantize_parser(commands) -> None:
    parser = commands.add_parser("quantize", help="write a quantized checkpoint (compressed-tensors W8A8, ...)")
    parser.add_argument("--method", required=True, choices=sorted(QUANTIZE_METHODS), help="quantization scheme")
    parser.add_argument("model", help="float model: local directory, .gguf file, Hub id, or 'default'")
    parser.add_argument("output", help="directory to write the quantized checkpoint to")
    parser.set_defaults(handler=run_quantize)


def run_quantize(args: argparse.Namespace) -> None:
    target, extra = QUANTIZE_METHODS[args.method]
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"quantize --method {args.method} needs its plugin: pip install 'pagedllm[{extra}]' ({error})"
        ) from None
    print(f"wrote {getattr(module, function)(args.model, args.output)}")
