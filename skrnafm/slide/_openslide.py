"""Pyramidal slides read through OpenSlide (SVS, NDPI, MRXS, SCN, tiled TIFF, ...)."""

import logging
import threading

import numpy as np
import openslide
from PIL import Image

from ..exceptions import SlideError, UnsupportedSlideError
from ._base import WHITE, BaseSlide, _as_size_pair, _validate_location, flatten_rgba

logger = logging.getLogger(__name__)


def _parse_background(value):
    try:
        number = int(str(value), 16)
    except (TypeError, ValueError):
        return WHITE
    return ((number >> 16) & 0xFF, (number >> 8) & 0xFF, number & 0xFF)


class OpenSlideSlide(BaseSlide):
    """A pyramidal whole-slide image read through OpenSlide.

    Use :func:`open_slide` rather than this class directly: it picks the
    reader for the file.

    Parameters
    ----------
    path : str or os.PathLike
        Slide file in a format OpenSlide reads.
    mpp : float, default=None
        Micrometres per level-0 pixel, overriding the slide's metadata.

    Notes
    -----
    When OpenSlide fails on one region (a corrupt JPEG block, for example),
    its handle stays in an error state for every later read. The slide then
    reopens the file before raising, so that the next tile can still be read.
    """

    _backend_name = "openslide"

    def __init__(self, path, *, mpp=None):
        super().__init__(path, mpp=mpp)
        self._lock = threading.Lock()
        try:
            self._osr = openslide.OpenSlide(self.path)
        except openslide.OpenSlideError as exc:
            raise UnsupportedSlideError(
                f"OpenSlide {openslide.__library_version__} could not open {self.path!r}: "
                f"{exc}. The file may be truncated or corrupt; copy it again from its "
                "source, or check that the vendor's companion files sit beside it."
            ) from exc
        self._properties = dict(self._osr.properties)
        self._level_dimensions = tuple(
            (int(width), int(height)) for width, height in self._osr.level_dimensions
        )
        self._level_downsamples = tuple(float(v) for v in self._osr.level_downsamples)
        self._background = _parse_background(
            self._properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR)
        )

    @property
    def level_dimensions(self):
        return self._level_dimensions

    @property
    def level_downsamples(self):
        return self._level_downsamples

    @property
    def properties(self):
        return self._properties

    @property
    def background_color(self):
        return self._background

    @property
    def vendor(self):
        """Format name OpenSlide detected, for example ``"aperio"``."""
        return self._properties.get(openslide.PROPERTY_NAME_VENDOR)

    @property
    def bounds(self):
        # MIRAX and some other formats record the non-empty area of the scan.
        keys = (
            openslide.PROPERTY_NAME_BOUNDS_X,
            openslide.PROPERTY_NAME_BOUNDS_Y,
            openslide.PROPERTY_NAME_BOUNDS_WIDTH,
            openslide.PROPERTY_NAME_BOUNDS_HEIGHT,
        )
        try:
            x, y, width, height = (int(self._properties[key]) for key in keys)
        except (KeyError, ValueError):
            return super().bounds
        if width <= 0 or height <= 0:
            return super().bounds
        return (x, y, width, height)

    def read_region(self, location, level, size):
        return np.array(self._read_region_image(location, level, size))

    def _read_region_image(self, location, level, size):
        self._check_open()
        x, y = _validate_location(location)
        level = self._check_level(level)
        width, height = _as_size_pair(size, "size")

        handle = self._osr
        try:
            image = handle.read_region((x, y), level, (width, height))
        except openslide.OpenSlideError as exc:
            self._reopen_after_error(handle)
            raise SlideError(
                f"Failed to read {width}x{height} px at level {level}, location ({x}, {y}) "
                f"of slide {self.path!r}: {exc}."
            ) from exc

        # Fully opaque regions (nearly all tiles) drop alpha in C, without
        # a round trip through numpy.
        alpha_low, _ = image.getextrema()[3]
        if alpha_low == 255:
            return image.convert("RGB")
        return Image.fromarray(flatten_rgba(np.asarray(image), self._background))

    def _reopen_after_error(self, failed_handle):
        # Other threads may still be reading through the failed handle, so it
        # is replaced but not closed; it closes when its last user drops it.
        with self._lock:
            if self._osr is not failed_handle:
                return
            try:
                self._osr = openslide.OpenSlide(self.path)
            except openslide.OpenSlideError as exc:
                logger.warning("Could not reopen %s after a read error: %s", self.path, exc)

    def close(self):
        if not self._closed:
            self._osr.close()
        super().close()
