"""Subcommands of ``voipflow``; see ``voipflow.cli``."""
