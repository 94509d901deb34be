"""Each tensor-parallel rank builds only its shard of the model and reads only that part of the checkpoint.

The ranks are built in this process with a group that has no process group behind it: building and
loading make no collective calls, so each rank's parameters can be checked against the full model's.
"""

import pytest
import torch
from safetensors import safe_open

from pagedllm_core.config import EngineConfig
from pagedllm_core.distributed.group import TensorParallelGroup
from pagedllm_core.distributed.partition import Shard
from pagedllm_core.model import loader
from pagedllm_core.model.checkpoint import SafetensorsTensor
from pagedllm_core.model.model_info import resolve_model_info
from pagedllm_core.registry import default_registry
from pagedllm_core.worker.model_setup import attention_spec, build_attention


def build_rank(directory, rank, world_size):
    config = EngineConfig(model=str(directory), dtype="float32", attention_backend="torch")
    info = resolve_model_info(config)
    tp = TensorParallelGroup(rank, world_size)
    attention = build_attention(config, default_registry(), attention_spec(config, info, tp))
    model = loader.build_model(info.hf_config, attention, torch.float32, "cpu", None, tp)
    loader.load_weights(model, info.source, info.hf_config)
    return model


def full_tensors(directory):
    with safe_open(str(directory / "model.safetensors"), framework="pt") as checkpoint:
        return {name: checkpoint.get_tensor(name) for name in checkpoint.keys()}  # noqa: SIM118 - safe_open is not iterable


@pytest.mark.parametrize("rank", [0, 1])
def test_a_llama_rank_holds_its_heads_its_mlp_columns_and_its_vocabulary_rows(tiny_model_dir, rank):
    # 4 query heads over 2 key/value heads of 16: each rank one KV head and its two query heads.
    directory = tiny_model_dir("LlamaForCausalLM")
    model = build_rank(directory, rank, 2)
    full = full_tensors(directory)
    heads = Shard(rank * 32, 32)
    kv = Shard(rank * 16, 16)
    intermediate = Shard(rank * 64, 64)
    vocab = Shard(rank * 256, 256)
    layer = "model.layers.1"
    parameters = dict(model.named_parameters())

    def rows(name, shard):
        return full[name][shard.start : shard.end]

    torch.testing.assert_close(
        parameters[f"{layer}.self_attn.qkv_proj.weight"],
        torch.cat([rows(f"{layer}.self_attn.{p}_proj.weight", s) for p, s in [("q", heads), ("k", kv), ("v", kv)]]),
    )
    torch.testing.assert_close(
        parameters[f"{layer}.self_attn.o_proj.weight"], full[f"{layer}.self_attn.o_proj.weight"][:, heads.start : heads.end]
    )
    torch.testing.assert_close(
        parameters[f"{layer}.mlp.gate_up_proj.weight"],
        torch.cat([rows(f"{layer}.mlp.gate_proj.weight", intermediate), rows(f"{layer}.mlp.up_proj.weight", intermediate)]),
    )
    torch.testing.assert_close(
        parameters[f"{layer}.mlp.down_proj.weight"],
        full[f"{layer}.mlp.down_proj.weight"][:, intermediate.start : intermediate.end],
    )
    torch.testing.assert_close(parameters["model.embed_tokens.weight"], rows("model.embed_tokens.weight", vocab))
    torch.testing.assert_close(parameters["lm_head.weight"], rows("lm_head.weight", vocab))
    torch.testing.assert_close(parameters[f"{layer}.input_layernorm.weight"], full[f"{layer}.input_layernorm.weight"])
    assert sum(p.numel() for p in parameters.values()) < 0.6 * sum(t.numel() for t in full.values())


def test_only_the_first_rank_adds_a_row_parallel_layers_bias(tiny_model_dir):
    directory = tiny_model_dir("OPTForCausalLM")
    full = full_tensors(directory)
    name = "model.decoder.layers.0.fc2.bias"
    first = build_rank(directory, 0, 2)
    second = build_rank(directory, 1, 2)
    torch.testing.assert_close(dict(first.named_parameters())[name], full[name])
    assert not dict(second.named_parameters())[name].any()
    # A column-parallel bias is split like its weight's rows.
    column = "model.decoder.layers.0.fc1.bias"
    torch.testing.assert_close(dict(second.named_parameters())[column], full[column][64:])


def test_a_safetensors_entry_reads_rows_or_columns_without_the_rest(tiny_model_dir):
    path = str(tiny_model_dir("LlamaForCausalLM") / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    with safe_open(path, framework="pt") as checkpoint:
        entry = SafetensorsTensor(checkpoint, name)
        whole = entry.read()
        torch.testing.assert_close(entry.read(0, Shard(8, 16)), whole[8:24])
        torch.testing.assert_close(entry.read(1, Shard(64, 64)), whole[:, 64:128])
