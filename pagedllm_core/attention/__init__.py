"""Paged attention: the backend contract, the per-step metadata and the torch reference op."""
