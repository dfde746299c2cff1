"""Helpers shared across skrnafm: device selection and progress bars."""

from ._device import resolve_device
from ._progress import progress

__all__ = ["progress", "resolve_device"]
