"""Writing a benchmark's table into its own marked section of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path


def machine_line() -> str:
    """Where and when a table was measured, for the record under it."""
    import torch

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"{cpu_name()} ({platform.machine()}, {torch.get_num_threads()} threads)"
    return f"Measured {datetime.date.today().isoformat()} on {device}, torch {torch.__version__}."


def cpu_name() -> str:
    """The CPU's model name as lscpu reports it (the platform's processor string where /proc has none)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(path: Path, name: str, markdown: str) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (appending it if absent)."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n\n{machine_line()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
