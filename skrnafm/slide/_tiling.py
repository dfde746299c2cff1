"""Tissue tile grids at a fixed physical resolution, and batched tile reading."""

import logging
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from ..exceptions import NoTissueError, SlideError, SlideReadWarning
from ._base import BaseSlide
from ._tissue import detect_tissue

logger = logging.getLogger(__name__)

# A tile whose read size is within 2% of the output size is read at the
# output size and not resized. Scans sold as 20x record values near, not at,
# 0.5 µm/px (the CMU-1 Aperio slide records 0.499), and resizing for that
# would blur every tile and cost time. The scale actually used is stored in TileGrid.effective_mpp.
RESIZE_TOLERANCE = 0.02

# Longer side of the tissue mask in pixels (or the slide's, if smaller). A
# fixed size keeps the mask's memory the same for every slide larger than
# this. At 40x a 100,000 px slide still gets about 10 mask pixels along each
# 256 px tile at 20x.
MASK_MAX_SIDE = 2048


@dataclass(frozen=True, eq=False)
class TileGrid:
    """Tissue tiles of one slide at a fixed resolution.

    Attributes
    ----------
    coords : ndarray of shape (n_tiles, 2), dtype int64
        Level-0 (x, y) of each tile's top-left corner, in row-major order.
    level : int
        Pyramid level the tiles are read from.
    read_size : int
        Side of a tile in pixels of ``level``, before resizing.
    tile_size : int
        Side of a returned tile in pixels.
    target_mpp : float
        Requested micrometres per pixel of the returned tiles.
    effective_mpp : float
        Micrometres per pixel the tiles really have: ``target_mpp`` up to
        the rounding of ``read_size`` to whole pixels.
    slide_mpp : float
        Micrometres per level-0 pixel of the slide.
    stride : int
        Distance in level-0 pixels between neighbouring tile origins, which
        is also the level-0 extent of one tile.
    tissue_mask : ndarray of shape (mask_height, mask_width), dtype bool
        Tissue mask over ``bounds``, at low resolution.
    bounds : tuple of int
        (x, y, width, height) in level-0 pixels of the tiled area.
    tissue_fraction : ndarray of shape (n_tiles,), dtype float32
        Fraction of each kept tile covered by the tissue mask.
    n_candidates : int
        Number of tiles that passed the tissue and contrast tests, before
        the ``max_tiles`` cap.
    slide_name : str
        :attr:`BaseSlide.name` of the slide the grid was made for.
    """

    coords: np.ndarray
    level: int
    read_size: int
    tile_size: int
    target_mpp: float
    effective_mpp: float
    slide_mpp: float
    stride: int
    tissue_mask: np.ndarray
    bounds: tuple
    tissue_fraction: np.ndarray
    n_candidates: int
    slide_name: str

    @property
    def n_tiles(self):
        """Number of kept tiles."""
        return int(self.coords.shape[0])

    @property
    def mask_downsample(self):
        """Level-0 pixels per tissue-mask pixel, as (along x, along y)."""
        mask_height, mask_width = self.tissue_mask.shape
        return (self.bounds[2] / mask_width, self.bounds[3] / mask_height)

    def __repr__(self):
        return (
            f"TileGrid(slide_name={self.slide_name!r}, n_tiles={self.n_tiles}, "
            f"tile_size={self.tile_size}, target_mpp={self.target_mpp}, level={self.level}, "
            f"read_size={self.read_size})"
        )


def _check_number(value, name, *, low, integer=False, high=None, allow_none=False):
    if value is None and allow_none:
        return None
    kind = numbers.Integral if integer else numbers.Real
    valid = isinstance(value, kind) and not isinstance(value, bool)
    if valid:
        valid = value >= low and (high is None or value <= high) and math.isfinite(value)
    if not valid:
        upper = "" if high is None else f" and <= {high}"
        expected_kind = "an int" if integer else "a number"
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {expected_kind} >= {low}{upper}{none}, got {value!r}.")
    return value


