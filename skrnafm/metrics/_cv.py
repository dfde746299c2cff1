"""Out-of-fold per-gene predictions for patient-grouped cross-validation."""

import inspect
import logging
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, ShuffleSplit, check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.validation import check_array

from ._gene import gene_metrics_table, pearson_per_gene, top_k_summary

logger = logging.getLogger(__name__)

_RANKINGS = ("auto", "validation_score", "inner_split", None)

# Fraction of a training fold held out to rank genes when the estimator has
# no gene_validation_score_.
_INNER_TEST_SIZE = 0.2


@dataclass
class GeneCVResult:
    """Out-of-fold predictions and per-gene metrics of one cross-validation.

    Attributes
    ----------
    predictions : ndarray of shape (n_samples, n_genes)
        Prediction for each sample by the model whose training fold left it
        out.
    std : ndarray of shape (n_samples, n_genes) or None
        Predictive standard deviation, when the estimator supports
        ``predict(X, return_std=True)``.
    table : pandas.DataFrame
        :func:`gene_metrics_table` of the pooled out-of-fold predictions.
    summary : pandas.DataFrame or None
        :func:`top_k_summary` computed in each test fold and averaged over
        folds; ``mean_r_honest`` ranks genes with training-fold data only.
        None when a test fold has fewer than 3 samples, where a per-fold r
        means little.
    test_fold : ndarray of int64, shape (n_samples,)
        Index of the fold in which each sample was predicted.
    ranking_scores : list of ndarray or None
        Per fold, the training-only gene scores used for the honest ranking.
    """

    predictions: np.ndarray
    std: np.ndarray
    table: pd.DataFrame
    summary: pd.DataFrame
    test_fold: np.ndarray
    ranking_scores: list


