"""Command-line interface ``skrnafm``: featurize, fit, predict, evaluate, demo.

Run ``skrnafm --help`` or ``python -m skrnafm --help`` for the commands.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
