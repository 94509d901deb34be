"""Fixtures shared by the plugin tests."""

from __future__ import annotations

import sys

import pytest

from pagedllm_core.plugins import new_plugin_manager


@pytest.fixture
def plugin_manager():
    """An empty plugin manager with pagedllm's hook specs; tests register plugin objects on it."""
    return new_plugin_manager()


@pytest.fixture
def install_fake_distribution(tmp_path, monkeypatch):
    """Make a throwaway distribution with a ``pagedllm`` entry point visible to ``importlib.metadata``.

    Returns ``install(distribution, entry_point, module_source)``: the module is written next to a
    ``.dist-info`` folder on a temporary ``sys.path`` entry, so entry-point discovery, the
    distribution name and the import all take the real path.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    module_names = []

    def install(distribution: str, entry_point: str, module_source: str) -> None:
        module_name = f"pagedllm_test_{entry_point}"
        (tmp_path / f"{module_name}.py").write_text(module_source)
        dist_info = tmp_path / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
        (dist_info / "entry_points.txt").write_text(f"[pagedllm]\n{entry_point} = {module_name}\n")
        module_names.append(module_name)

    yield install
    for module_name in module_names:
        sys.modules.pop(module_name, None)
