"""Helpers shared by the example scripts: quick mode, data and output folders."""

import argparse
import os
import sys
from pathlib import Path


def parse_args(description, *, default_out, add_arguments=None):
    """Parse ``--quick``, ``--data-home`` and ``--out``; ``SKRNAFM_QUICK=1`` also sets quick.

    ``add_arguments(parser)`` may add the options of one example.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small settings that finish in seconds (also SKRNAFM_QUICK=1)")
    parser.add_argument("--data-home", default=None,
                        help="data folder (default: $SKRNAFM_DATA, then ~/skrnafm_data)")
    parser.add_argument("--out", default=default_out, help="folder for figures and tables")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    args.quick = args.quick or os.environ.get("SKRNAFM_QUICK") == "1"
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def require(path, what):
    """Exit with a message when a data file is missing."""
    if not Path(path).exists():
        sys.exit(f"{what} not found at {path}; pass --data-home DIR or set SKRNAFM_DATA=DIR")
    return Path(path)
