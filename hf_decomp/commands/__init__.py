"""CLI subcommands: one module each, exposing ``register(subparsers)``.

A module's ``register`` adds its parser and sets ``func`` (args -> exit code) as the default.
"""

# Order is the order of ``hf-decomp --help``.
COMMAND_MODULES = ("analyze", "export", "push", "report", "recover", "explore", "selectivity", "specialize")
