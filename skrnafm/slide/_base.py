"""The slide contract shared by pyramidal slides, plain images and regions."""

import abc
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..exceptions import SlideError, SlideReadWarning
from ._resolution import objective_power_from_properties, resolve_mpp

logger = logging.getLogger(__name__)

WHITE = (255, 255, 255)

# Output pixels per side of one thumbnail chunk. Reading the thumbnail in
# chunks bounds memory by the chunk, not by the size of the pyramid level.
_THUMBNAIL_CHUNK = 512

# A level is "good enough" for a downsample when its own downsample exceeds
# it by at most this fraction: pyramids built by halving drift (2.0005 on
# a 4443 px wide slide), and a 0.05% upscale is invisible.
LEVEL_DOWNSAMPLE_TOLERANCE = 0.01


def flatten_rgba(rgba, background=WHITE):
    """Composite an RGBA uint8 array (non-premultiplied) onto a background colour.

    Returns a new C-contiguous uint8 array of shape (height, width, 3).
    """
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.size == 0 or alpha.min() == 255:
        return np.ascontiguousarray(rgb)

    weight = alpha.astype(np.float32)[..., None] / 255.0
    background = np.asarray(background, dtype=np.float32)
    blended = rgb.astype(np.float32) * weight + background * (1.0 - weight)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _as_size_pair(value, name):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            pair = ()
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(
            f"{name} must be a positive int or a (width, height) pair of positive ints, "
            f"got {value!r}."
        )
    return pair


def _validate_location(location):
    try:
        x, y = (int(v) for v in location)
    except (TypeError, ValueError):
        raise ValueError(
            f"location must be an (x, y) pair of level-0 pixel coordinates, got {location!r}."
        ) from None
    return x, y


