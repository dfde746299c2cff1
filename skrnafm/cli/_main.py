"""Argument parsing and dispatch for the ``skrnafm`` command."""

import argparse
import logging
import sys
import traceback
import warnings

from .._version import __version__
from ._errors import CLIError

logger = logging.getLogger(__name__)

# Exit codes, also listed in the top-level help text.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

_EPILOG = """\
exit codes:
  0  success
  1  error (one line on stderr; add --debug for the traceback)
  2  invalid command line
  3  finished, but some slides failed (listed in the status table)

Run 'skrnafm COMMAND --help' for the options of one command.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the line breaks of descriptions and show meaningful defaults.

    Defaults that are None, False or empty are left out, because they mean
    "not set" and "(default: None)" adds no information.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or action.option_strings in (["-v", "--verbose"],)
        ):
            return text
        return f"{text} (default: %(default)s)"


def _add_common_options(parser):
    group = parser.add_argument_group("output and diagnostics")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=1,
        help="more log output: -v adds the library's messages, -vv debug messages",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars and no log messages; errors and warnings about the input still print",
    )
    group.add_argument(
        "--debug", action="store_true", help="show the full traceback when a command fails"
    )


def build_parser():
    """Build the ``skrnafm`` argument parser with one sub-parser per command.

    Returns
    -------
    parser : argparse.ArgumentParser
        The parser; each sub-command stores its handler in ``args.handler``.
    """
    from . import _demo, _evaluate, _featurize, _fit, _predict

    parser = argparse.ArgumentParser(
        prog="skrnafm",
        description=(
            "Predict bulk RNA-seq expression from H&E whole-slide images with "
            "conditional flow matching (RNA-FM)."
        ),
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"skrnafm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    for module in (_featurize, _fit, _predict, _evaluate, _demo):
        sub = module.add_parser(subparsers, _HelpFormatter)
        _add_common_options(sub)
        sub.set_defaults(handler=module.run)
    return parser


def _configure_logging(verbosity):
    """Send skrnafm's log records to stderr without touching the root logger.

    Verbosity 0 (``--quiet``) shows error records only; 1 (the default) shows
    the CLI's own messages and warnings from the library; 2 adds the
    library's information messages (one per slide and fold); 3 adds debug
    messages. Python warnings are not log records and print at every level.
    """
    package_logger = logging.getLogger("skrnafm")
    cli_logger = logging.getLogger("skrnafm.cli")
    if verbosity <= 0:
        package_level = cli_level = logging.ERROR
    elif verbosity == 1:
        package_level, cli_level = logging.WARNING, logging.INFO
    elif verbosity == 2:
        package_level = cli_level = logging.INFO
    else:
        package_level = cli_level = logging.DEBUG
    package_logger.setLevel(package_level)
    cli_logger.setLevel(cli_level)
    if not any(getattr(h, "_skrnafm_cli", False) for h in package_logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler._skrnafm_cli = True
        package_logger.addHandler(handler)


def _show_warning_one_line(message, category, filename, lineno, file=None, line=None):
    stream = sys.stderr if file is None else file
    stream.write(f"warning: {message} [{category.__name__}]\n")


def main(argv=None):
    """Run the ``skrnafm`` command line and return its exit code.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    code : int
        0 on success, 1 on an error, 2 on an invalid command line and 3 when
        a command finished but some slides failed.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    verbosity = 0 if args.quiet else args.verbose
    args.verbosity = verbosity
    _configure_logging(verbosity)

    with warnings.catch_warnings():
        if not args.debug:
            warnings.showwarning = _show_warning_one_line
        try:
            code = args.handler(args)
        except KeyboardInterrupt:
            print(f"skrnafm {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 - the CLI turns every failure into one line
            if args.debug:
                traceback.print_exc()
            print(f"skrnafm {args.command}: error: {_describe(exc)}", file=sys.stderr)
            if not isinstance(exc, _user_error_types()) and not args.debug:
                print("(unexpected error; rerun with --debug for the traceback)", file=sys.stderr)
            return EXIT_ERROR
    return EXIT_OK if code is None else int(code)


def _user_error_types():
    """Return the exceptions that report a bad input value rather than a bug.

    ValueError covers scikit-learn's InvalidParameterError and skrnafm's
    SlideError. The commands turn the ones they can attribute to an option
    into a CLIError naming it; these types catch the rest.
    """
    return (CLIError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError)


def _describe(exc):
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    if isinstance(exc, _user_error_types()):
        return message
    return f"{message} ({type(exc).__name__})"
