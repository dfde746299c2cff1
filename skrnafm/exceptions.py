"""Exceptions and warning categories raised by skrnafm.

Errors that concern one slide derive from :class:`SlideError`, so that the
``on_error`` policy of the featurizer can catch them per slide while any
other exception (a bug, an out-of-memory error) still stops the run.
"""

__all__ = [
    "SkrnafmWarning",
    "SlideReadWarning",
    "GeneSetWarning",
    "CalibrationWarning",
    "SlideError",
    "MissingResolutionError",
    "UnsupportedSlideError",
    "NoTissueError",
]


class SkrnafmWarning(UserWarning):
    """Base class of the warnings skrnafm emits for the user to act on."""


class SlideReadWarning(SkrnafmWarning):
    """A tile or a whole slide could not be read and was skipped."""


class GeneSetWarning(SkrnafmWarning):
    """Gene-set genes or target genes could not be matched."""


class CalibrationWarning(SkrnafmWarning):
    """The predictive spread is badly calibrated on the validation split."""


class SlideError(ValueError):
    """A slide cannot be used: unreadable, unsupported or without tissue."""


class MissingResolutionError(SlideError):
    """No micrometres-per-pixel value could be found for a slide."""


class UnsupportedSlideError(SlideError):
    """The file is not a slide or image format skrnafm can read."""


class NoTissueError(SlideError):
    """The tissue mask found no tile with enough tissue."""