def _mask_size(bounds, stride):
    _, _, width, height = bounds
    longest = max(width, height)
    # Tiles smaller than 2 mask pixels would get no reliable tissue fraction,
    # so tiny tiles on a huge slide get a larger mask.
    side = min(longest, max(MASK_MAX_SIDE, math.ceil(2 * longest / stride)))
    scale = longest / side
    return max(1, round(width / scale)), max(1, round(height / scale))


def choose_read_geometry(slide_mpp, level_downsamples, *, target_mpp, tile_size):
    """Return ``(level, read_size, stride)`` for tiles of ``tile_size`` px at ``target_mpp``.

    The level is the coarsest one whose downsample does not exceed the
    target-to-slide resolution ratio, with 1% tolerance for drifting
    pyramids. ``read_size`` is the tile side at that level, and ``stride``
    is its level-0 extent.
    """
    level0_extent = tile_size * target_mpp / slide_mpp
    ratio = target_mpp / slide_mpp

    limit = ratio * 1.01
    level = 0
    for index, downsample in enumerate(level_downsamples):
        if downsample <= limit and downsample >= level_downsamples[level]:
            level = index
    downsample = level_downsamples[level]

    read_size = max(1, round(level0_extent / downsample))
    if abs(read_size - tile_size) <= RESIZE_TOLERANCE * tile_size:
        read_size = tile_size
    stride = max(1, round(read_size * downsample))
    return level, read_size, stride


