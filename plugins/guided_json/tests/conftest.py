"""Fixtures of the guided plugin's tests: a real tiny tokenizer and an outlines backend over it."""

from __future__ import annotations

import pytest

from pagedllm_core.testing import EOS_TOKEN_ID, build_tiny_tokenizer

pytest.importorskip("outlines_core", reason="outlines-core is not installed (pip install 'pagedllm[guided]')")

from guided_checks import VOCAB_SIZE
from pagedllm_guided_json.backend import OutlinesBackend


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer(VOCAB_SIZE)


@pytest.fixture(scope="session")
def backend(tiny_tokenizer):
    return OutlinesBackend(tiny_tokenizer, VOCAB_SIZE, frozenset({EOS_TOKEN_ID}))
