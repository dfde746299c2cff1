"""Per-gene point-prediction metrics as the expression-prediction field reports them."""

import logging

import numpy as np
import pandas as pd
from scipy import special, stats
from sklearn.utils.validation import check_array

logger = logging.getLogger(__name__)

# Top-k sizes reported by the expression-from-histology literature.
DEFAULT_TOP_K = (20, 50, 100, 200, 500, 1000)


def check_gene_matrices(Y_true, Y_pred, *, names=("Y_true", "Y_pred")):
    """Validate two target matrices and return them as float64 2-D arrays.

    A 1-D array is read as one gene. The error for a shape mismatch shows
    both shapes.
    """
    arrays = []
    for array, name in zip((Y_true, Y_pred), names):
        array = check_array(array, ensure_2d=False, dtype=np.float64, input_name=name)
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape (n_samples, n_genes), "
            f"got {names[0]} {arrays[0].shape} and {names[1]} {arrays[1].shape}"
        )
    return arrays[0], arrays[1]


def pearson_per_gene(Y_true, Y_pred, *, return_pvalue=False):
    """Compute the Pearson correlation of each gene across samples.

    A gene that is constant in ``Y_true`` or in ``Y_pred`` gets r = 0 and
    p = 1, without a warning, because such a prediction carries no ranking
    information. Otherwise the values equal ``scipy.stats.pearsonr`` (with
    its two-sided p-value) column by column.

    Parameters
    ----------
    Y_true : array-like of shape (n_samples, n_genes) or (n_samples,)
        Measured expression.
    Y_pred : array-like of the same shape
        Predicted expression.
    return_pvalue : bool, default=False
        Also return the two-sided p-value of each r.

    Returns
    -------
    r : ndarray of shape (n_genes,)
    pvalue : ndarray of shape (n_genes,)
        Only when ``return_pvalue=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from skrnafm.metrics import pearson_per_gene
    >>> Y = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    >>> pearson_per_gene(Y, Y * 2)
    array([1., 0.])
    """
    Y_true, Y_pred = check_gene_matrices(Y_true, Y_pred)
    n_samples = Y_true.shape[0]
    if n_samples < 2:
        raise ValueError(
            f"Pearson r needs at least 2 samples per gene, got {n_samples}; "
            "evaluate on more samples"
        )

    # Exact equality, as scipy uses it to call an input constant.
    constant = np.all(Y_true == Y_true[0], axis=0) | np.all(Y_pred == Y_pred[0], axis=0)

    centred_true = Y_true - Y_true.mean(axis=0)
    centred_pred = Y_pred - Y_pred.mean(axis=0)
    norm_true = np.linalg.norm(centred_true, axis=0)
    norm_pred = np.linalg.norm(centred_pred, axis=0)
    constant |= (norm_true == 0) | (norm_pred == 0)

    safe_true = np.where(constant, 1.0, norm_true)
    safe_pred = np.where(constant, 1.0, norm_pred)
    r = np.einsum("ij,ij->j", centred_true / safe_true, centred_pred / safe_pred)
    r = np.clip(r, -1.0, 1.0)
    r[constant] = 0.0

    if not return_pvalue:
        return r
    return r, _pearson_pvalue(r, n_samples, constant)


def _pearson_pvalue(r, n_samples, constant):
    if n_samples == 2:
        # Two points always lie on a line: r is +-1 and carries no evidence.
        return np.ones_like(r)
    # Two-sided p of the t test of r, written as a regularized incomplete beta
    # function: p = I_{1 - r^2}((n - 2) / 2, 1 / 2).
    dof_half = (n_samples - 2) / 2.0
    pvalue = special.betainc(dof_half, 0.5, np.clip(1.0 - r * r, 0.0, 1.0))
    pvalue[constant] = 1.0
    return pvalue


def fdr_bh(pvalues):
    """Adjust p-values with the Benjamini–Hochberg false discovery rate.

    Equal to ``scipy.stats.false_discovery_control(pvalues, method="bh")``.

    Parameters
    ----------
    pvalues : array-like of shape (n_tests,)
        p-values in [0, 1].

    Returns
    -------
    qvalues : ndarray of shape (n_tests,)
    """
    pvalues = check_array(pvalues, ensure_2d=False, dtype=np.float64, input_name="pvalues")
    if pvalues.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {pvalues.shape}")
    if pvalues.size == 0:
        return pvalues.copy()
    if pvalues.min() < 0 or pvalues.max() > 1:
        raise ValueError(
            f"pvalues must lie in [0, 1], got values from {pvalues.min()!r} to {pvalues.max()!r}"
        )
    return stats.false_discovery_control(pvalues, method="bh")


