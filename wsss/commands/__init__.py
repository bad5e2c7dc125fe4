"""Subcommands of ``wsss`` (see :mod:`wsss.cli`)."""