class BaseSlide(abc.ABC):
    """A whole-slide image or plain image with a pyramid of resolution levels.

    Coordinates passed to :meth:`read_region` are level-0 pixels. A slide
    opened through :class:`SlideRegion` keeps the level-0 frame of the image
    it is cut from, so its :attr:`bounds` may not start at (0, 0).

    Slides hold an open file handle or decoded pixels: close them with
    :meth:`close` or use them as context managers. They pickle by reopening
    the file, so they can be sent to worker processes.
    """

    def __init__(self, source, *, mpp=None):
        self._source = source
        self._mpp_override = mpp
        self._resolution = None
        self._closed = False

    # --- identity -----------------------------------------------------
    @property
    def path(self):
        """Path of the file the pixels come from, as a str."""
        return os.fspath(self._source)

    @property
    def name(self):
        """Short name of the slide: the file name without its extension."""
        return Path(self.path).stem

    def __repr__(self):
        width, height = self.dimensions
        return (
            f"{type(self).__name__}({self.path!r}, dimensions=({width}, {height}), "
            f"level_count={self.level_count})"
        )

    # --- geometry -----------------------------------------------------
    @property
    @abc.abstractmethod
    def level_dimensions(self):
        """(width, height) of each pyramid level, level 0 first."""

    @property
    @abc.abstractmethod
    def level_downsamples(self):
        """Downsample factor of each level relative to level 0."""

    @property
    def dimensions(self):
        """(width, height) of level 0 in pixels."""
        return self.level_dimensions[0]

    @property
    def level_count(self):
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    @property
    def bounds(self):
        """(x, y, width, height) of the area to tile, in level-0 pixels."""
        width, height = self.dimensions
        return (0, 0, width, height)

    @property
    def background_color(self):
        """RGB colour that transparent and out-of-image pixels get."""
        return WHITE

    def get_best_level_for_downsample(self, downsample):
        """Return the coarsest level whose downsample does not exceed ``downsample``.

        Levels whose downsample exceeds ``downsample`` by at most 1% still
        count, so that drifting pyramids (2.0005 for a requested 2) are used.
        """
        limit = float(downsample) * (1.0 + LEVEL_DOWNSAMPLE_TOLERANCE)
        best = 0
        for level, level_downsample in enumerate(self.level_downsamples):
            if level_downsample <= limit and level_downsample >= self.level_downsamples[best]:
                best = level
        return best

    # --- metadata -----------------------------------------------------
    @property
    def properties(self):
        """Metadata as a dict of str to str, with OpenSlide property names."""
        return {}

    def _resolve_resolution(self):
        if self._resolution is None:
            self._resolution = resolve_mpp(
                self.properties, path=self.path, mpp=self._mpp_override
            )
        return self._resolution

    @property
    def mpp(self):
        """Micrometres per level-0 pixel (float).

        Raises :class:`~skrnafm.exceptions.MissingResolutionError` naming
        the file and the ``mpp=`` fix when the slide records no resolution.
        """
        return self._resolve_resolution()[0]

    @property
    def mpp_source(self):
        """Where :attr:`mpp` came from, for example ``"openslide.mpp-x/y"``."""
        return self._resolve_resolution()[1]

    @property
    def objective_power(self):
        """Objective power of the scan as a float, or None when not recorded."""
        return objective_power_from_properties(self.properties)

    # --- pixels -------------------------------------------------------
    @abc.abstractmethod
    def read_region(self, location, level, size):
        """Read a rectangle of pixels.

        Parameters
        ----------
        location : tuple of int
            (x, y) of the top-left corner in level-0 pixels.
        level : int
            Pyramid level to read from.
        size : tuple of int
            (width, height) in pixels of that level.

        Returns
        -------
        region : ndarray of shape (height, width, 3), dtype uint8
            RGB pixels. Transparent pixels are flattened onto
            :attr:`background_color`, and pixels outside the image are
            filled with it.
        """

    def _check_level(self, level):
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise ValueError(f"level must be an int, got {level!r}.")
        if not 0 <= level < self.level_count:
            raise ValueError(
                f"level={level!r} is out of range for slide {self.path!r}, which has "
                f"{self.level_count} level(s): use 0 to {self.level_count - 1}."
            )
        return int(level)

    def read_tile(self, location, level, read_size, tile_size):
        """Read a square of ``read_size`` px at ``level`` and resize it to ``tile_size``.

        Returns an ndarray of shape (tile_size, tile_size, 3), dtype uint8.
        A whole-number shrink factor (512 px to 256 px) averages blocks of
        pixels, as pyramid levels are made. Any other factor uses Pillow's
        antialiased bilinear filter.
        """
        image = self._read_region_image(location, level, (read_size, read_size))
        if read_size != tile_size:
            image = resize_tile(image, tile_size)
        return np.array(image)

    def _read_region_image(self, location, level, size):
        """Return :meth:`read_region` as an RGB PIL image; readers may skip the array copy."""
        return Image.fromarray(self.read_region(location, level, size))

    def get_thumbnail(self, max_size):
        """Return a downscaled RGB picture of the slide's :attr:`bounds`.

        Parameters
        ----------
        max_size : int or tuple of int
            Largest allowed (width, height); an int applies to both sides.
            The aspect ratio is kept and the slide is never upscaled.

        Returns
        -------
        thumbnail : ndarray of shape (height, width, 3), dtype uint8
        """
        max_width, max_height = _as_size_pair(max_size, "max_size")
        _, _, width, height = self.bounds
        scale = max(width / max_width, height / max_height, 1.0)
        out_size = (max(1, round(width / scale)), max(1, round(height / scale)))
        return self.read_bounds_resized(out_size)

    def read_bounds_resized(self, out_size):
        """Return the whole of :attr:`bounds` resized to exactly ``out_size`` (width, height).

        The picture is built in chunks read from the best pyramid level, so
        memory stays bounded by the output and one chunk, whatever the size of
        the level. The last picture is kept, because tiling and its QC
        picture ask for the same size. Returns an ndarray of shape
        (height, width, 3), dtype uint8.
        """
        self._check_open()
        out_size = _as_size_pair(out_size, "out_size")
        cached = getattr(self, "_last_picture", None)
        if cached is not None and cached[0] == out_size:
            return cached[1].copy()
        picture = self._read_bounds_resized(out_size)
        self._last_picture = (out_size, picture)
        return picture.copy()

    def _read_bounds_resized(self, out_size):
        out_width, out_height = out_size
        x0, y0, width, height = self.bounds
        scale_x = width / out_width
        scale_y = height / out_height
        level = self.get_best_level_for_downsample(min(scale_x, scale_y))
        downsample = self.level_downsamples[level]

        thumbnail = np.empty((out_height, out_width, 3), dtype=np.uint8)
        n_read = n_failed = 0
        first_error = None
        for out_top in range(0, out_height, _THUMBNAIL_CHUNK):
            out_bottom = min(out_top + _THUMBNAIL_CHUNK, out_height)
            for out_left in range(0, out_width, _THUMBNAIL_CHUNK):
                out_right = min(out_left + _THUMBNAIL_CHUNK, out_width)

                # Level-0 box of this chunk, then its size at the read level.
                left = x0 + out_left * scale_x
                top = y0 + out_top * scale_y
                right = x0 + out_right * scale_x
                bottom = y0 + out_bottom * scale_y
                read_width = max(1, math.ceil((right - left) / downsample))
                read_height = max(1, math.ceil((bottom - top) / downsample))

                try:
                    chunk = self.read_region(
                        (math.floor(left), math.floor(top)), level, (read_width, read_height)
                    )
                except SlideError as exc:
                    # One corrupt block should cost a blank patch, not the slide.
                    n_failed += 1
                    first_error = first_error or exc
                    thumbnail[out_top:out_bottom, out_left:out_right] = self.background_color
                    continue
                resized = Image.fromarray(chunk).resize(
                    (out_right - out_left, out_bottom - out_top), Image.Resampling.BOX
                )
                thumbnail[out_top:out_bottom, out_left:out_right] = np.asarray(resized)
                n_read += 1

        if n_failed and not n_read:
            raise SlideError(
                f"Could not read any part of slide {self.path!r} at level {level}; first "
                f"error: {first_error}"
            ) from first_error
        if n_failed:
            warnings.warn(
                f"{n_failed} of {n_failed + n_read} parts of the low-resolution picture of "
                f"slide {self.path!r} could not be read and are left blank; first error: "
                f"{first_error}",
                SlideReadWarning,
                stacklevel=2,
            )
        return thumbnail

    # --- life cycle ---------------------------------------------------
    def close(self):
        """Release the file handle or decoded pixels. Closing twice is harmless."""
        self._last_picture = None
        self._closed = True

    @property
    def closed(self):
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self):
        if self._closed:
            raise ValueError(f"Slide {self.path!r} is closed; open it again with open_slide.")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close()

    def __reduce__(self):
        from ._open import _reopen

        return _reopen, (self._source, self._mpp_override, self._backend_name)

    _backend_name = "auto"


def resize_tile(image, tile_size):
    """Resize a square RGB PIL image to ``tile_size`` px."""
    factor, remainder = divmod(image.width, tile_size)
    if remainder == 0 and factor > 1:
        return image.reduce(factor)
    return image.resize((tile_size, tile_size), Image.Resampling.BILINEAR)


def paste_into_background(shape, background, region, offset):
    """Return an array of ``shape`` filled with ``background`` with ``region`` at ``offset``.

    ``offset`` is the (x, y) position of ``region``'s top-left corner in the
    output. Used to pad reads that extend beyond the image.
    """
    out = np.empty(shape, dtype=np.uint8)
    out[...] = np.asarray(background, dtype=np.uint8)
    x, y = offset
    height, width = region.shape[:2]
    out[y : y + height, x : x + width] = region
    return out
