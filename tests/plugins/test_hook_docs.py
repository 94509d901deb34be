"""Every hook is documented in its docstring and in docs/plugins.md, and exercised by some plugin."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from pagedllm_core import hookspecs
from pagedllm_core.registry import PluginKind

REPO_ROOT = Path(__file__).resolve().parents[2]

HOOKS = sorted(
    name
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(function, f"{hookspecs.PROJECT_NAME}_spec")
)

# Where hook implementations live: the tests, the built-in plugins and the plugin distributions.
IMPLEMENTATION_SOURCES = [
    *(REPO_ROOT / "tests").rglob("*.py"),
    *(REPO_ROOT / "pagedllm_core" / "default_plugins").glob("*.py"),
    *(REPO_ROOT / "plugins").glob("*/src/**/*.py"),
]


def test_every_hook_is_a_plugin_kind():
    assert HOOKS, "no hook specs found"
    assert sorted(kind.value for kind in PluginKind) == HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_docstring_has_params_and_returns(hook):
    function = getattr(hookspecs, hook)
    docstring = inspect.getdoc(function) or ""
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in docstring, f"{hook} does not document parameter {parameter!r}"
    assert ":returns:" in docstring, f"{hook} does not document what it returns"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_section_in_the_plugin_docs(hook):
    docs = (REPO_ROOT / "docs" / "plugins.md").read_text()
    assert re.search(rf"^#+ .*\b{hook}\b", docs, re.MULTILINE), f"docs/plugins.md has no heading for {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_by_a_test_or_built_in_plugin(hook):
    implementation = re.compile(rf"^\s*def {hook}\(", re.MULTILINE)
    assert any(implementation.search(path.read_text()) for path in IMPLEMENTATION_SOURCES), (
        f"no test or built-in plugin implements {hook}"
    )
