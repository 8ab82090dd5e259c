"""The phantom's painters, one module per part of the body (see ``render`` for the order)."""
