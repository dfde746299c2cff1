"""The end-to-end RNA-FM pipeline: slides to tile embeddings to super-tiles to genes."""

import logging

from sklearn.pipeline import Pipeline

from ._rnaflow import RNAFlowRegressor

logger = logging.getLogger(__name__)

__all__ = ["make_rnafm_pipeline"]


def make_rnafm_pipeline(
    n_clusters=100,
    encoder="efficientnet_lite0",
    *,
    featurizer_params=None,
    pooler_params=None,
    memory=None,
    **regressor_params,
):
    """Build the pipeline WSIFeaturizer -> SuperTilePooler -> RNAFlowRegressor.

    The pooler's number of clusters K is handed to the regressor as
    ``n_tokens``, so the regressor splits each pooled row of K * D features
    into K super-tile tokens. A grid search that changes
    ``pooler__n_clusters`` must change ``regressor__n_tokens`` with it
    (pass both in each grid point).

    Parameters
    ----------
    n_clusters : int, default=100
        Super-tiles K per slide.
    encoder : str or TileEncoder, default="efficientnet_lite0"
        Tile encoder passed to :class:`~skrnafm.features.WSIFeaturizer`.
    featurizer_params : dict, default=None
        Further :class:`~skrnafm.features.WSIFeaturizer` parameters, such as
        ``target_mpp``, ``max_tiles`` or ``device``.
    pooler_params : dict, default=None
        Further :class:`~skrnafm.features.SuperTilePooler` parameters, such
        as ``random_state``.
    memory : str, joblib.Memory or None, default=None
        Cache of fitted transformers, passed to :class:`~sklearn.pipeline.Pipeline`.
        Caching the featurizer avoids encoding the slides again in a grid
        search over the regressor's parameters.
    **regressor_params
        Parameters of :class:`~skrnafm.estimators.RNAFlowRegressor`, such as
        ``pathways``, ``max_epochs`` or ``random_state``.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Steps named ``"featurizer"``, ``"pooler"`` and ``"regressor"``. It takes a
        list of slide paths (or ``SlideRegion`` objects) as ``X``.

    Raises
    ------
    ValueError
        If ``regressor_params`` sets ``n_tokens`` to a value other than
        ``n_clusters``.
    """
    from ..features import SuperTilePooler, WSIFeaturizer

    if "n_tokens" in regressor_params and regressor_params["n_tokens"] != n_clusters:
        raise ValueError(
            f"n_tokens={regressor_params['n_tokens']!r} differs from n_clusters={n_clusters!r}; the "
            "regressor must split pooled rows into n_clusters tokens. Leave n_tokens out."
        )
    regressor_params["n_tokens"] = n_clusters

    featurizer = WSIFeaturizer(encoder=encoder, **(featurizer_params or {}))
    pooler = SuperTilePooler(n_clusters=n_clusters, **(pooler_params or {}))
    regressor = RNAFlowRegressor(**regressor_params)
    return Pipeline(
        [("featurizer", featurizer), ("pooler", pooler), ("regressor", regressor)],
        memory=memory,
    )
