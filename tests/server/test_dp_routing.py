"""The data-parallel routing policies: shared prefixes stick to one replica, short prompts balance,
dead replicas are skipped."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pagedllm_core.server.routing import PrefixAwareRouter, ReplicaLoad, RoundRobinRouter, build_router, least_loaded

BLOCK_SIZE = 16


def loads(num_replicas: int, dead: tuple[int, ...] = (), in_flight: dict[int, int] | None = None) -> list[ReplicaLoad]:
    in_flight = in_flight or {}
    return [ReplicaLoad(i, i not in dead, in_flight.get(i, 0), 0) for i in range(num_replicas)]


def random_prompt(rng: random.Random, length: int) -> list[int]:
    return [rng.randrange(32000) for _ in range(length)]


def test_prompts_sharing_their_first_block_go_to_one_replica():
    router = PrefixAwareRouter(BLOCK_SIZE)
    rng = random.Random(0)
    prefix = random_prompt(rng, 64)
    chosen = {router.choose(prefix + random_prompt(rng, rng.randrange(1, 40)), loads(4)) for _ in range(50)}
    assert len(chosen) == 1
    # Only the first block counts: a prompt of exactly one block agrees with the longer ones.
    assert router.choose(prefix[:BLOCK_SIZE], loads(4)) in chosen


def test_different_prefixes_spread_over_the_replicas():
    router = PrefixAwareRouter(BLOCK_SIZE)
    rng = random.Random(1)
    counts = Counter(router.choose(random_prompt(rng, 40), loads(4)) for _ in range(400))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 60  # 100 each on average


def test_the_adapter_is_part_of_the_key():
    router = PrefixAwareRouter(BLOCK_SIZE)
    prompt = list(range(BLOCK_SIZE))
    assert router.prefix_key(prompt, lora_int_id=0) != router.prefix_key(prompt, lora_int_id=1)
    assert router.prefix_key(prompt[:-1]) is None


def test_short_prompts_go_to_the_least_loaded_replica_and_balance():
    router = PrefixAwareRouter(BLOCK_SIZE)
    assert router.choose([1, 2, 3], loads(3, in_flight={0: 5, 1: 2, 2: 4})) == 1
    # Sequential requests (nothing in flight) alternate, through the number routed so far.
    replicas = loads(2)
    chosen = []
    for _ in range(6):
        index = router.choose([7, 8], replicas)
        chosen.append(index)
        replicas[index] = ReplicaLoad(index, True, 0, replicas[index].num_routed + 1)
    assert chosen == [0, 1, 0, 1, 0, 1]


def test_dead_replicas_are_skipped_and_only_their_prefixes_move():
    router = PrefixAwareRouter(BLOCK_SIZE)
    rng = random.Random(2)
    prompts = [random_prompt(rng, 32) for _ in range(200)]
    before = [router.choose(prompt, loads(3)) for prompt in prompts]
    after = [router.choose(prompt, loads(3, dead=(1,))) for prompt in prompts]
    assert 1 not in after
    # Rendezvous hashing: a prompt whose replica lives keeps it.
    assert all(a == b for a, b in zip(before, after) if a != 1)
    assert any(a == 1 for a in before)
    assert router.choose([1], loads(3, dead=(0,), in_flight={1: 3, 2: 9})) == 1
    with pytest.raises(ValueError, match="no live replica"):
        router.choose(prompts[0], loads(2, dead=(0, 1)))


def test_a_hot_prefix_overflows_to_the_least_loaded_replica():
    router = PrefixAwareRouter(BLOCK_SIZE, max_imbalance=4)
    prompt = list(range(BLOCK_SIZE * 2))
    owner = router.choose(prompt, loads(2))
    other = 1 - owner
    assert router.choose(prompt, loads(2, in_flight={owner: 3})) == owner
    assert router.choose(prompt, loads(2, in_flight={owner: 4})) == other


def test_round_robin_ignores_the_prompt_and_skips_the_dead():
    router = RoundRobinRouter()
    prompt = list(range(64))
    assert [router.choose(prompt, loads(3)) for _ in range(4)] == [0, 1, 2, 0]
    assert [router.choose(prompt, loads(3, dead=(1,))) for _ in range(3)] == [2, 0, 2]


def test_least_loaded_and_unknown_policies():
    assert least_loaded(loads(3, dead=(2,), in_flight={0: 1, 1: 1})) == 0
    assert isinstance(build_router("round_robin", BLOCK_SIZE), RoundRobinRouter)
    with pytest.raises(ValueError, match="prefix_aware, round_robin"):
        build_router("random", BLOCK_SIZE)
    with pytest.raises(ValueError, match="block_size"):
        PrefixAwareRouter(0)
