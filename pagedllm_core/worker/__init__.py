"""Workers: each holds a model (or its shard), a KV pool and a runner, and runs step messages."""
