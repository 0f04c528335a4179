"""Errors users see."""


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key and what is allowed."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