def rmse_per_gene(Y_true, Y_pred):
    """Compute the root-mean-squared error of each gene, shape (n_genes,)."""
    Y_true, Y_pred = check_gene_matrices(Y_true, Y_pred)
    return np.sqrt(np.mean((Y_true - Y_pred) ** 2, axis=0))


def _safe_ratio(numerator, denominator):
    ratio = np.full_like(numerator, np.nan)
    defined = denominator != 0
    ratio[defined] = numerator[defined] / denominator[defined]
    return ratio


def gene_metrics_table(
    Y_true, Y_pred, *, gene_names=None, Y_std=None, interval_level=0.9
):
    """Compute one row of metrics per gene.

    Parameters
    ----------
    Y_true : array-like of shape (n_samples, n_genes)
        Measured expression, on the scale the errors should be read in
        (for example log2(TPM + 1)).
    Y_pred : array-like of shape (n_samples, n_genes)
        Predicted expression (the predictive mean for a probabilistic model).
    gene_names : sequence of str, default=None
        Index of the table. ``gene0, gene1, ...`` when None.
    Y_std : array-like of shape (n_samples, n_genes), default=None
        Predictive standard deviation. Adds the coverage and mean width of
        the central Gaussian interval ``Y_pred +- z * Y_std`` at
        ``interval_level``.
    interval_level : float, default=0.9
        Nominal level of that interval.

    Returns
    -------
    table : pandas.DataFrame
        One row per gene with columns ``pearson_r`` (0 for a constant gene),
        ``p_value``, ``q_value`` (Benjamini–Hochberg over all genes),
        ``rmse``, ``mean_true``, ``rmse_over_mean``, ``iqr_true``,
        ``rmse_over_iqr`` and ``constant`` (True when the gene is constant in
        the truth or the prediction). The two ratios are NaN where the mean
        or the IQR is 0, because they are undefined there. With ``Y_std``,
        ``coverage`` and ``interval_width`` are added.
    """
    Y_true, Y_pred = check_gene_matrices(Y_true, Y_pred)
    n_genes = Y_true.shape[1]
    gene_index = _gene_index(gene_names, n_genes)

    r, pvalue = pearson_per_gene(Y_true, Y_pred, return_pvalue=True)
    constant = np.all(Y_true == Y_true[0], axis=0) | np.all(Y_pred == Y_pred[0], axis=0)
    rmse = rmse_per_gene(Y_true, Y_pred)
    mean_true = Y_true.mean(axis=0)
    q75, q25 = np.percentile(Y_true, [75, 25], axis=0)
    iqr_true = q75 - q25

    table = pd.DataFrame(
        {
            "pearson_r": r,
            "p_value": pvalue,
            "q_value": fdr_bh(pvalue),
            "rmse": rmse,
            "mean_true": mean_true,
            "rmse_over_mean": _safe_ratio(rmse, mean_true),
            "iqr_true": iqr_true,
            "rmse_over_iqr": _safe_ratio(rmse, iqr_true),
            "constant": constant,
        },
        index=gene_index,
    )

    if Y_std is not None:
        from ._probabilistic import gaussian_interval, interval_coverage

        _, Y_std = check_gene_matrices(Y_true, Y_std, names=("Y_true", "Y_std"))
        lower, upper = gaussian_interval(Y_pred, Y_std, level=interval_level)
        coverage, width = interval_coverage(Y_true, lower, upper, multioutput="raw_values")
        table["coverage"] = coverage
        table["interval_width"] = width
    return table


def _gene_index(gene_names, n_genes):
    if gene_names is None:
        return pd.Index([f"gene{i}" for i in range(n_genes)], name="gene")
    names = [str(name) for name in gene_names]
    if len(names) != n_genes:
        raise ValueError(
            f"gene_names has {len(names)} entries but there are {n_genes} genes; "
            "pass one name per column"
        )
    return pd.Index(names, name="gene")


