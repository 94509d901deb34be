"""The tensor-parallel group: this rank's place in it and the collectives the model and the workers use."""

from __future__ import annotations

import datetime
import os
from urllib.parse import urlparse

import torch
import torch.distributed as dist

from pagedllm_core.distributed.network import interface_toward
from pagedllm_core.distributed.partition import HeadShards, Shard, attention_head_shards, balanced_shard

# A collective that waits longer than this fails; idle ranks are kept inside it by the driver's keep-alives.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


class TensorParallelGroup:
    """The ranks that together hold one model, split by :mod:`~pagedllm_core.distributed.partition`.

    With one rank (``TensorParallelGroup.single()``) every collective returns its input, so models
    call them unconditionally. With several, ``device_group`` runs the model's collectives (gloo on
    CPUs, NCCL on GPUs) and ``message_group`` (gloo) carries the step messages the driver rank
    broadcasts to the others.
    """

    def __init__(self, rank: int, world_size: int, device_group=None, message_group=None):
        self.rank = rank
        self.world_size = world_size
        self.device_group = device_group
        self.message_group = message_group

    @classmethod
    def single(cls) -> TensorParallelGroup:
        return cls(0, 1)

    @property
    def is_driver(self) -> bool:
        """Rank 0 receives the engine's messages, broadcasts them and replies with the step's outputs."""
        return self.rank == 0

    def shard(self, total: int) -> Shard:
        """This rank's share of ``total`` output features (column-parallel) or input features (row-parallel)."""
        return balanced_shard(total, self.rank, self.world_size)

    def attention_heads(self, num_heads: int, num_kv_heads: int) -> HeadShards:
        return attention_head_shards(num_heads, num_kv_heads, self.rank, self.world_size)

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks in place (the partial outputs of a row-parallel layer)."""
        if self.world_size > 1:
            dist.all_reduce(tensor, group=self.device_group)
        return tensor

    def all_gather(self, tensor: torch.Tensor, total: int) -> torch.Tensor:
        """Concatenate every rank's ``[..., shard]`` along the last dimension into ``[..., total]``.

        Shards may differ by one column; collectives need equal sizes, so each is padded to the largest first.
        """
        if self.world_size == 1:
            return tensor
        shards = [balanced_shard(total, rank, self.world_size) for rank in range(self.world_size)]
        width = shards[0].size
        padded = torch.nn.functional.pad(tensor, (0, width - tensor.shape[-1])).contiguous()
        gathered = [torch.empty_like(padded) for _ in shards]
        dist.all_gather(gathered, padded, group=self.device_group)
        return torch.cat([part[..., : shard.size] for part, shard in zip(gathered, shards)], dim=-1)

    def broadcast_bytes(self, payload: bytes | None) -> bytes:
        """The driver's ``payload`` on every rank (the others pass None and wait for it)."""
        length = torch.tensor([len(payload) if self.is_driver else 0], dtype=torch.int64)
        dist.broadcast(length, src=0, group=self.message_group)
        if self.is_driver:
            buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        else:
            buffer = torch.empty(int(length), dtype=torch.uint8)
        dist.broadcast(buffer, src=0, group=self.message_group)
        return payload if self.is_driver else buffer.numpy().tobytes()

    def destroy(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def init_tensor_parallel_group(rank: int, world_size: int, init_method: str, device: torch.device) -> TensorParallelGroup:
    """Join the group of ``world_size`` ranks that meet at ``init_method`` (``file://`` on one machine,
    ``tcp://host:port`` across machines); NCCL joins the model's collectives on CUDA, gloo elsewhere."""
    if world_size == 1:
        return TensorParallelGroup.single()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if init_method.startswith("file://"):
        # One machine: gloo's connections stay on loopback unless the user names an interface.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    elif "GLOO_SOCKET_IFNAME" not in os.environ:
        # gloo would bind to what the hostname resolves to (often loopback), which other nodes cannot reach.
        interface = interface_toward(urlparse(init_method).hostname)
        if interface is not None:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
    dist.init_process_group(backend, init_method=init_method, world_size=world_size, rank=rank, timeout=COLLECTIVE_TIMEOUT)
    device_group = dist.group.WORLD
    message_group = device_group if backend == "gloo" else dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
    return TensorParallelGroup(rank, world_size, device_group, message_group)
