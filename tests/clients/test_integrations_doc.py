"""Every Python example of docs/integrations.md runs as written against ``pagedllm serve``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "integrations.md"
DOC_BASE_URL = "http://127.0.0.1:8000/v1"
EXAMPLES = re.findall(r"^## (.+?)\n.*?^```python\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)
REQUIRED_MODULES = {
    "openai": "openai",
    "LangChain": "langchain_openai",
    "LlamaIndex": "llama_index.llms.openai_like",
    "litellm": "litellm",
    "instructor": "instructor",
}


def test_every_client_has_an_example():
    assert [title for title, _ in EXAMPLES] == list(REQUIRED_MODULES)


@pytest.mark.parametrize("title, code", EXAMPLES, ids=[title for title, _ in EXAMPLES])
def test_example_runs(served, title, code, monkeypatch):
    pytest.importorskip(REQUIRED_MODULES[title])
    monkeypatch.setitem(os.environ, "LITELLM_LOCAL_MODEL_COST_MAP", "True")
    assert DOC_BASE_URL in code
    exec(compile(code.replace(DOC_BASE_URL, served.base_url), f"{DOC.name}: {title}", "exec"), {})
