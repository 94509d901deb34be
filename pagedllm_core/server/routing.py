"""Which data-parallel replica serves a request: prefix-cache-aware, or round robin.

Each replica has its own prefix cache, so a prompt is cheapest where its prefix was computed
before. :class:`PrefixAwareRouter` keys a prompt on its first full KV block of token ids (and its
LoRA adapter) and maps the key onto the live replicas by rendezvous hashing: every live replica
gets a score from the key and its index, the highest wins. Prompts sharing that block land on one
replica, and when a replica dies only the keys it owned move (the others keep their replica and
their cache). Prompts shorter than a block have nothing to share and go to the least loaded
replica; so does a prompt whose replica has ``max_imbalance`` more requests in flight than the
least loaded one, so that one hot prefix cannot pile every request onto a single replica.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol

RoutingPolicyName = Literal["prefix_aware", "round_robin"]
ROUTING_POLICIES: tuple[RoutingPolicyName, ...] = ("prefix_aware", "round_robin")


@dataclass(frozen=True)
class ReplicaLoad:
    """What a router knows of one replica when it places a request."""

    index: int
    alive: bool
    num_in_flight: int  # requests routed to it that have not finished
    num_routed: int  # requests routed to it since start


class Router(Protocol):
    """Picks the replica for one request."""

    def choose(self, prompt_token_ids: list[int], replicas: list[ReplicaLoad], lora_int_id: int = 0) -> int:
        """The index of a live replica in ``replicas``; raises ``ValueError`` when none is alive."""


def _live(replicas: list[ReplicaLoad]) -> list[ReplicaLoad]:
    live = [replica for replica in replicas if replica.alive]
    if not live:
        raise ValueError("no live replica to route to")
    return live


def least_loaded(replicas: list[ReplicaLoad]) -> int:
    """The live replica with the fewest requests in flight; ties go to the one routed fewest so far."""
    return min(_live(replicas), key=lambda r: (r.num_in_flight, r.num_routed, r.index)).index


class PrefixAwareRouter:
    """Requests sharing their first ``block_size`` prompt tokens go to the same replica (see module doc)."""

    def __init__(self, block_size: int, max_imbalance: int = 32):
        if block_size < 1 or max_imbalance < 1:
            raise ValueError(f"block_size and max_imbalance must be >= 1, got {block_size} and {max_imbalance}")
        self.block_size = block_size
        self.max_imbalance = max_imbalance

    def prefix_key(self, prompt_token_ids: list[int], lora_int_id: int = 0) -> bytes | None:
        """The routing key: a digest of the adapter and the first full block; None for a shorter prompt."""
        if len(prompt_token_ids) < self.block_size:
            return None
        block = prompt_token_ids[: self.block_size]
        data = b"".join(token.to_bytes(8, "little", signed=True) for token in [lora_int_id, *block])
        return hashlib.blake2b(data, digest_size=16).digest()

    def choose(self, prompt_token_ids: list[int], replicas: list[ReplicaLoad], lora_int_id: int = 0) -> int:
        live = _live(replicas)
        key = self.prefix_key(prompt_token_ids, lora_int_id)
        if key is None:
            return least_loaded(live)
        owner = max(live, key=lambda replica: _rendezvous_score(key, replica.index))
        lightest = min(replica.num_in_flight for replica in live)
        if owner.num_in_flight - lightest >= self.max_imbalance:
            return least_loaded(live)
        return owner.index


class RoundRobinRouter:
    """Each request to the next live replica in turn, whatever its prompt (the baseline)."""

    def __init__(self):
        self._next = 0

    def choose(self, prompt_token_ids: list[int], replicas: list[ReplicaLoad], lora_int_id: int = 0) -> int:
        live = _live(replicas)
        chosen = next((r for r in live if r.index >= self._next), live[0])
        self._next = chosen.index + 1
        return chosen.index


def build_router(policy: RoutingPolicyName, block_size: int) -> Router:
    """The router named ``policy`` for engines with ``block_size``-token KV blocks."""
    if policy == "prefix_aware":
        return PrefixAwareRouter(block_size)
    if policy == "round_robin":
        return RoundRobinRouter()
    raise ValueError(f"unknown data-parallel routing policy {policy!r}; choose one of {', '.join(ROUTING_POLICIES)}")


def _rendezvous_score(key: bytes, replica_index: int) -> bytes:
    return hashlib.blake2b(key + replica_index.to_bytes(4, "little"), digest_size=8).digest()
