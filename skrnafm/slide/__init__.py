"""Whole-slide image reading and tissue tiling.

:func:`open_slide` opens pyramidal slides through OpenSlide and plain images
(JPEG, PNG, single-image TIFF) through Pillow and tifffile, behind one
:class:`BaseSlide` contract. :func:`tile_slide` finds tissue and lays a grid
of tiles at a fixed physical resolution; :func:`iter_tile_batches` reads
those tiles in batches; :func:`save_tiling_qc` draws the result.

Examples
--------
>>> from skrnafm.slide import open_slide, tile_slide, iter_tile_batches
>>> with open_slide("slide.svs") as slide:  # doctest: +SKIP
...     grid = tile_slide(slide, target_mpp=0.5, tile_size=256)
...     for tiles, coords in iter_tile_batches(slide, grid, batch_size=64):
...         pass
"""

from ._base import BaseSlide
from ._image import ImageSlide, clear_decoded_cache
from ._open import SlideNotFoundError, open_slide
from ._openslide import OpenSlideSlide
from ._qc import render_tiling_qc, save_tiling_qc
from ._region import RegionSlide, SlideRegion
from ._resolution import resolve_mpp
from ._tiling import TileGrid, choose_read_geometry, iter_tile_batches, tile_slide
from ._tissue import detect_tissue, otsu_threshold

__all__ = [
    "BaseSlide",
    "ImageSlide",
    "OpenSlideSlide",
    "RegionSlide",
    "SlideNotFoundError",
    "SlideRegion",
    "TileGrid",
    "choose_read_geometry",
    "clear_decoded_cache",
    "detect_tissue",
    "iter_tile_batches",
    "open_slide",
    "otsu_threshold",
    "render_tiling_qc",
    "resolve_mpp",
    "save_tiling_qc",
    "tile_slide",
]
