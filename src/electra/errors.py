"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class UsageError(Exception):
    """Bad input from the user (a path, a value, a file). The message names the problem and the fix."""
