"""Tile encoders, the slide featurizer and super-tile pooling.

:class:`WSIFeaturizer` turns slide files into per-slide tile embeddings
(:class:`TileEmbeddings`) with a :class:`TileEncoder`, and
:class:`SuperTilePooler` turns those into one row of K x D super-tile
features per slide.
"""

from ._embeddings import TileEmbeddings, failed_slides
from ._encoders import (
    EfficientNetLite0Encoder,
    ModuleEncoder,
    TileEncoder,
    TimmEncoder,
    get_encoder,
)
from ._featurizer import WSIFeaturizer
from ._pooler import SuperTilePooler, super_tile_feature_names

__all__ = [
    "TileEncoder",
    "EfficientNetLite0Encoder",
    "TimmEncoder",
    "ModuleEncoder",
    "get_encoder",
    "TileEmbeddings",
    "failed_slides",
    "WSIFeaturizer",
    "SuperTilePooler",
    "super_tile_feature_names",
]
