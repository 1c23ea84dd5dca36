"""CLI command groups; each module exposes COMMANDS, a list of click commands."""