def top_k_summary(scores, *, ranking_scores=None, k=None):
    """Summarize per-gene r as the mean over all genes and over the top-k genes.

    Two rankings are reported side by side:

    * ``mean_r_test_ranked``: the top-k genes by their own test r, as the
      field reports it. It is optimistic, because the test data choose the
      genes.
    * ``mean_r_honest``: the top-k genes chosen by ``ranking_scores``, which
      must come from training data only (for example an estimator's
      ``gene_validation_score_``), then scored by their test r.

    Constant genes count with r = 0 in every mean.

    Parameters
    ----------
    scores : array-like of shape (n_genes,) or pandas.DataFrame
        Test Pearson r per gene, or a table from :func:`gene_metrics_table`
        (its ``pearson_r`` column is used).
    ranking_scores : array-like of shape (n_genes,), default=None
        Training-only gene scores, higher is better. NaN ranks last, and
        all-NaN scores (a model fitted without a validation split) give NaN
        honest top-k values. Without it the ``mean_r_honest`` column is
        left out.
    k : int or sequence of int, default=None
        Top-k sizes. None uses (20, 50, 100, 200, 500, 1000) and silently
        skips sizes above the number of genes. An explicit ``k`` larger than
        the number of genes raises ValueError, because a "top 1000" over
        fewer genes would be mislabelled.

    Returns
    -------
    summary : pandas.DataFrame
        Indexed by ``"all"`` then ``"top20"``, ``"top50"``, ...; columns
        ``n_genes`` (genes averaged), ``mean_r_test_ranked`` and, with
        ``ranking_scores``, ``mean_r_honest``.

    Examples
    --------
    >>> import numpy as np
    >>> from skrnafm.metrics import top_k_summary
    >>> top_k_summary(np.array([0.9, 0.1, 0.5]), ranking_scores=[0.0, 1.0, 0.5], k=1)
          n_genes  mean_r_test_ranked  mean_r_honest
    all         3                 0.5            0.5
    top1        1                 0.9            0.1
    """
    if isinstance(scores, pd.DataFrame):
        scores = scores["pearson_r"].to_numpy()
    scores = check_array(scores, ensure_2d=False, dtype=np.float64, input_name="scores")
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D (one r per gene), got shape {scores.shape}")
    n_genes = scores.size
    ks = _check_top_k(k, n_genes)

    test_order = np.argsort(-scores, kind="stable")
    rows = {"all": {"n_genes": n_genes, "mean_r_test_ranked": scores.mean()}}
    for size in ks:
        rows[f"top{size}"] = {
            "n_genes": size,
            "mean_r_test_ranked": scores[test_order[:size]].mean(),
        }

    if ranking_scores is not None:
        honest_order = _ranking_order(ranking_scores, n_genes)
        rows["all"]["mean_r_honest"] = scores.mean()
        for size in ks:
            if honest_order is None:
                rows[f"top{size}"]["mean_r_honest"] = np.nan
            else:
                rows[f"top{size}"]["mean_r_honest"] = scores[honest_order[:size]].mean()

    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary["n_genes"] = summary["n_genes"].astype(np.int64)
    return summary


def _check_top_k(k, n_genes):
    if k is None:
        return [size for size in DEFAULT_TOP_K if size <= n_genes]
    ks = [k] if np.isscalar(k) else list(k)
    for size in ks:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"k must contain positive integers, got {size!r}")
        if size > n_genes:
            raise ValueError(
                f"k={size} is larger than the number of genes ({n_genes}); pass "
                "smaller k values or k=None to use the default sizes that fit"
            )
    return [int(size) for size in ks]


def _ranking_order(ranking_scores, n_genes):
    ranking = np.asarray(ranking_scores, dtype=np.float64).reshape(-1)
    if ranking.size != n_genes:
        raise ValueError(
            f"ranking_scores has {ranking.size} entries but scores has {n_genes}; "
            "pass one training-data score per gene"
        )
    if np.isnan(ranking).all():
        # No gene was scored (e.g. a model fitted without a validation split).
        return None
    ranking = np.where(np.isnan(ranking), -np.inf, ranking)
    return np.argsort(-ranking, kind="stable")


def mean_pearson_per_gene(Y_true, Y_pred, *, top_k=None):
    """Return the mean per-gene Pearson r, over all genes or the test-ranked top k.

    Constant genes count as r = 0. This is the score behind
    :data:`gene_pearson_scorer`.
    """
    r = pearson_per_gene(Y_true, Y_pred)
    if top_k is None:
        return float(r.mean())
    (size,) = _check_top_k(top_k, r.size)
    return float(np.sort(r)[::-1][:size].mean())

