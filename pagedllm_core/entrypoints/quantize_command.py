"""``pagedllm quantize --method METHOD MODEL OUT``: write a quantized checkpoint of a float model.

Each method lives in the plugin that also runs its checkpoints; this command only finds it. A method's
entry point is ``function(model, out, args) -> Path`` and reads the options it owns from ``args``.
"""

from __future__ import annotations

import argparse
import importlib

from pagedllm_core.errors import ConfigError

# method -> ("module:function(model, out, args)", the pip extra that installs it)
QUANTIZE_METHODS = {
    "awq": ("pagedllm_quant_awq.quantize:quantize_from_args", "awq"),
    "w8a8": ("pagedllm_quant_int8.convert:quantize_from_args", "int8"),
}


def add_quantize_parser(commands) -> None:
    parser = commands.add_parser(
        "quantize", help="write a quantized checkpoint of a float model (AWQ int4, compressed-tensors W8A8)"
    )
    parser.add_argument("--method", required=True, choices=sorted(QUANTIZE_METHODS), help="quantization scheme")
    parser.add_argument("model", help="float model: local directory, .gguf file, Hub id, or 'default'")
    parser.add_argument("out", help="directory to write the quantized checkpoint to")
    awq = parser.add_argument_group("awq")
    awq.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="weights per quantization group (default: 128, or the largest of 64/32 dividing every layer's input size)",
    )
    awq.add_argument("--no-clip", dest="clip", action="store_false", help="skip the search for each group's clipping range")
    parser.add_argument(
        "--quantize-lm-head",
        action="store_true",
        help="quantize the output layer too (AutoAWQ and llm-compressor leave it out; a tied one becomes a quantized "
        "copy of the embedding): faster steps, logits rounded a little more",
    )
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
    print(f"wrote {getattr(module, function)(args.model, args.out, args)}")
