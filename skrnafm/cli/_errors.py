"""The exception the CLI turns into one line on stderr."""


class CLIError(Exception):
    """A problem with the user's input that a message can explain fully.

    The command line prints the message alone, without a traceback, and
    exits with status 1.
    """
