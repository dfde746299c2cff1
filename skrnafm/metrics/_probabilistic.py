"""Metrics of predictive distributions: interval coverage and CRPS."""

import numpy as np
from scipy import stats
from sklearn.utils.validation import check_array

from ._gene import check_gene_matrices

# Elements of the draws array handled at once by crps_ensemble (about 128 MiB
# of float64), so that genome-wide sample sets do not need a sorted full copy.
_CRPS_CHUNK_ELEMENTS = 1 << 24

_MULTIOUTPUT = ("uniform_average", "raw_values")


def _check_multioutput(multioutput):
    if multioutput not in _MULTIOUTPUT:
        raise ValueError(
            f"multioutput must be one of {_MULTIOUTPUT}, got {multioutput!r}"
        )


def _check_level(level):
    if not isinstance(level, (float, int, np.floating)) or not 0 < level < 1:
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")


def gaussian_interval(mean, std, level=0.9):
    """Return the central interval of a Gaussian with the given mean and std.

    Parameters
    ----------
    mean, std : array-like of the same shape
        Predictive mean and standard deviation (``std >= 0``).
    level : float, default=0.9
        Probability mass inside the interval.

    Returns
    -------
    lower, upper : ndarray
    """
    _check_level(level)
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    if mean.shape != std.shape:
        raise ValueError(
            f"mean and std must have the same shape, got mean {mean.shape} and std {std.shape}"
        )
    if np.any(std < 0):
        raise ValueError("std must be non-negative; got negative values")
    half_width = stats.norm.ppf(0.5 + level / 2.0) * std
    return mean - half_width, mean + half_width


def sample_interval(samples, level=0.9, *, axis=0):
    """Return the central empirical interval of predictive draws.

    Parameters
    ----------
    samples : array-like
        Draws from the predictive distribution, the draws along ``axis``
        (for example shape (n_draws, n_samples, n_genes) with ``axis=0``).
    level : float, default=0.9
        Probability mass inside the interval.
    axis : int, default=0
        Axis of the draws.

    Returns
    -------
    lower, upper : ndarray
        The (1 - level) / 2 and (1 + level) / 2 quantiles, with ``axis``
        removed.
    """
    _check_level(level)
    samples = np.asarray(samples, dtype=np.float64)
    lower, upper = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return lower, upper


def interval_coverage(Y_true, lower, upper, *, multioutput="uniform_average"):
    """Compute the fraction of true values inside the intervals and their mean width.

    Parameters
    ----------
    Y_true : array-like of shape (n_samples, n_genes)
        Measured values.
    lower, upper : array-like of shape (n_samples, n_genes)
        Interval bounds, ``lower <= upper``. The bounds count as inside.
    multioutput : {"uniform_average", "raw_values"}, default="uniform_average"
        Average over genes, or return one value per gene.

    Returns
    -------
    coverage : float or ndarray of shape (n_genes,)
    mean_width : float or ndarray of shape (n_genes,)

    Examples
    --------
    >>> from skrnafm.metrics import interval_coverage
    >>> interval_coverage([[0.0], [2.0]], [[-1.0], [-1.0]], [[1.0], [1.0]])
    (0.5, 2.0)
    """
    _check_multioutput(multioutput)
    Y_true, lower = check_gene_matrices(Y_true, lower, names=("Y_true", "lower"))
    _, upper = check_gene_matrices(Y_true, upper, names=("Y_true", "upper"))
    if np.any(lower > upper):
        n_bad = int(np.sum(lower > upper))
        raise ValueError(
            f"lower must not exceed upper; {n_bad} interval(s) have lower > upper"
        )

    inside = (Y_true >= lower) & (Y_true <= upper)
    coverage = inside.mean(axis=0)
    width = (upper - lower).mean(axis=0)
    if multioutput == "raw_values":
        return coverage, width
    return float(coverage.mean()), float(width.mean())