def cross_val_predict_genes(
    estimator,
    X,
    Y,
    groups=None,
    cv=5,
    *,
    gene_names=None,
    return_std="auto",
    ranking="auto",
    n_jobs=None,
    random_state=0,
    verbose=0,
):
    """Cross-validate a gene-expression regressor and score every gene.

    Each sample is predicted by a clone fitted without its fold. With
    ``groups`` (patient ids) and an integer ``cv``, folds are
    :class:`~sklearn.model_selection.GroupKFold` folds, so the slides of
    one patient never straddle training and test.

    Parameters
    ----------
    estimator : estimator
        Regressor (or pipeline ending in one) with a multi-output ``predict``.
    X : array-like or list of length n_samples
        Features, or whatever the pipeline's first step accepts (such as
        slide paths).
    Y : array-like of shape (n_samples, n_genes)
        Targets. A DataFrame's columns give the gene names.
    groups : array-like of shape (n_samples,), default=None
        Group (patient) of each sample. Also passed to ``fit`` of an
        estimator whose ``fit`` accepts ``groups``, for a grouped inner
        validation split.
    cv : int, cross-validation splitter or iterable, default=5
        Test folds must partition the samples.
    gene_names : sequence of str, default=None
        Gene names for the table; taken from ``Y.columns`` when None.
    return_std : "auto" or bool, default="auto"
        Request ``predict(X, return_std=True)``. "auto" does so when the
        final estimator's ``predict`` has a ``return_std`` parameter.
    ranking : {"auto", "validation_score", "inner_split", None}, default="auto"
        Training-only gene ranking for the honest top-k summary.
        "validation_score" reads the fitted ``gene_validation_score_``.
        "inner_split" fits one more clone on 80% of the training fold
        (grouped when ``groups`` is given) and ranks genes by its r on the
        other 20%. "auto" uses the validation score when the fitted
        estimator has one that is not all NaN, else the inner split. None skips the honest
        summary.
    n_jobs : int, default=None
        Folds fitted in parallel (joblib).
    random_state : int, RandomState instance or None, default=0
        Seed of the inner split.
    verbose : int, default=0
        joblib verbosity.

    Returns
    -------
    result : GeneCVResult
    """
    Y_frame_columns = list(Y.columns) if isinstance(Y, pd.DataFrame) else None
    Y = check_array(Y, ensure_2d=False, dtype=np.float64, input_name="Y")
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if gene_names is None:
        gene_names = Y_frame_columns
    n_samples = Y.shape[0]
    if ranking not in _RANKINGS:
        raise ValueError(f"ranking must be one of {_RANKINGS}, got {ranking!r}")
    if return_std not in ("auto", True, False):
        raise ValueError(f"return_std must be 'auto', True or False, got {return_std!r}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape[0] != n_samples:
            raise ValueError(
                f"groups has {groups.shape[0]} entries but Y has {n_samples} samples"
            )

    want_std = _supports_return_std(estimator) if return_std == "auto" else return_std
    splits = _make_splits(cv, X, Y, groups, n_samples)

    rng = check_random_state(random_state)
    seeds = rng.randint(np.iinfo(np.int32).max, size=len(splits))
    fold_results = Parallel(n_jobs=n_jobs, verbose=verbose)(
        delayed(_fit_and_predict_fold)(
            clone(estimator), X, Y, groups, train, test, want_std, ranking, seed
        )
        for (train, test), seed in zip(splits, seeds)
    )

    predictions = np.empty_like(Y)
    std = np.empty_like(Y) if want_std else None
    test_fold = np.empty(n_samples, dtype=np.int64)
    ranking_scores = []
    for fold, ((_, test), (fold_pred, fold_std, fold_ranking)) in enumerate(
        zip(splits, fold_results)
    ):
        predictions[test] = fold_pred
        if want_std:
            std[test] = fold_std
        test_fold[test] = fold
        ranking_scores.append(fold_ranking)

    table = gene_metrics_table(Y, predictions, gene_names=gene_names, Y_std=std)
    summary = _fold_summary(Y, predictions, splits, ranking_scores)
    has_ranking = all(scores is not None for scores in ranking_scores)
    return GeneCVResult(
        predictions,
        std,
        table,
        summary,
        test_fold,
        ranking_scores if has_ranking else None,
    )


def _make_splits(cv, X, Y, groups, n_samples):
    if groups is not None and (cv is None or isinstance(cv, Integral)):
        cv = GroupKFold(n_splits=5 if cv is None else cv)
    splitter = check_cv(cv, Y, classifier=False)
    splits = [(np.asarray(train), np.asarray(test)) for train, test in splitter.split(X, Y, groups)]

    counts = np.zeros(n_samples, dtype=np.int64)
    for _, test in splits:
        counts[test] += 1
    if np.any(counts != 1):
        raise ValueError(
            "cross_val_predict_genes needs test folds that partition the samples: "
            f"{int(np.sum(counts == 0))} sample(s) are never tested and "
            f"{int(np.sum(counts > 1))} are tested more than once; use a KFold-like splitter"
        )
    if groups is not None:
        for fold, (train, test) in enumerate(splits):
            shared = np.intersect1d(groups[train], groups[test])
            if shared.size:
                logger.warning(
                    "fold %d has %d group(s) in both training and test, e.g. %r; use a "
                    "grouped splitter such as GroupKFold",
                    fold,
                    shared.size,
                    shared[0],
                )
    return splits


def _final_estimator(estimator):
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def _supports_return_std(estimator):
    predict = getattr(_final_estimator(estimator), "predict", None)
    if predict is None:
        return False
    return "return_std" in inspect.signature(predict).parameters


def _fit_params(estimator, groups):
    if groups is None:
        return {}
    final = _final_estimator(estimator)
    if "groups" not in inspect.signature(final.fit).parameters:
        return {}
    if isinstance(estimator, Pipeline):
        return {f"{estimator.steps[-1][0]}__groups": groups}
    return {"groups": groups}


def _fit(estimator, X, Y, groups, indices):
    X_part = _safe_indexing(X, indices)
    groups_part = None if groups is None else groups[indices]
    estimator.fit(X_part, Y[indices], **_fit_params(estimator, groups_part))
    return estimator


def _predict(estimator, X, want_std):
    n_rows = X.shape[0] if hasattr(X, "shape") else len(X)
    if want_std:
        mean, std = estimator.predict(X, return_std=True)
        return np.asarray(mean).reshape(n_rows, -1), np.asarray(std).reshape(n_rows, -1)
    return np.asarray(estimator.predict(X)).reshape(n_rows, -1), None


def _fit_and_predict_fold(estimator, X, Y, groups, train, test, want_std, ranking, seed):
    _fit(estimator, X, Y, groups, train)
    X_test = _safe_indexing(X, test)
    fold_pred, fold_std = _predict(estimator, X_test, want_std)
    fold_ranking = _training_ranking(estimator, X, Y, groups, train, ranking, seed)
    return fold_pred, fold_std, fold_ranking


def _training_ranking(estimator, X, Y, groups, train, ranking, seed):
    if ranking is None:
        return None
    validation_score = getattr(_final_estimator(estimator), "gene_validation_score_", None)
    if validation_score is not None:
        validation_score = np.asarray(validation_score, dtype=np.float64)
        if np.isnan(validation_score).all():
            # Fitted without a validation split: no gene was scored.
            validation_score = None
    if ranking in ("auto", "validation_score") and validation_score is not None:
        return validation_score
    if ranking == "validation_score":
        raise ValueError(
            f"{type(_final_estimator(estimator)).__name__} has no usable "
            "gene_validation_score_ after fit (missing or all NaN); use "
            "ranking='inner_split' or 'auto'"
        )

    train_groups = None if groups is None else groups[train]
    if train_groups is not None and np.unique(train_groups).size < 2:
        logger.info("training fold has one group; no inner split to rank genes")
        return None
    if train_groups is None:
        splitter = ShuffleSplit(n_splits=1, test_size=_INNER_TEST_SIZE, random_state=seed)
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=_INNER_TEST_SIZE, random_state=seed)
    inner_train, inner_test = next(splitter.split(train, groups=train_groups))
    if inner_test.size < 3:
        logger.info("inner split has %d samples; too few to rank genes", inner_test.size)
        return None

    inner = clone(estimator)
    _fit(inner, X, Y, groups, train[inner_train])
    inner_pred, _ = _predict(inner, _safe_indexing(X, train[inner_test]), False)
    return pearson_per_gene(Y[train[inner_test]], inner_pred)


def _fold_summary(Y, predictions, splits, ranking_scores):
    if min(test.size for _, test in splits) < 3:
        logger.info("a test fold has fewer than 3 samples; no per-fold top-k summary")
        return None

    has_ranking = all(scores is not None for scores in ranking_scores)
    summaries = []
    for (_, test), scores in zip(splits, ranking_scores):
        fold_r = pearson_per_gene(Y[test], predictions[test])
        summaries.append(
            top_k_summary(fold_r, ranking_scores=scores if has_ranking else None)
        )
    summary = sum(summaries[1:], summaries[0]) / len(summaries)
    summary["n_genes"] = summary["n_genes"].round().astype(np.int64)
    return summary
