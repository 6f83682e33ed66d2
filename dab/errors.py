"""The one exception type for bad user input (configs, names, shapes)."""


class ConfigError(ValueError):
    """Raised for invalid configuration; the message names the valid choices."""
