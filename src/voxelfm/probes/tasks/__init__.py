"""One module per task category; each exposes ``fit(data, targets, config) -> TaskOutput``."""
