"""Prometheus metrics per data-parallel replica, labelled ``engine`` with the replica's index (vLLM's label).

The server's other metrics (``pagedllm:num_requests_running``, ``pagedllm:prefix_cache_hits``, ...)
stay totals over the replicas; these say how the load and the cache hits are spread.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pagedllm_core.server.data_parallel import DataParallelEngine, prefix_cache_hit_rate
from pagedllm_core.server.metrics import PREFIX


# (name, kind, help) of every per-replica series.
FAMILIES = [
    ("dp_replica_healthy", GaugeMetricFamily, "1 while the replica serves, 0 once it has died."),
    ("dp_requests_routed", CounterMetricFamily, "Requests the router sent to the replica."),
    ("dp_num_requests_in_flight", GaugeMetricFamily, "Requests routed to the replica and not finished."),
    ("dp_prefix_cache_queries", CounterMetricFamily, "Prompt tokens the replica looked up in its prefix cache."),
    ("dp_prefix_cache_hits", CounterMetricFamily, "Looked-up tokens the replica found in its prefix cache."),
    ("dp_prefix_cache_hit_rate", GaugeMetricFamily, "The replica's prefix cache hits / queries since start."),
]


class ReplicaCollector:
    """Read at scrape time from each replica's bookkeeping and its engine's own stats snapshot."""

    def __init__(self, engine: DataParallelEngine):
        self.engine = engine

    def collect(self):
        families = {
            name: kind(PREFIX + name, documentation, labels=["engine"]) for name, kind, documentation in FAMILIES
        }
        for replica in self.engine.replicas:
            stats = replica.engine.stats()
            label = [str(replica.index)]
            values = {
                "dp_replica_healthy": int(replica.alive),
                "dp_requests_routed": replica.num_routed,
                "dp_num_requests_in_flight": replica.num_in_flight,
                "dp_prefix_cache_queries": stats.num_prefix_cache_queries,
                "dp_prefix_cache_hits": stats.num_prefix_cache_hits,
                "dp_prefix_cache_hit_rate": prefix_cache_hit_rate(stats),
            }
            for name, value in values.items():
                families[name].add_metric(label, value)
        yield from families.values()