def crps_ensemble(Y_true, samples, *, axis=0, fair=True, multioutput="uniform_average"):
    r"""Compute the continuous ranked probability score of predictive draws.

    For m draws :math:`x_1..x_m` of one value :math:`y`,

    .. math::

        \mathrm{CRPS} = \frac{1}{m}\sum_i |x_i - y|
            - \frac{1}{2\,m(m - c)}\sum_{i,j} |x_i - x_j|

    with :math:`c = 1` for the fair (unbiased) estimator, the default, and
    :math:`c = 0` for the standard one, which is the CRPS of the empirical
    distribution of the draws. The fair estimator's expectation equals the
    CRPS of the distribution the draws come from, for any m >= 2. Lower is
    better. The pairwise sum is computed from sorted draws in
    O(m log m) time.

    Parameters
    ----------
    Y_true : array-like of shape (n_samples, n_genes)
        Measured values.
    samples : array-like
        Predictive draws, shape (n_draws, n_samples, n_genes) with the draws
        on ``axis``.
    axis : int, default=0
        Axis of ``samples`` that indexes the draws.
    fair : bool, default=True
        Use the fair estimator; ``False`` uses the standard one.
    multioutput : {"uniform_average", "raw_values"}, default="uniform_average"
        Average over samples and genes, or return the mean over samples per
        gene.

    Returns
    -------
    crps : float or ndarray of shape (n_genes,)
    """
    _check_multioutput(multioutput)
    Y_true = check_array(Y_true, ensure_2d=False, dtype=np.float64, input_name="Y_true")
    samples = np.asarray(samples, dtype=np.float64)
    if Y_true.ndim == 1:
        # One gene: draws of shape (n_draws, n_samples) get a gene axis.
        Y_true = Y_true.reshape(-1, 1)
        if samples.ndim == 2:
            samples = samples[..., np.newaxis]
    if samples.ndim != 3:
        raise ValueError(
            "samples must have shape (n_draws, n_samples, n_genes) with the draws on "
            f"axis={axis}, got shape {samples.shape}"
        )
    samples = np.moveaxis(samples, axis, 0)
    if samples.shape[1:] != Y_true.shape:
        raise ValueError(
            f"samples without the draws axis must match Y_true: got samples "
            f"{samples.shape[1:]} (draws on axis {axis}) and Y_true {Y_true.shape}"
        )
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples contains NaN or infinity; check the predictive draws")
    n_draws = samples.shape[0]
    if fair and n_draws < 2:
        raise ValueError(
            f"the fair CRPS needs at least 2 draws, got {n_draws}; draw more or pass fair=False"
        )

    n_genes = Y_true.shape[1]
    per_gene = np.empty(n_genes)
    chunk = max(1, _CRPS_CHUNK_ELEMENTS // max(1, n_draws * Y_true.shape[0]))
    denominator = 2.0 * n_draws * (n_draws - 1 if fair else n_draws)
    weights = 2.0 * np.arange(1, n_draws + 1) - n_draws - 1
    for start in range(0, n_genes, chunk):
        stop = min(start + chunk, n_genes)
        draws = samples[:, :, start:stop]
        absolute_error = np.abs(draws - Y_true[np.newaxis, :, start:stop]).mean(axis=0)
        # sum_{i,j} |x_i - x_j| = 2 * sum_i (2i - m - 1) x_(i) over sorted draws.
        pair_sum = 2.0 * np.tensordot(weights, np.sort(draws, axis=0), axes=(0, 0))
        per_gene[start:stop] = (absolute_error - pair_sum / denominator).mean(axis=0)

    if multioutput == "raw_values":
        return per_gene
    return float(per_gene.mean())


def crps_gaussian(Y_true, mean, std, *, multioutput="uniform_average"):
    """Compute the closed-form CRPS of Gaussian predictive distributions.

    Uses CRPS(N(mu, s^2), y) = s * (z * (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))
    with z = (y - mu) / s. A zero ``std`` gives the absolute error.

    Parameters
    ----------
    Y_true, mean, std : array-like of shape (n_samples, n_genes)
        Measured values, predictive means and standard deviations.
    multioutput : {"uniform_average", "raw_values"}, default="uniform_average"

    Returns
    -------
    crps : float or ndarray of shape (n_genes,)
    """
    _check_multioutput(multioutput)
    Y_true, mean = check_gene_matrices(Y_true, mean, names=("Y_true", "mean"))
    _, std = check_gene_matrices(Y_true, std, names=("Y_true", "std"))
    if np.any(std < 0):
        raise ValueError("std must be non-negative; got negative values")

    positive = std > 0
    safe_std = np.where(positive, std, 1.0)
    z = (Y_true - mean) / safe_std
    crps = safe_std * (
        z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi)
    )
    crps = np.where(positive, crps, np.abs(Y_true - mean))
    per_gene = crps.mean(axis=0)
    if multioutput == "raw_values":
        return per_gene
    return float(per_gene.mean())
