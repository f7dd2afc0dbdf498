"""Subcommands of the `lipnet` CLI, one module each (`add_arguments`, `run`)."""
