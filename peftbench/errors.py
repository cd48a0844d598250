"""Errors raised at the boundary (config, files, assets) with a message a user can act on."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key, the value and what is allowed."""


class AssetMissingError(FileNotFoundError):
    """An offline model or corpus is not on this machine; the message names the command that fetches it."""


class Interrupted(SystemExit):
    """The process was asked to stop (SIGTERM, SIGINT): the run is recorded ``killed`` and the process exits
    128 + the signal, as a shell reports a process a signal ended. A SystemExit, so that Lightning and Hydra
    let it through instead of recording a failure or printing a traceback."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)

    def __str__(self) -> str:
        import signal

        return f"stopped by {signal.Signals(self.signum).name} before the run reached its test"
