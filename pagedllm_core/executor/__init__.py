"""Executors: how the engine's step messages reach its workers (in-process, or worker processes)."""
