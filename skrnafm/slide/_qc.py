"""Quality-control picture of a tiling: thumbnail, tissue mask and kept tiles."""

import logging
import os

import numpy as np
from PIL import Image, ImageDraw

from ._base import BaseSlide
from ._tiling import TileGrid

logger = logging.getLogger(__name__)

_MASK_TINT = np.array([0, 170, 80], dtype=np.float32)
_MASK_OPACITY = 0.35
_TILE_OUTLINE = (20, 60, 220)


def render_tiling_qc(slide, grid):
    """Return the QC picture of a tiling as an RGB uint8 array.

    The picture is the slide's thumbnail at the tissue mask's size, with
    tissue tinted green and each kept tile outlined in blue.

    Parameters
    ----------
    slide : BaseSlide
        The open slide the grid was made for.
    grid : TileGrid
        Result of :func:`tile_slide` on ``slide``.

    Returns
    -------
    picture : ndarray of shape (mask_height, mask_width, 3), dtype uint8
    """
    if not isinstance(slide, BaseSlide):
        raise TypeError(f"slide must be an open slide, got {type(slide).__name__}.")
    if not isinstance(grid, TileGrid):
        raise TypeError(f"grid must be a TileGrid from tile_slide, got {type(grid).__name__}.")

    mask = grid.tissue_mask
    mask_height, mask_width = mask.shape
    thumbnail = slide.read_bounds_resized((mask_width, mask_height)).astype(np.float32)
    thumbnail[mask] = (1 - _MASK_OPACITY) * thumbnail[mask] + _MASK_OPACITY * _MASK_TINT
    picture = Image.fromarray(np.clip(np.rint(thumbnail), 0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(picture)
    scale_x, scale_y = grid.mask_downsample
    x0, y0 = grid.bounds[:2]
    for x, y in grid.coords:
        left = (x - x0) / scale_x
        top = (y - y0) / scale_y
        right = left + grid.stride / scale_x
        bottom = top + grid.stride / scale_y
        box = (left, top, max(left, right - 1), max(top, bottom - 1))
        draw.rectangle(box, outline=_TILE_OUTLINE)
    return np.asarray(picture)


def save_tiling_qc(slide, grid, path):
    """Save the QC picture of a tiling as a PNG file.

    Pathologists check a tiling by eye: the picture shows the thumbnail,
    the tissue mask (green tint) and the kept tiles (blue outlines). See
    :func:`render_tiling_qc`.

    Parameters
    ----------
    slide : BaseSlide
        The open slide the grid was made for.
    grid : TileGrid
        Result of :func:`tile_slide` on ``slide``.
    path : str or os.PathLike
        Output file; written as PNG whatever its extension.

    Returns
    -------
    path : str
        The path written.
    """
    path = os.fspath(path)
    picture = render_tiling_qc(slide, grid)
    Image.fromarray(picture).save(path, format="PNG")
    logger.info("Wrote tiling QC picture of %s to %s", slide.path, path)
    return path