def tile_slide(
    slide,
    *,
    target_mpp=0.5,
    tile_size=256,
    min_tissue_fraction=0.2,
    max_tiles=4000,
    random_state=0,
    min_contrast=4.0,
):
    """Lay a grid of tissue tiles over a slide at a fixed resolution.

    The slide's :attr:`~BaseSlide.bounds` are cut into square tiles of
    ``tile_size`` px at ``target_mpp`` µm/px (256 px at 0.5 µm/px is 128 µm,
    the usual "20x" tile). Tiles are read from the coarsest pyramid level that
    is at least as fine as the target and resized: a 40x slide without a 20x
    level reads 512 px at level 0 and resizes to 256. Tiles on the right and
    bottom edges may extend past the image and are padded with background.

    A tile is kept when at least ``min_tissue_fraction`` of it is tissue on
    the tissue mask (see :func:`detect_tissue`) and its grey-level standard
    deviation on the mask picture is at least ``min_contrast``. When more
    than ``max_tiles`` tiles qualify, ``max_tiles`` of them are drawn without
    replacement with ``random_state``.

    Parameters
    ----------
    slide : BaseSlide
        Open slide, from :func:`open_slide`.
    target_mpp : float, default=0.5
        Micrometres per pixel of the returned tiles.
    tile_size : int, default=256
        Side of a returned tile in pixels.
    min_tissue_fraction : float, default=0.2
        Smallest fraction of a tile that must be tissue, in [0, 1]. With 0,
        every tile that touches tissue is kept.
    max_tiles : int or None, default=4000
        Largest number of tiles kept; None keeps all.
    random_state : int, RandomState instance or None, default=0
        Seed of the draw that enforces ``max_tiles``.
    min_contrast : float, default=4.0
        Smallest grey-level standard deviation (0-255 scale) of a tile on
        the mask picture. Filters out blank, blurred or uniformly stained
        tiles that pass the tissue test.

    Returns
    -------
    grid : TileGrid
        Kept tiles, their coordinates and the tissue mask.

    Raises
    ------
    MissingResolutionError
        If the slide records no resolution and none was passed with ``mpp=``.
    SlideError
        If the slide is smaller than one tile.
    NoTissueError
        If no tile passes the tissue and contrast tests.
    """
    if not isinstance(slide, BaseSlide):
        raise TypeError(
            f"slide must be an open slide from open_slide(...), got {type(slide).__name__} "
            f"{slide!r}."
        )
    target_mpp = float(_check_number(target_mpp, "target_mpp", low=1e-6))
    tile_size = int(_check_number(tile_size, "tile_size", low=1, integer=True))
    min_tissue_fraction = float(
        _check_number(min_tissue_fraction, "min_tissue_fraction", low=0.0, high=1.0)
    )
    max_tiles = _check_number(max_tiles, "max_tiles", low=1, integer=True, allow_none=True)
    min_contrast = float(_check_number(min_contrast, "min_contrast", low=0.0))
    random_state = check_random_state(random_state)

    slide_mpp = slide.mpp
    level, read_size, stride = choose_read_geometry(
        slide_mpp, slide.level_downsamples, target_mpp=target_mpp, tile_size=tile_size
    )
    effective_mpp = slide_mpp * stride / tile_size

    bounds = tuple(int(v) for v in slide.bounds)
    x0, y0, width, height = bounds
    if width < stride or height < stride:
        raise SlideError(
            f"Slide {slide.path!r} is {width} x {height} px at {slide_mpp:.4g} µm/px, smaller "
            f"than one tile of {tile_size} px at {target_mpp:g} µm/px ({stride} x {stride} "
            "level-0 px). Use a smaller tile_size or a larger target_mpp, or check the "
            "slide's resolution (mpp=)."
        )
    logger.info(
        "Tiling %s: slide %.4g µm/px (%s), tiles of %d px at %.4g µm/px read as %d px "
        "from level %d (downsample %.4g)",
        slide.path,
        slide_mpp,
        slide.mpp_source,
        tile_size,
        effective_mpp,
        read_size,
        level,
        slide.level_downsamples[level],
    )

    # Tissue mask and grey levels on one low-resolution picture of the bounds.
    mask_width, mask_height = _mask_size(bounds, stride)
    thumbnail = slide.read_bounds_resized((mask_width, mask_height))
    mask = detect_tissue(thumbnail)
    grey = thumbnail[..., 0].astype(np.float32)
    grey += thumbnail[..., 1]
    grey += thumbnail[..., 2]
    grey /= 3.0
    del thumbnail

    # Candidate grid; edge tiles overhang the bounds and are padded when read.
    n_columns = math.ceil(width / stride)
    n_rows = math.ceil(height / stride)
    rows, columns = np.meshgrid(np.arange(n_rows), np.arange(n_columns), indexing="ij")
    tile_x = columns.ravel() * stride
    tile_y = rows.ravel() * stride

    # Each mask pixel belongs to the tile that contains its top-left corner.
    scale_x = mask_width / width
    scale_y = mask_height / height
    column_tile = np.minimum(np.arange(mask_width) // (stride * scale_x), n_columns - 1)
    row_tile = np.minimum(np.arange(mask_height) // (stride * scale_y), n_rows - 1)
    pixel_tile = row_tile.astype(np.int64)[:, None] * n_columns + column_tile.astype(np.int64)
    pixel_tile = pixel_tile.ravel()
    n_cells = n_rows * n_columns

    # The full tile area counts in the denominator, so overhang is not tissue.
    full_area = (stride * scale_x) * (stride * scale_y)
    pixel_count = np.bincount(pixel_tile, minlength=n_cells)
    tissue = np.bincount(pixel_tile, weights=mask.ravel(), minlength=n_cells)
    fraction = np.minimum(tissue / max(full_area, 1.0), 1.0)

    # bincount accumulates in float64, so summing millions of float32 squares
    # keeps the precision the variance below needs.
    grey = grey.ravel()
    grey_sum = np.bincount(pixel_tile, weights=grey, minlength=n_cells)
    grey_square = np.bincount(pixel_tile, weights=grey * grey, minlength=n_cells)
    del grey, pixel_tile
    count = np.maximum(pixel_count, 1)
    grey_mean = grey_sum / count
    grey_std = np.sqrt(np.maximum(grey_square / count - grey_mean**2, 0.0))

    keep = (fraction >= min_tissue_fraction) & (fraction > 0) & (grey_std >= min_contrast)
    candidates = np.flatnonzero(keep)
    if candidates.size == 0:
        raise NoTissueError(
            f"No tissue tile found in slide {slide.path!r}: {100 * mask.mean():.2f}% of the "
            f"mask is tissue, and no {tile_size} px tile at {target_mpp:g} µm/px has at least "
            f"{min_tissue_fraction:g} tissue and contrast {min_contrast:g}. Check the slide "
            "with save_tiling_qc, lower min_tissue_fraction or min_contrast, or use a smaller "
            "tile_size for a small biopsy."
        )

    kept_indices = candidates
    if max_tiles is not None and candidates.size > max_tiles:
        kept_indices = np.sort(random_state.choice(candidates, size=max_tiles, replace=False))

    coords = np.stack([tile_x[kept_indices] + x0, tile_y[kept_indices] + y0], axis=1)
    coords = coords.astype(np.int64)
    logger.info(
        "Kept %d of %d tissue tiles (%d grid cells) in %s",
        kept_indices.size,
        candidates.size,
        tile_x.size,
        slide.path,
    )
    return TileGrid(
        coords=coords,
        level=int(level),
        read_size=int(read_size),
        tile_size=tile_size,
        target_mpp=target_mpp,
        effective_mpp=float(effective_mpp),
        slide_mpp=float(slide_mpp),
        stride=int(stride),
        tissue_mask=mask,
        bounds=bounds,
        tissue_fraction=fraction[kept_indices].astype(np.float32),
        n_candidates=int(candidates.size),
        slide_name=slide.name,
    )


def iter_tile_batches(slide, grid, batch_size=64):
    """Read the tiles of a grid in batches.

    Only one batch of tiles is in memory at a time. A tile that cannot be
    read (a corrupt JPEG block, for example) is skipped; at the end one
    :class:`~skrnafm.exceptions.SlideReadWarning` gives the number skipped
    and the first error. Batches after a skip may be shorter than
    ``batch_size``, and their ``coords`` always match their tiles.

    Parameters
    ----------
    slide : BaseSlide
        The open slide the grid was made for.
    grid : TileGrid
        Tiles to read, from :func:`tile_slide`.
    batch_size : int, default=64
        Number of tiles per batch.

    Yields
    ------
    tiles : ndarray of shape (n_batch, tile_size, tile_size, 3), dtype uint8
        RGB tiles.
    coords : ndarray of shape (n_batch, 2), dtype int64
        Level-0 (x, y) of each tile's top-left corner.

    Raises
    ------
    SlideError
        If no tile of the grid could be read.
    """
    if not isinstance(slide, BaseSlide):
        raise TypeError(
            f"slide must be an open slide from open_slide(...), got {type(slide).__name__}."
        )
    if not isinstance(grid, TileGrid):
        raise TypeError(f"grid must be a TileGrid from tile_slide(...), got {type(grid).__name__}.")
    batch_size = int(_check_number(batch_size, "batch_size", low=1, integer=True))

    n_failed = 0
    first_error = None
    size = grid.tile_size
    for start in range(0, grid.n_tiles, batch_size):
        batch_coords = grid.coords[start : start + batch_size]
        tiles = np.empty((len(batch_coords), size, size, 3), dtype=np.uint8)
        read_ok = np.ones(len(batch_coords), dtype=bool)
        for index, (x, y) in enumerate(batch_coords):
            try:
                tiles[index] = slide.read_tile((int(x), int(y)), grid.level, grid.read_size, size)
            except SlideError as exc:
                read_ok[index] = False
                n_failed += 1
                if first_error is None:
                    first_error = exc
                logger.debug("Skipping tile (%d, %d) of %s: %s", x, y, slide.path, exc)

        if read_ok.all():
            yield tiles, np.array(batch_coords, dtype=np.int64)
        elif read_ok.any():
            yield tiles[read_ok], np.array(batch_coords[read_ok], dtype=np.int64)

    if n_failed == grid.n_tiles and n_failed > 0:
        raise SlideError(
            f"None of the {n_failed} tiles of slide {slide.path!r} could be read; first "
            f"error: {first_error}"
        ) from first_error
    if n_failed:
        warnings.warn(
            f"Skipped {n_failed} of {grid.n_tiles} tiles of slide {slide.path!r} that could "
            f"not be read; first error: {first_error}",
            SlideReadWarning,
            stacklevel=2,
        )
