"""Making transformers' GGUF loading parse each file once instead of once per step.

transformers reads a llama-family GGUF file's metadata from scratch for the config, again for the
tokenizer and again for the weights (seconds each for a 49k-token vocabulary), and rebuilds gguf's
tensor-name map once per submodule (hundreds of times, seconds in all). Inside
:func:`reuse_gguf_parses` file parses come from a cache the caller keeps (a :class:`ModelSource`
keeps one, so its config, tokenizer and weights share a parse) and each name map is built once.
Only speed depends on this: if transformers stops looking these up on the ``gguf`` module,
everything still loads, just slower.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

# The patch is process-wide: one thread at a time holds it, and nested uses share the outer one.
_lock = threading.RLock()
_nesting = 0


@contextlib.contextmanager
def reuse_gguf_parses(parses: dict):
    """Within the block, GGUF files are parsed into (and reused from) ``parses``; re-entrant."""
    global _nesting
    import gguf

    with _lock:
        if _nesting == 0:
            originals = gguf.GGUFReader, gguf.get_tensor_name_map
            gguf.GGUFReader = _shared_readers(gguf.GGUFReader, parses)
            gguf.get_tensor_name_map = functools.lru_cache(gguf.get_tensor_name_map)
        _nesting += 1
        try:
            yield
        finally:
            _nesting -= 1
            if _nesting == 0:
                gguf.GGUFReader, gguf.get_tensor_name_map = originals


def _shared_readers(reader_class, parses: dict):
    def shared_reader(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in parses:
            parses[key] = reader_class(path, *args, **kwargs)
        return parses[key]

    return shared_reader
