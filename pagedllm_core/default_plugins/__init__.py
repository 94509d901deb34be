"""The core's own implementations, registered through the same hooks as any plugin."""
