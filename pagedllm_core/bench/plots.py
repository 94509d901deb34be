"""PNG charts of benchmark results, and the markdown that shows them (matplotlib: ``pagedllm[bench]``)."""

from __future__ import annotations

import os
from pathlib import Path

from pagedllm_core.errors import ConfigError


def bar_chart(path: str | Path, title: str, panels: dict[str, dict[str, float]]) -> None:
    """One panel of bars per metric: ``{metric: {system: value}}``, side by side."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (metric, values) in zip(axes[0], panels.items()):
        bars = axis.bar(range(len(values)), list(values.values()), color=[f"C{i}" for i in range(len(values))])
        axis.bar_label(bars, fmt="%.3g")
        axis.set_xticks(range(len(values)), [_wrap(label) for label in values], fontsize=8)
        axis.set_title(metric)
        axis.margins(y=0.15)
    _save(figure, path, title)


def line_chart(
    path: str | Path, title: str, x_title: str, x_labels: list[str], panels: dict[str, dict[str, list[float]]]
) -> None:
    """One panel per quantity, each with a line per series over the same x positions:
    ``{quantity: {series: [value at each x]}}``."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, (quantity, series) in zip(axes[0], panels.items()):
        for name, values in series.items():
            axis.plot(range(len(x_labels)), values, marker="o", label=name)
        axis.set_xticks(range(len(x_labels)), x_labels)
        axis.set_xlabel(x_title)
        axis.set_title(quantity)
        axis.set_ylim(bottom=0)
        if len(series) > 1:
            axis.legend(fontsize=8)
    _save(figure, path, title)


def markdown_image(path: str | Path, docs_path: str | Path | None, alt_text: str) -> str:
    """``![alt](path)``, the path relative to the markdown file the report is written into, if any."""
    target = os.path.relpath(path, Path(docs_path).parent) if docs_path else str(path)
    return f"![{alt_text}]({Path(target).as_posix()})"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'pagedllm[bench]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: str | Path, title: str) -> None:
    figure.suptitle(title)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)


def _wrap(label: str) -> str:
    return label.replace(", ", ",\n")
