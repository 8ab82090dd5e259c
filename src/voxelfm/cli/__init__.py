"""Command-line interface (typer). Heavy imports live inside command functions."""
