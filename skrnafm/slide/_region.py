"""Rectangular regions of a slide, opened as slides of their own."""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import SlideError
from ._base import BaseSlide, _as_size_pair, _validate_location


@dataclass(frozen=True)
class SlideRegion:
    """A rectangle of an image or slide, to be tiled as if it were a slide.

    ``open_slide(region)`` returns a view that only shows the rectangle:
    pixels outside it read as background. Coordinates stay in the level-0
    frame of the whole image, so tile coordinates from a region can be
    compared with those of the whole slide.

    Parameters
    ----------
    path : str or os.PathLike
        Image or slide file. Stored as a str.
    bbox : tuple of int
        (x, y, width, height) in level-0 pixels. The rectangle may extend
        beyond the image; that part reads as background.
    mpp : float, default=None
        Micrometres per level-0 pixel, overriding the file's metadata.
    name : str, default=None
        Name of the region; by default the file stem followed by the bbox.

    Examples
    --------
    >>> from skrnafm.slide import SlideRegion
    >>> region = SlideRegion("section.jpg", bbox=(100, 200, 1024, 1024), mpp=0.69)
    >>> region.name
    'section_x100_y200_w1024_h1024'
    """

    path: str
    bbox: tuple
    mpp: float = None
    name: str = None

    def __post_init__(self):
        object.__setattr__(self, "path", os.fspath(self.path))
        try:
            bbox = tuple(int(v) for v in self.bbox)
            valid = len(bbox) == 4 and all(float(v) == b for v, b in zip(self.bbox, bbox))
        except (TypeError, ValueError):
            bbox, valid = (), False
        if not valid or bbox[2] < 1 or bbox[3] < 1:
            raise ValueError(
                f"bbox must be (x, y, width, height) in integer level-0 pixels with "
                f"width and height >= 1, got {self.bbox!r} for {self.path!r}."
            )
        object.__setattr__(self, "bbox", bbox)
        if self.mpp is not None:
            from ._resolution import validate_mpp

            object.__setattr__(self, "mpp", validate_mpp(self.mpp))
        if self.name is None:
            x, y, width, height = bbox
            default = f"{Path(self.path).stem}_x{x}_y{y}_w{width}_h{height}"
            object.__setattr__(self, "name", default)


class RegionSlide(BaseSlide):
    """A slide restricted to a :class:`SlideRegion` of another slide.

    Use :func:`open_slide` with a :class:`SlideRegion` to create one. The
    view owns its parent slide and closes it with itself.
    """

    def __init__(self, region, parent):
        super().__init__(region, mpp=region.mpp)
        self._region = region
        self._parent = parent

        x, y, width, height = region.bbox
        parent_x, parent_y, parent_width, parent_height = parent.bounds
        overlaps = (
            x < parent_x + parent_width
            and y < parent_y + parent_height
            and x + width > parent_x
            and y + height > parent_y
        )
        if not overlaps:
            parent.close()
            raise SlideError(
                f"Region bbox={region.bbox!r} does not overlap the image {region.path!r}, "
                f"whose pixels span (x, y, width, height)={parent.bounds!r}. Check that "
                "the bbox is in level-0 pixels of this file."
            )

    @property
    def region(self):
        """The :class:`SlideRegion` this view shows."""
        return self._region

    @property
    def parent(self):
        """The slide the region is cut from."""
        return self._parent

    @property
    def path(self):
        return self._region.path

    @property
    def name(self):
        return self._region.name

    @property
    def level_dimensions(self):
        _, _, width, height = self._region.bbox
        return tuple(
            (math.ceil(width / downsample), math.ceil(height / downsample))
            for downsample in self._parent.level_downsamples
        )

    @property
    def level_downsamples(self):
        return self._parent.level_downsamples

    @property
    def bounds(self):
        return self._region.bbox

    @property
    def background_color(self):
        return self._parent.background_color

    @property
    def properties(self):
        return self._parent.properties

    @property
    def mpp(self):
        return self._parent.mpp

    @property
    def mpp_source(self):
        return self._parent.mpp_source

    @property
    def objective_power(self):
        return self._parent.objective_power

    def read_region(self, location, level, size):
        self._check_open()
        x, y = _validate_location(location)
        level = self._check_level(level)
        width, height = _as_size_pair(size, "size")
        pixels = self._parent.read_region((x, y), level, (width, height))

        # Blank the pixels whose level-0 position falls outside the bbox.
        box_x, box_y, box_width, box_height = self._region.bbox
        downsample = self.level_downsamples[level]
        columns = x + np.arange(width) * downsample
        rows = y + np.arange(height) * downsample
        inside_columns = (columns >= box_x) & (columns < box_x + box_width)
        inside_rows = (rows >= box_y) & (rows < box_y + box_height)
        if inside_columns.all() and inside_rows.all():
            return pixels
        pixels = np.array(pixels, copy=True)
        background = np.asarray(self.background_color, dtype=np.uint8)
        pixels[~inside_rows, :] = background
        pixels[:, ~inside_columns] = background
        return pixels

    def close(self):
        if not self._closed:
            self._parent.close()
        super().close()

    def __reduce__(self):
        from ._open import _reopen

        return _reopen, (self._region, self._parent._mpp_override, self._parent._backend_name)
