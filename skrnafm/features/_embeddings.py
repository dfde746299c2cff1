"""The per-slide result of the featurizer."""

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class TileEmbeddings:
    """Tile embeddings and tile positions of one slide.

    Attributes
    ----------
    features : ndarray of shape (n_tiles, embedding_dim), dtype float32
        One encoder embedding per tile.
    coords : ndarray of shape (n_tiles, 2), dtype int64
        Level-0 (x, y) of each tile's top-left corner, in the frame of the
        slide file (for a region, the parent image's frame).
    slide : str
        Path of the slide, or the region's name for a ``SlideRegion``.
    encoder : str
        Name of the encoder that produced ``features``.
    mpp : float or None
        Micrometres per pixel of the slide's level 0 (None when the slide
        failed before its resolution was known).
    tile_size : int
        Side of the encoded tiles in pixels, at ``target_mpp``.
    target_mpp : float or None
        Micrometres per pixel the tiles were read at.
    error : str or None
        Why the slide failed under ``on_error="warn"`` or ``"skip"``.
        Such an entry has zero tiles. None for a slide that worked.
    metadata : dict
        Details of the run: ``mpp_source``, the pyramid ``level`` and
        ``read_size`` the tiles were read at, ``seconds`` (wall time of
        the slide), ``encoder_seconds`` (time inside the encoder) and
        ``from_cache``.
    """

    features: np.ndarray
    coords: np.ndarray
    slide: str
    encoder: str
    mpp: float = None
    tile_size: int = None
    target_mpp: float = None
    error: str = None
    metadata: dict = field(default_factory=dict)

    @property
    def n_tiles(self):
        """Number of tiles."""
        return int(self.features.shape[0])

    @property
    def embedding_dim(self):
        """Length of one tile embedding."""
        return int(self.features.shape[1]) if self.features.ndim == 2 else 0

    @property
    def failed(self):
        """True when the slide could not be featurized."""
        return self.error is not None

    def __repr__(self):
        status = f", error={self.error!r}" if self.failed else ""
        return (
            f"TileEmbeddings(slide={self.slide!r}, n_tiles={self.n_tiles}, "
            f"embedding_dim={self.embedding_dim}, encoder={self.encoder!r}{status})"
        )


def failed_slides(embeddings):
    """Return ``(index, slide, error)`` for every failed entry of ``embeddings``.

    Parameters
    ----------
    embeddings : list of TileEmbeddings
        Output of :meth:`WSIFeaturizer.transform`.

    Returns
    -------
    failures : list of tuple (int, str, str)
        Position in the list, slide name and error message, so the matching
        rows of the targets can be dropped before fitting.
    """
    return [
        (index, item.slide, item.error)
        for index, item in enumerate(embeddings)
        if isinstance(item, TileEmbeddings) and item.failed
    ]
