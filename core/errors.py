"""The error family every stage raises for problems a user can fix.

The CLI turns a ``KdserveError`` into one line on stderr and a non-zero exit; anything
else is a bug and keeps its traceback.
"""


class KdserveError(Exception):
    """A user-facing error: the message alone must say what is wrong and where."""

    exit_code: int = 1


class ConfigError(KdserveError, ValueError):
    """A configuration value is out of range or inconsistent."""

    exit_code = 2


class DataError(KdserveError):
    """A dataset cannot be read: missing file or column, bad bytes, empty or inconsistent."""


class NotImplementedYet(KdserveError):
    """A pipeline stage that a later release builds."""

    exit_code = 3
