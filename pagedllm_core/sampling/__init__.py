"""Turning logits into tokens: the sampler contract and the per-step sampling metadata."""
