"""Command-line interface ``skrnafm`` (placeholder until the CLI lands)."""

import sys

__all__ = ["main"]


def main(argv=None):
    from .._version import __version__

    print(f"skrnafm {__version__}")
    return 0
