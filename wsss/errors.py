"""User-facing errors: the command line prints them as one line, without a traceback."""


class WsssError(Exception):
    """An error caused by the user's input or configuration; its message says what to fix."""


class ConfigError(WsssError):
    """A configuration key is unknown, missing, or has the wrong type."""


class DataError(WsssError):
    """A dataset file is missing, unreadable, or inconsistent with the dataset description."""
