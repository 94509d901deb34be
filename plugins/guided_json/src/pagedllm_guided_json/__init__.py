"""pagedllm plugin: structured outputs (JSON schema, JSON object, regex, choice) with outlines-core.

It registers the output-constraint backend ``outlines`` by its ``"module:Class"`` path, so loading
the plugin imports nothing heavy; outlines-core is imported when a request first asks for
structured output.
"""

from pagedllm_core.hookspecs import hookimpl


@hookimpl
def register_output_constraints(register):
    register(
        "outlines",
        "pagedllm_guided_json.backend:OutlinesBackend",
        "JSON schema / JSON object / regex / choice guidance, compiled to token automata by outlines-core",
    )
