"""Speculative decoding: draft several tokens per sequence cheaply, verify them in one target pass."""
