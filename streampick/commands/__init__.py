"""Subcommands of the ``streampick`` CLI, one module each (``add_args`` + ``main``)."""
