"""Tensor parallelism: how a model's weights and heads are split over ranks, and the group that joins them."""
