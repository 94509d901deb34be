"""The engine: requests, KV block management, scheduling and the model runner."""
