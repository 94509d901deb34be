"""Peak and current RSS of a `pagedllm serve` process: after start-up, and after 32 concurrent
completions then one alone. Server flags after `--` go to `pagedllm serve`, e.g.

    .venv/bin/python benchmarks/serve_rss.py -- --dtype float32

Run it from a checkout (PYTHONPATH pointing at another one measures that one's server)."""

from __future__ import annotations

import argparse
import concurrent.futures
import subprocess
import sys
import time

import httpx

from pagedllm_core.bench.soak import free_port
from pagedllm_core.server.process_control import stop_process, wait_until_healthy


def rss_mib(pid: int) -> tuple[int, int]:
    """(peak, current) resident set size of ``pid`` in MiB, from ``/proc/PID/status``."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    return int(fields["VmHWM"].split()[0]) // 1024, int(fields["VmRSS"].split()[0]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("serve_args", nargs="*", help="flags for pagedllm serve (after --)")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "pagedllm_core.entrypoints.cli", "serve", "--port", url.rsplit(":", 1)[1]]
    process = subprocess.Popen([*command, *args.serve_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        wait_until_healthy(process, url, 600)
        print(f"healthy after {time.monotonic() - started:.1f} s; peak/current RSS: {rss_mib(process.pid)} MiB")
        body = {"prompt": "Once upon a time", "max_tokens": 16}
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda _: httpx.post(f"{url}/v1/completions", json=body, timeout=300), range(32)))
        httpx.post(f"{url}/v1/completions", json=body, timeout=300)
        print(f"after 32 concurrent completions and one alone: peak/current RSS {rss_mib(process.pid)} MiB")
    finally:
        stop_process(process)


if __name__ == "__main__":
    main()
