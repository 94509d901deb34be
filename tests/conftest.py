"""Fixtures every test directory can use."""

import pytest

from pagedllm_core.testing import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(architecture="LlamaForCausalLM", **config_overrides)`` -> a saved random tiny model.

    Each (architecture, overrides) pair is built once per test session.
    """
    built = {}

    def get(architecture: str = "LlamaForCausalLM", **config_overrides):
        key = (architecture, repr(sorted(config_overrides.items())))
        if key not in built:
            built[key] = build_tiny_model(tmp_path_factory.mktemp(architecture), architecture, **config_overrides)
        return built[key]

    return get
