"""Helpers shared across skrnafm: devices, progress bars, logging."""

from ._device import resolve_device
from ._progress import progress

__all__ = ["progress", "resolve_device"]
