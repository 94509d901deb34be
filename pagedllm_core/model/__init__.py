"""Model implementations, their building blocks and the weight loader."""
