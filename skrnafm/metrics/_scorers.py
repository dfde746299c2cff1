"""Scorer objects for ``cross_val_score`` and ``GridSearchCV``."""

import inspect

import numpy as np
from sklearn.metrics import make_scorer

from ._gene import check_gene_matrices, mean_pearson_per_gene, rmse_per_gene
from ._probabilistic import crps_gaussian

_METRICS = ("pearson_r", "rmse", "rmse_over_mean", "rmse_over_iqr", "crps_gaussian")


def mean_rmse_per_gene(Y_true, Y_pred, *, normalize=None):
    """Return the mean over genes of the RMSE, optionally divided per gene.

    ``normalize`` is None, ``"mean"`` (RMSE / mean of the truth) or ``"iqr"``
    (RMSE / interquartile range of the truth). Genes whose mean or IQR is 0
    are left out of the normalized average, because the ratio is undefined.
    """
    Y_true, Y_pred = check_gene_matrices(Y_true, Y_pred)
    rmse = rmse_per_gene(Y_true, Y_pred)
    if normalize is None:
        return float(rmse.mean())

    if normalize == "mean":
        scale = Y_true.mean(axis=0)
    else:
        q75, q25 = np.percentile(Y_true, [75, 25], axis=0)
        scale = q75 - q25
    defined = scale != 0
    if not defined.any():
        return float("nan")
    return float(np.mean(rmse[defined] / scale[defined]))


def _negative_crps_gaussian(estimator, X, Y):
    """Score ``predict(X, return_std=True)`` by minus the mean Gaussian CRPS."""
    final = estimator[-1] if hasattr(estimator, "steps") else estimator
    if "return_std" not in inspect.signature(final.predict).parameters:
        raise ValueError(
            f"metric='crps_gaussian' needs predict(X, return_std=True), which "
            f"{type(final).__name__} does not support; use a point metric such as 'rmse'"
        )
    mean, std = estimator.predict(X, return_std=True)
    Y_true, mean = check_gene_matrices(Y, mean)
    _, std = check_gene_matrices(Y_true, std, names=("Y_true", "std"))
    return -crps_gaussian(Y_true, mean, std)


def make_gene_scorer(metric="pearson_r", *, top_k=None):
    """Make a scorer from a per-gene metric, for ``scoring=`` in model selection.

    Parameters
    ----------
    metric : {"pearson_r", "rmse", "rmse_over_mean", "rmse_over_iqr", \
"crps_gaussian"}, default="pearson_r"
        Per-gene metric averaged over genes. Error metrics are negated, so
        that greater is better as scikit-learn expects. ``"crps_gaussian"``
        scores the predictive distribution: it calls
        ``predict(X, return_std=True)`` and treats each prediction as a
        Gaussian (see :func:`crps_gaussian`).
    top_k : int, default=None
        With ``metric="pearson_r"``, average over the k genes with the
        highest r on the scored fold (the optimistic, test-ranked top k
        that the field reports). None averages over all genes.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, Y) -> float``.

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> from sklearn.model_selection import cross_val_score
    >>> import numpy as np
    >>> from skrnafm.metrics import make_gene_scorer
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(30, 4)), rng.normal(size=(30, 3))
    >>> scores = cross_val_score(Ridge(), X, Y, cv=3, scoring=make_gene_scorer("rmse"))
    >>> bool((scores < 0).all())
    True
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    if top_k is not None and metric != "pearson_r":
        raise ValueError(f"top_k applies to metric='pearson_r' only, got metric={metric!r}")

    if metric == "pearson_r":
        return make_scorer(mean_pearson_per_gene, top_k=top_k)
    if metric == "crps_gaussian":
        return _negative_crps_gaussian
    normalize = {"rmse": None, "rmse_over_mean": "mean", "rmse_over_iqr": "iqr"}[metric]
    return make_scorer(mean_rmse_per_gene, greater_is_better=False, normalize=normalize)


# Mean per-gene Pearson r over all genes (constant genes count as 0).
gene_pearson_scorer = make_gene_scorer("pearson_r")
