"""The exception the CLI turns into one line on stderr, and its helpers."""

import re


class CLIError(Exception):
    """A problem with the user's input that a message can explain fully.

    The command line prints the message alone, without a traceback, and
    exits with status 1.
    """


# The message of scikit-learn's InvalidParameterError (checked with 1.9.1).
# A message in another form is shown unchanged.
_INVALID_PARAMETER = re.compile(
    r"The '(?P<name>\w+)' parameter of (?P<owner>\w+) must be (?P<allowed>.+)\. "
    r"Got (?P<value>.+) instead\.",
    re.DOTALL,
)


def check_parameters(estimator, options):
    """Validate an estimator's parameters and name the CLI option on failure.

    Parameters
    ----------
    estimator : sklearn.base.BaseEstimator
        An estimator with ``_parameter_constraints``, validated as ``fit``
        would validate it.
    options : dict of str to str
        Parameter name -> the option that sets it, for example
        ``{"max_tiles": "--max-tiles"}``. A parameter not in it is reported
        as ``--param NAME=VALUE``.

    Raises
    ------
    CLIError
        With the option, the rejected value and the allowed values.
    """
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        estimator._validate_params()
    except InvalidParameterError as exc:
        raise CLIError(describe_invalid_parameter(exc, options)) from exc


def describe_invalid_parameter(exc, options):
    """Return an InvalidParameterError message reworded with the CLI option."""
    match = _INVALID_PARAMETER.search(str(exc))
    if match is None:
        return str(exc).splitlines()[0]

    name, value = match["name"], match["value"]
    if name in options:
        option_and_value = f"{options[name]} {value}"
    else:
        option_and_value = f"--param {name}={value}"
    return f"{option_and_value} is invalid: {match['owner']}'s {name} must be {match['allowed']}"
