"""Two "machines" on this one for multi-node tests: network namespaces joined by a veth pair, and
processes started in them that end, with everything they started, by their session id."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ADDRESSES = ("10.77.0.1", "10.77.0.2")


@dataclass(frozen=True)
class Namespaces:
    """Namespace ``names[i]`` holds ``ADDRESSES[i]`` on its end of the veth pair; nothing else reaches them."""

    names: tuple[str, str]

    def run_in(self, index: int) -> list[str]:
        """The command prefix that runs a program inside namespace ``index``."""
        return ["ip", "netns", "exec", self.names[index]]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def two_namespaces():
    """Create the namespaces and their link; skip the test where this machine does not allow it."""
    tag = f"pgl{os.getpid() % 100000}"
    names, veths = (f"{tag}n0", f"{tag}n1"), (f"{tag}v0", f"{tag}v1")
    created = []
    try:
        for name in names:
            try:
                _ip("netns", "add", name)
            except (OSError, subprocess.CalledProcessError) as error:
                reason = getattr(error, "stderr", None) or error
                pytest.skip(f"network namespaces are not allowed here (`ip netns add` failed: {reason})")
            created.append(name)
        _ip("link", "add", veths[0], "type", "veth", "peer", "name", veths[1])
        for name, veth, address in zip(names, veths, ADDRESSES):
            _ip("link", "set", veth, "netns", name)
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", veth)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", veth, "up")
        yield Namespaces(names)
    finally:
        for name in created:  # deleting a namespace deletes the veth end inside it, and so the pair
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        subprocess.run(["ip", "link", "delete", veths[0]], capture_output=True)  # if it never moved


def processes() -> list[tuple[int, int, int]]:
    """``(pid, parent pid, session id)`` of every process, from /proc/PID/stat."""
    table = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        table.append((int(entry.name), int(fields[1]), int(fields[3])))
    return table


def session_members(session_id: int) -> list[int]:
    return [pid for pid, _, session in processes() if session == session_id]


def descendants(ancestor: int) -> list[int]:
    """Every process below ``ancestor``."""
    children = {}
    for pid, parent, _ in processes():
        children.setdefault(parent, []).append(pid)
    found, queue = [], [ancestor]
    while queue:
        below = children.get(queue.pop(), [])
        found += below
        queue += below
    return found


class SessionProcess:
    """A process started in a session of its own, with its output in ``log``; :meth:`stop` ends it and
    then whatever it started that is still in its session."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{' '.join(self.process.args)} did not print {text!r}:\n{self.output()}")
            time.sleep(0.5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 30.0) -> list[int]:
        """End it (SIGTERM, then SIGKILL for what is left of its session); the pids that would not end."""
        session = self.process.pid
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + timeout
        while session_members(session) and time.monotonic() < deadline:
            for pid in session_members(session):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        self.process.wait()
        return session_members(session)
