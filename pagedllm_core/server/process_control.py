"""Waiting for a ``pagedllm serve`` process to become healthy, and stopping it: what benchmarks and
tests that start a real server share."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx


def wait_until_healthy(process: subprocess.Popen, url: str, timeout: float, log: Path | None = None) -> None:
    """Poll ``url/health`` until it answers 200. Raises ``RuntimeError`` (with the end of ``log``, if
    given) when the process exits first or ``timeout`` seconds pass; the process is killed then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pagedllm serve exited with status {process.returncode}{_tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop_process(process, signal.SIGKILL)
    raise RuntimeError(f"pagedllm serve did not become healthy within {timeout:g} s{_tail(log)}")


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send ``sig``, wait up to ``timeout`` seconds for the process to exit, else kill it; returns its status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text()[-3000:]}" if log is not None and log.exists() else ""
