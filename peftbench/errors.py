"""Errors raised at the boundary (config, files, assets) with a message a user can act on."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key, the value and what is allowed."""


class AssetMissingError(FileNotFoundError):
    """An offline model or corpus is not on this machine; the message names the command that fetches it."""
