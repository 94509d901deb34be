"""Writing AWQ checkpoints (AutoAWQ's GEMM layout), and their dense dequantized twin for comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from pagedllm_quant_awq.packing import dequantize, pack_int4
from pagedllm_quant_awq.scale_search import QuantizedWeight

WEIGHTS_FILE = "model.safetensors"
PACKED = ("qweight", "qzeros", "scales")


def awq_quantization_config(group_size: int, lm_head: bool) -> dict:
    """``quantization_config`` as AutoAWQ writes it (what vLLM and our ``awq`` method read), with ``lm_head``
    saying whether the output layer is quantized too (the key GPTQ checkpoints and vLLM's Marlin AWQ use)."""
    return {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm",
            "modules_to_not_convert": None, "lm_head": lm_head}


def packed_tensors(quantized: QuantizedWeight) -> dict[str, torch.Tensor]:
    """``qweight [in, out/8]``, ``qzeros [in/group, out/8]`` and ``scales [in/group, out]`` of one layer."""
    return {
        "qweight": pack_int4(quantized.quants.T),
        "qzeros": pack_int4(quantized.zeros.T),
        "scales": quantized.scales.T.contiguous(),
    }


def write_awq_checkpoint(
    model: nn.Module, tokenizer, quantized: dict[str, QuantizedWeight], group_size: int, out: Path
) -> None:
    """``model``'s float tensors in float16 with the ``quantized`` layers' weights replaced by their packed form.

    A quantized ``lm_head`` of a model with tied embeddings is written as its own tensors, and the config unties
    them: the embedding stays float16.
    """
    from safetensors.torch import save_file

    tensors = {}
    for name, tensor in model.state_dict().items():
        module = name.rpartition(".")[0]
        if module in quantized and name.endswith(".weight"):
            tensors.update({f"{module}.{key}": value for key, value in packed_tensors(quantized[module]).items()})
        elif not (name == "lm_head.weight" and model.config.tie_word_embeddings):
            tensors[name] = tensor.to(torch.float16).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    if "lm_head" in quantized:
        model.config.tie_word_embeddings = False
    model.config.quantization_config = awq_quantization_config(group_size, lm_head="lm_head" in quantized)
    model.config.dtype = torch.float16
    model.config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)


def write_dequantized_checkpoint(awq_directory: Path, out: Path) -> None:
    """The AWQ checkpoint in ``awq_directory`` as a dense float32 one: every packed layer's ``weight`` is
    :func:`pagedllm_quant_awq.packing.dequantize` of it, the other tensors are copied and the config loses its
    ``quantization_config``. Running both must give the same tokens: the test oracle for the kernels."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    group_size = json.loads((awq_directory / "config.json").read_text())["quantization_config"]["group_size"]
    tensors, packed = {}, {}
    for path in sorted(awq_directory.glob("*.safetensors")):
        with safe_open(path, framework="pt", device="cpu") as checkpoint:
            for name in checkpoint.keys():
                module, _, key = name.rpartition(".")
                if key in PACKED:
                    packed.setdefault(module, {})[key] = checkpoint.get_tensor(name)
                else:
                    tensors[name] = checkpoint.get_tensor(name).float()
    for module, parts in packed.items():
        tensors[f"{module}.weight"] = dequantize(parts["qweight"], parts["qzeros"], parts["scales"], group_size).T.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    config = json.loads((awq_directory / "config.json").read_text())
    del config["quantization_config"]
    config["torch_dtype"] = config["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for path in awq_directory.iterdir():
        if path.suffix != ".safetensors" and path.name != "config.json" and path.is_file():
            (out / path.name).write_bytes(path.read_bytes())
