"""Super-tile pooling: k-means cluster means of each slide's tile embeddings."""

import logging
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.cluster import KMeans
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from ..exceptions import SkrnafmWarning
from ._embeddings import TileEmbeddings

logger = logging.getLogger(__name__)


def super_tile_feature_names(n_clusters, embedding_dim):
    """Return the pooler's column names ``st{k}_f{d}`` in cluster-major order.

    Examples
    --------
    >>> list(super_tile_feature_names(2, 2))
    ['st0_f0', 'st0_f1', 'st1_f0', 'st1_f1']
    """
    return np.asarray(
        [f"st{k}_f{d}" for k in range(n_clusters) for d in range(embedding_dim)], dtype=object
    )


def _slide_label(item, index):
    if isinstance(item, TileEmbeddings):
        return f"slide {index} ({item.slide!r})"
    return f"slide {index}"


def _is_list_of_vectors(items):
    """Return True when ``items`` is a 2-D table written as a list of rows."""
    return len(items) > 0 and all(
        not isinstance(item, TileEmbeddings) and np.ndim(item) == 1 for item in items
    )


class SuperTilePooler(TransformerMixin, BaseEstimator):
    """Pool each slide's tile embeddings into K super-tiles by k-means.

    For every slide, k-means with ``n_clusters`` clusters runs on that
    slide's tile embeddings, and the slide becomes the K cluster means
    (a K x D matrix), flattened cluster-major into one row of K * D
    features: column ``k * D + d`` is dimension d of super-tile k, named
    ``st{k}_f{d}``. Downstream token models reshape the row to (K, D).

    Cluster order carries no meaning in k-means, so the clusters are
    sorted to make the output deterministic: by size, largest first, ties
    broken by the cluster mean in lexicographic order.

    Parameters
    ----------
    n_clusters : int, default=100
        K, the number of super-tiles per slide.
    n_init : int, default=1
        k-means restarts per slide; the run with the lowest inertia wins.
        One k-means++ run is scikit-learn's own default for this init.
    max_iter : int, default=100
        Maximum Lloyd iterations per k-means run.
    on_empty : {"raise", "nan"}, default="raise"
        What to do with a slide without tiles (a slide that failed in the
        featurizer under ``on_error="warn"`` or ``"skip"``). ``"raise"``
        raises a ValueError naming the slide. ``"nan"`` returns a row of
        NaN for it, so rows stay aligned with the targets and the slide is
        easy to find (``np.isnan(X).all(axis=1)``) and drop.
    random_state : int, RandomState instance or None, default=0
        Seed of the k-means initialisation; the same seed is used for
        every slide, so a slide's features do not depend on its position.

    Attributes
    ----------
    n_clusters_ : int
        K used to build the features.
    embedding_dim_ : int
        D, the length of one tile embedding seen in ``fit``.
    n_features_in_ : int
        Equal to ``embedding_dim_``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the embedding dimensions, only when ``fit`` saw a
        DataFrame.

    Notes
    -----
    Accepted inputs are a list of :class:`TileEmbeddings` (what
    :class:`WSIFeaturizer` returns), a list of arrays of shape (n_tiles, D)
    or a 3-D array of shape (n_slides, n_tiles, D). A 2-D array (or list
    of rows) of shape (n_slides, D) is read as one tile per slide. With
    ``n_clusters > 1``, ``transform`` warns about a 2-D array, because it
    may be the tiles of a single slide passed without the enclosing list.

    A slide with fewer distinct tiles than K cannot have K non-empty
    clusters. Its distinct tiles then each form one cluster (their mean is
    the tile itself), these clusters are sorted as above, and they are
    repeated in that order to fill the K slots: slot k contains cluster
    ``k mod n_distinct``. The row is never NaN and the slide is never
    dropped. The same rule fills the slots of a cluster that k-means
    leaves empty.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> slides = [rng.normal(size=(50, 4)), rng.normal(size=(3, 4))]
    >>> SuperTilePooler(n_clusters=5).fit_transform(slides).shape
    (2, 20)
    """

    _parameter_constraints = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "on_empty": [StrOptions({"raise", "nan"})],
        "random_state": ["random_state"],
    }

    def __init__(self, n_clusters=100, *, n_init=1, max_iter=100, on_empty="raise", random_state=0):
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.on_empty = on_empty
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the embeddings and record K and D.

        Pooling is per slide, so fitting learns nothing from the data
        beyond the embedding length.

        Parameters
        ----------
        X : list of TileEmbeddings, list of arrays of shape (n_tiles, D), or array
            Tile embeddings of each slide; see the class Notes.
        y : None
            Ignored.

        Returns
        -------
        self : SuperTilePooler
        """
        self._to_slides(X, reset=True)
        self.n_clusters_ = int(self.n_clusters)
        return self

    def transform(self, X):
        """Pool each slide into its K super-tile means.

        Parameters
        ----------
        X : list of TileEmbeddings, list of arrays of shape (n_tiles, D), or array
            Tile embeddings of each slide.

        Returns
        -------
        features : ndarray of shape (n_slides, n_clusters * D), dtype float32
            Cluster-major super-tile means.
        """
        check_is_fitted(self)
        slides = self._to_slides(X, reset=False)
        K, D = self.n_clusters_, self.embedding_dim_
        if K > 1 and getattr(X, "ndim", None) == 2:
            warnings.warn(
                f"SuperTilePooler got a 2-D array of shape {X.shape} and reads each of its "
                f"{X.shape[0]} rows as a slide with one tile, so all {K} super-tiles of a "
                "slide are copies of its row. If the array contains the tiles of one slide, "
                "wrap it in a list ([tiles]); pass several slides as a list of "
                "(n_tiles, D) arrays or a 3-D array.",
                SkrnafmWarning,
                stacklevel=2,
            )

        out = np.empty((len(slides), K * D), dtype=np.float32)
        for row, (label, tiles, _) in enumerate(slides):
            if tiles.shape[0] == 0:
                out[row] = np.nan
                continue
            out[row] = self._pool_slide(tiles, label).reshape(-1)
        return out

    def get_feature_names_out(self, input_features=None):
        """Return the output names ``st{k}_f{d}``, cluster-major.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored apart from a length check against the embedding size,
            because output columns are named by super-tile and dimension.

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self)
        if input_features is not None and len(input_features) != self.embedding_dim_:
            raise ValueError(
                f"input_features has {len(input_features)} names but the pooler was fitted "
                f"on embeddings of length {self.embedding_dim_}."
            )
        return super_tile_feature_names(self.n_clusters_, self.embedding_dim_)

    def _to_slides(self, X, *, reset):
        """Return ``[(label, float32 tiles of shape (n_tiles, D), error), ...]``."""
        if isinstance(X, (list, tuple)) and not _is_list_of_vectors(X):
            slides = self._list_to_slides(X, reset=reset)
        else:
            array = np.asarray(X) if not hasattr(X, "iloc") else X
            if getattr(array, "ndim", None) == 3:
                slides = self._list_to_slides(list(array), reset=reset)
            else:
                array = validate_data(
                    self, X, reset=reset, dtype=np.float32, ensure_all_finite=False
                )
                slides = [
                    (_slide_label(None, i), array[i : i + 1], None) for i in range(array.shape[0])
                ]
                if reset:
                    self.embedding_dim_ = int(array.shape[1])

        for label, tiles, error in slides:
            if tiles.shape[0] and not np.isfinite(tiles).all():
                n_bad = int((~np.isfinite(tiles)).any(axis=1).sum())
                raise ValueError(
                    f"Embeddings of {label} contain NaN or infinite values in {n_bad} of "
                    f"{tiles.shape[0]} tiles. Re-run the featurizer for this slide (clear "
                    "its cache file) or check the encoder's precision."
                )
            if tiles.shape[0] == 0 and self.on_empty == "raise":
                reason = f" (featurizer error: {error})" if error else ""
                raise ValueError(
                    f"{label} has no tiles{reason}. Drop it together with its target "
                    "row, or pass on_empty='nan' to get a NaN row in its place."
                )
        return slides

    def _list_to_slides(self, items, *, reset):
        if len(items) == 0:
            raise ValueError(
                "SuperTilePooler got an empty list of slides; pass at least one slide."
            )
        slides = []
        for index, item in enumerate(items):
            label = _slide_label(item, index)
            error = item.error if isinstance(item, TileEmbeddings) else None
            tiles = item.features if isinstance(item, TileEmbeddings) else item
            tiles = np.asarray(tiles, dtype=np.float32)
            if tiles.ndim != 2:
                raise ValueError(
                    f"Embeddings of {label} must be 2-D (n_tiles, embedding_dim); got shape "
                    f"{tiles.shape}."
                )
            slides.append((label, tiles, error))

        dims = {tiles.shape[1] for _, tiles, _ in slides if tiles.shape[0]}
        if len(dims) > 1:
            raise ValueError(
                f"Slides have embeddings of different lengths {sorted(dims)}; all slides "
                "must come from the same encoder."
            )
        dim = dims.pop() if dims else None
        if reset:
            if dim is None:
                raise ValueError(
                    "None of the slides has any tile, so the embedding length is unknown; "
                    "at least one slide with tiles is needed to fit."
                )
            self.embedding_dim_ = int(dim)
            self.n_features_in_ = int(dim)
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif dim is not None and dim != self.embedding_dim_:
            raise ValueError(
                f"Embeddings have length {dim} but the pooler was fitted on length "
                f"{self.embedding_dim_}; use the same encoder for fit and transform."
            )
        return slides

    def _pool_slide(self, tiles, label):
        """Return the sorted (K, D) cluster means of one slide."""
        K = self.n_clusters_
        distinct, counts = np.unique(tiles, axis=0, return_counts=True)

        if distinct.shape[0] <= K:
            # Each distinct tile is its own cluster: the exact k-means
            # optimum, and no empty cluster can appear.
            centers = distinct.astype(np.float64)
            sizes = counts
        else:
            kmeans = KMeans(
                n_clusters=K,
                init="k-means++",
                n_init=self.n_init,
                max_iter=self.max_iter,
                random_state=self.random_state,
            )
            # k-means++ seeding runs many small distance products, where
            # multi-threaded BLAS gains little and stalls under CPU
            # contention: on a busy 2-core machine one seeding of 4,000 x
            # 1,280 tiles took 88 s with two OpenBLAS threads and 3.7 s with
            # one. The Lloyd iterations keep their OpenMP threads.
            with threadpool_limits(limits=1, user_api="blas"):
                labels = kmeans.fit_predict(tiles)
            sizes = np.bincount(labels, minlength=K)
            centers = np.zeros((K, tiles.shape[1]), dtype=np.float64)
            np.add.at(centers, labels, tiles.astype(np.float64))
            nonempty = sizes > 0
            centers = centers[nonempty] / sizes[nonempty, None]
            sizes = sizes[nonempty]
            if not nonempty.all():
                logger.debug("%s: k-means left %d empty clusters", label, int((~nonempty).sum()))

        # Largest cluster first, ties by the mean vector (lexsort keys run
        # from last to first, so the size key goes last).
        order = np.lexsort((*centers.T[::-1], -sizes))
        centers = centers[order]
        slots = np.arange(K) % centers.shape[0]
        return centers[slots].astype(np.float32)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
