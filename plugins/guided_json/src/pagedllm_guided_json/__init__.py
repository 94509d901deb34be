"""pagedllm plugin for JSON-schema guided decoding.

It will register an ``output_constraint`` named ``json_schema``: a per-request logits processor
that compiles the request's JSON schema with outlines-core into a token automaton and masks every
token that would leave it. Until that lands it registers nothing, so installing it changes no
behaviour.
"""
