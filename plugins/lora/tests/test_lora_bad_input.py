"""Unusable adapters and LoRA settings are ValueErrors (ConfigError) naming the problem; the engine runs on."""

import json
import shutil

import pytest

pytest.importorskip("peft")

from peft_adapters import make_peft_adapter  # noqa: E402

from pagedllm_core import LLM, ConfigError, LoRARequest, SamplingParams  # noqa: E402
from pagedllm_core.testing import build_tiny_model  # noqa: E402

PARAMS = SamplingParams(temperature=0.0, max_tokens=3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model"), "LlamaForCausalLM")


@pytest.fixture(scope="module")
def good_adapter(model_dir, tmp_path_factory):
    return make_peft_adapter(model_dir, tmp_path_factory.mktemp("good"), 8, 16, ["q_proj", "down_proj"])


@pytest.fixture(scope="module")
def llm(model_dir):
    return LLM(model=str(model_dir), dtype="float32", enable_lora=True, max_lora_rank=8, num_kv_blocks=32)


def adapter_copy(good_adapter, tmp_path, edit_config=None):
    directory = tmp_path / "adapter"
    shutil.copytree(good_adapter, directory)
    if edit_config is not None:
        config_path = directory / "adapter_config.json"
        config = json.loads(config_path.read_text())
        edit_config(config)
        config_path.write_text(json.dumps(config))
    return str(directory)


def check_rejected(llm, lora_request, match):
    with pytest.raises(ConfigError, match=match):
        llm.generate(["Hello"], PARAMS, use_tqdm=False, lora_request=lora_request)
    assert llm.llm_engine.kv_cache_stats().num_used_blocks == 0
    assert not llm.llm_engine.has_unfinished_requests()
    assert lora_request.lora_int_id not in llm.llm_engine.list_loras()


def test_missing_path(llm):
    check_rejected(llm, LoRARequest("gone", 11, "/no/such/adapter"), "is not a directory")


def test_bad_adapter_config(llm, good_adapter, tmp_path):
    broken = adapter_copy(good_adapter, tmp_path)
    (tmp_path / "adapter" / "adapter_config.json").write_text("{not json")
    check_rejected(llm, LoRARequest("broken", 12, broken), "not valid JSON")


def test_invalid_field_is_named_by_peft(llm, good_adapter, tmp_path):
    bad = adapter_copy(good_adapter, tmp_path, lambda config: config.update(use_dora=True))
    check_rejected(llm, LoRARequest("dora", 13, bad), "DoRA")


def test_rank_above_max_lora_rank(llm, model_dir, tmp_path):
    big = make_peft_adapter(model_dir, tmp_path / "big", 16, 16, ["q_proj"])
    check_rejected(llm, LoRARequest("big", 14, big), r"rank r=16 is above max_lora_rank=8")


def test_target_modules_the_model_lacks(llm, model_dir, tmp_path):
    head = make_peft_adapter(model_dir, tmp_path / "head", 4, 8, ["lm_head"])
    check_rejected(llm, LoRARequest("head", 15, head), "targets modules this model lacks.*lm_head")


def test_adapter_for_another_model(llm, tmp_path):
    other_dir = build_tiny_model(tmp_path / "other", "LlamaForCausalLM", hidden_size=32, head_dim=8)
    other = make_peft_adapter(other_dir, tmp_path / "other-adapter", 4, 8, ["q_proj"])
    check_rejected(llm, LoRARequest("other", 16, other), "the adapter is for another model")


def test_pickle_weights_are_never_loaded(llm, good_adapter, tmp_path):
    pickled = adapter_copy(good_adapter, tmp_path)
    (tmp_path / "adapter" / "adapter_model.safetensors").rename(tmp_path / "adapter" / "adapter_model.bin")
    check_rejected(llm, LoRARequest("pickled", 17, pickled), "pickle, which is never loaded")


def test_one_id_means_one_adapter(llm, good_adapter):
    llm.generate(["Hello"], PARAMS, use_tqdm=False, lora_request=LoRARequest("good", 18, good_adapter))
    check_rejected_same_id = LoRARequest("renamed", 18, good_adapter)
    with pytest.raises(ConfigError, match="lora_int_id 18 is already adapter 'good'"):
        llm.generate(["Hello"], PARAMS, use_tqdm=False, lora_request=check_rejected_same_id)


def test_lora_request_fields_and_settings():
    with pytest.raises(ConfigError, match="lora_int_id must be an integer of at least 1"):
        LoRARequest("x", 0, "/tmp")
    with pytest.raises(ConfigError, match="max_cpu_loras"):
        LLM(enable_lora=True, max_loras=4, max_cpu_loras=2)


def test_lora_request_without_enable_lora(model_dir, good_adapter):
    plain = LLM(model=str(model_dir), dtype="float32", num_kv_blocks=32)
    with pytest.raises(ConfigError, match="enable_lora=True"):
        plain.generate(["Hello"], PARAMS, use_tqdm=False, lora_request=LoRARequest("good", 1, good_adapter))
