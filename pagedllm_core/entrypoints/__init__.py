"""Command-line entry points: the ``pagedllm`` command and its subcommands."""
