"""Tests for skrnafm.metrics: per-gene metrics, summaries, scorers and CV."""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skrnafm.metrics import (
    DEFAULT_TOP_K,
    crps_ensemble,
    crps_gaussian,
    cross_val_predict_genes,
    fdr_bh,
    gaussian_interval,
    gene_metrics_table,
    gene_pearson_scorer,
    interval_coverage,
    make_gene_scorer,
    mean_pearson_per_gene,
    pearson_per_gene,
    sample_interval,
    top_k_summary,
)


@pytest.fixture
def paired():
    """Random truth and prediction with two constant genes (one per side)."""
    rng = np.random.default_rng(0)
    Y_true = rng.normal(size=(25, 40))
    Y_pred = 0.5 * Y_true + rng.normal(size=(25, 40))
    Y_true[:, 3] = 2.5
    Y_pred[:, 7] = -1.0
    return Y_true, Y_pred


def _cohort(n_patients=12, slides_per_patient=2, n_features=6, n_genes=8, seed=0):
    rng = np.random.default_rng(seed)
    n = n_patients * slides_per_patient
    X = rng.normal(size=(n, n_features))
    weights = rng.normal(size=(n_features, n_genes))
    Y = X @ weights + 0.5 * rng.normal(size=(n, n_genes))
    groups = np.repeat(np.arange(n_patients), slides_per_patient)
    return X, Y, groups


# --- pearson_per_gene and fdr_bh ------------------------------------------


def test_pearson_matches_scipy(paired):
    Y_true, Y_pred = paired

    r, p = pearson_per_gene(Y_true, Y_pred, return_pvalue=True)

    for gene in range(Y_true.shape[1]):
        if gene in (3, 7):
            continue
        expected = stats.pearsonr(Y_true[:, gene], Y_pred[:, gene])
        assert r[gene] == pytest.approx(expected.statistic, abs=1e-12)
        assert p[gene] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_pearson_constant_genes_zero_without_warning(paired):
    Y_true, Y_pred = paired

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r, p = pearson_per_gene(Y_true, Y_pred, return_pvalue=True)

    assert r[3] == 0.0
    assert r[7] == 0.0
    assert p[3] == 1.0
    assert p[7] == 1.0
    assert not np.isnan(r).any()


def test_pearson_one_dimensional_is_one_gene():
    r = pearson_per_gene([1.0, 2.0, 4.0], [1.0, 3.0, 2.0])

    assert r.shape == (1,)
    assert r[0] == pytest.approx(stats.pearsonr([1, 2, 4], [1, 3, 2]).statistic)


def test_pearson_two_samples_pvalue_one():
    r, p = pearson_per_gene([[0.0], [1.0]], [[2.0], [5.0]], return_pvalue=True)

    assert r[0] == 1.0
    assert p[0] == 1.0


def test_pearson_shape_mismatch_shows_both():
    with pytest.raises(ValueError, match=r"Y_true \(4, 3\) and Y_pred \(4, 2\)"):
        pearson_per_gene(np.zeros((4, 3)), np.zeros((4, 2)))


def test_pearson_one_sample_raises():
    with pytest.raises(ValueError, match="at least 2 samples"):
        pearson_per_gene(np.zeros((1, 3)), np.zeros((1, 3)))


def test_pearson_rejects_nan():
    Y = np.ones((3, 2))
    Y[0, 0] = np.nan

    with pytest.raises(ValueError, match="NaN"):
        pearson_per_gene(Y, np.ones((3, 2)))


def test_fdr_matches_scipy(paired):
    _, p = pearson_per_gene(*paired, return_pvalue=True)

    np.testing.assert_allclose(fdr_bh(p), stats.false_discovery_control(p, method="bh"))


def test_fdr_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fdr_bh([0.1, 1.5])


# --- gene_metrics_table ------------------------------------------------------


def test_table_columns_and_values(paired):
    Y_true, Y_pred = paired

    table = gene_metrics_table(Y_true, Y_pred)

    assert list(table.columns) == [
        "pearson_r", "p_value", "q_value", "rmse", "mean_true",
        "rmse_over_mean", "iqr_true", "rmse_over_iqr", "constant",
    ]
    assert table.index[0] == "gene0"
    np.testing.assert_allclose(table["rmse"], np.sqrt(((Y_true - Y_pred) ** 2).mean(axis=0)))
    np.testing.assert_allclose(table["rmse_over_mean"], table["rmse"] / Y_true.mean(axis=0))
    assert table["constant"].sum() == 2


def test_table_constant_gene_not_nan(paired):
    table = gene_metrics_table(*paired)

    assert table.loc["gene3", "pearson_r"] == 0.0
    assert table.loc["gene3", "q_value"] == 1.0
    assert np.isnan(table.loc["gene3", "rmse_over_iqr"])


def test_table_gene_names_and_intervals(paired):
    Y_true, Y_pred = paired
    names = [f"G{i}" for i in range(Y_true.shape[1])]

    table = gene_metrics_table(Y_true, Y_pred, gene_names=names, Y_std=np.ones_like(Y_pred))

    assert table.index[5] == "G5"
    assert "coverage" in table
    np.testing.assert_allclose(table["interval_width"], 2 * stats.norm.ppf(0.95))


def test_table_gene_names_length_mismatch():
    with pytest.raises(ValueError, match="gene_names has 1 entries but there are 2 genes"):
        gene_metrics_table(np.eye(3)[:, :2], np.eye(3)[:, :2], gene_names=["A"])


# --- top_k_summary -------------------------------------------------------------


def test_top_k_default_sizes_fit_gene_count():
    r = np.linspace(-1, 1, 300)

    summary = top_k_summary(r)

    assert list(summary.index) == ["all", "top20", "top50", "top100", "top200"]
    assert summary.loc["top20", "mean_r_test_ranked"] == pytest.approx(np.sort(r)[-20:].mean())
    assert "mean_r_honest" not in summary


def test_top_k_default_sizes():
    summary = top_k_summary(np.zeros(5000))

    assert summary["n_genes"].tolist() == [5000, *DEFAULT_TOP_K]


def test_top_k_explicit_too_large_raises():
    with pytest.raises(ValueError, match=r"k=50 is larger than the number of genes \(10\)"):
        top_k_summary(np.zeros(10), k=[5, 50])


def test_top_k_honest_uses_ranking():
    r = np.array([0.9, 0.8, 0.1, 0.0])
    training = np.array([0.0, np.nan, 1.0, 0.5])

    summary = top_k_summary(r, ranking_scores=training, k=[1, 2])

    assert summary.loc["top1", "mean_r_honest"] == pytest.approx(0.1)
    assert summary.loc["top2", "mean_r_honest"] == pytest.approx(0.05)
    assert summary.loc["top2", "mean_r_test_ranked"] == pytest.approx(0.85)


def test_top_k_all_nan_ranking_gives_nan_honest():
    summary = top_k_summary(np.array([0.9, 0.1, 0.5]), ranking_scores=np.full(3, np.nan), k=1)

    assert np.isnan(summary.loc["top1", "mean_r_honest"])
    assert summary.loc["top1", "mean_r_test_ranked"] == pytest.approx(0.9)


def test_top_k_counts_constant_genes(paired):
    table = gene_metrics_table(*paired)

    summary = top_k_summary(table, k=[])

    assert summary.loc["all", "n_genes"] == 40
    assert summary.loc["all", "mean_r_test_ranked"] == pytest.approx(table["pearson_r"].mean())


def test_top_k_ranking_length_mismatch():
    with pytest.raises(ValueError, match="ranking_scores has 2 entries but scores has 3"):
        top_k_summary(np.zeros(3), ranking_scores=[1, 2])


# --- intervals and CRPS ------------------------------------------------------


def test_interval_coverage_gaussian_nominal():
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(4000, 3))
    lower, upper = gaussian_interval(np.zeros_like(Y), np.ones_like(Y), level=0.8)

    coverage, width = interval_coverage(Y, lower, upper)

    assert coverage == pytest.approx(0.8, abs=0.02)
    assert width == pytest.approx(2 * stats.norm.ppf(0.9))


def test_interval_coverage_per_gene():
    coverage, width = interval_coverage(
        [[0.0, 5.0], [1.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.5, 3.0]],
        multioutput="raw_values",
    )

    np.testing.assert_allclose(coverage, [0.5, 0.0])
    np.testing.assert_allclose(width, [0.75, 2.0])


def test_interval_lower_above_upper_raises():
    with pytest.raises(ValueError, match="1 interval"):
        interval_coverage([[0.0]], [[1.0]], [[0.0]])


def test_sample_interval_quantiles():
    draws = np.arange(101, dtype=float).reshape(101, 1, 1)

    lower, upper = sample_interval(draws, level=0.9)

    assert lower[0, 0] == pytest.approx(5.0)
    assert upper[0, 0] == pytest.approx(95.0)


def test_crps_ensemble_matches_gaussian_closed_form():
    rng = np.random.default_rng(2)
    Y_true = np.array([[0.0, 1.0, -2.0]])
    mean = np.array([[0.5, 1.0, 0.0]])
    std = np.array([[1.0, 2.0, 0.5]])
    draws = mean + std * rng.standard_normal(size=(20000, 1, 3))

    expected = crps_gaussian(Y_true, mean, std, multioutput="raw_values")
    fair = crps_ensemble(Y_true, draws, multioutput="raw_values")

    np.testing.assert_allclose(fair, expected, rtol=0.02)


def test_crps_fair_unbiased_for_few_draws():
    rng = np.random.default_rng(3)
    Y_true = np.zeros((1, 1))
    draws = rng.standard_normal(size=(4, 20000, 1))
    Y_rep = np.zeros((20000, 1))
    expected = crps_gaussian(Y_true, [[0.0]], [[1.0]])

    fair = crps_ensemble(Y_rep, draws)
    standard = crps_ensemble(Y_rep, draws, fair=False)

    assert fair == pytest.approx(expected, rel=0.02)
    assert standard > fair


def test_crps_ensemble_brute_force_pairs():
    rng = np.random.default_rng(4)
    draws = rng.normal(size=(7, 3, 2))
    Y_true = rng.normal(size=(3, 2))
    pairwise = np.abs(draws[:, None] - draws[None, :]).sum(axis=(0, 1))
    expected = np.abs(draws - Y_true).mean(axis=0) - pairwise / (2 * 7 * 6)

    result = crps_ensemble(Y_true, draws, multioutput="raw_values")

    np.testing.assert_allclose(result, expected.mean(axis=0))


def test_crps_draws_axis_and_single_gene():
    draws = np.random.default_rng(5).normal(size=(4, 10))
    Y_true = np.zeros(4)

    on_axis1 = crps_ensemble(Y_true, draws, axis=1)
    on_axis0 = crps_ensemble(Y_true, draws.T)

    assert on_axis1 == pytest.approx(on_axis0)


def test_crps_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"samples \(3, 2\) .* Y_true \(3, 4\)"):
        crps_ensemble(np.zeros((3, 4)), np.zeros((5, 3, 2)))


def test_crps_gaussian_zero_std_is_absolute_error():
    assert crps_gaussian([[1.0]], [[3.0]], [[0.0]]) == pytest.approx(2.0)


# --- scorers -------------------------------------------------------------------


def test_gene_pearson_scorer_in_cross_val_score():
    X, Y, groups = _cohort()

    scores = cross_val_score(
        make_pipeline(StandardScaler(), Ridge()), X, Y, groups=groups,
        cv=GroupKFold(3), scoring=gene_pearson_scorer,
    )

    assert scores.shape == (3,)
    assert np.all(scores > 0.5)


def test_gene_scorer_in_grid_search():
    X, Y, _ = _cohort()

    search = GridSearchCV(
        Ridge(), {"alpha": [0.1, 1e4]}, cv=3, scoring=make_gene_scorer("rmse")
    ).fit(X, Y)

    assert search.best_params_ == {"alpha": 0.1}


def test_make_gene_scorer_top_k():
    X, Y, _ = _cohort()
    model = Ridge().fit(X, Y)
    r = pearson_per_gene(Y, model.predict(X))

    score = make_gene_scorer(top_k=3)(model, X, Y)

    assert score == pytest.approx(np.sort(r)[-3:].mean())


def test_make_gene_scorer_crps_gaussian():
    X, Y, groups = _cohort()
    model = _StdRegressor().fit(X, Y)
    mean, std = model.predict(X, return_std=True)

    score = make_gene_scorer("crps_gaussian")(model, X, Y)
    scores = cross_val_score(
        make_pipeline(StandardScaler(), _StdRegressor()), X, Y, groups=groups,
        cv=GroupKFold(3), scoring=make_gene_scorer("crps_gaussian"),
    )

    assert score == pytest.approx(-crps_gaussian(Y, mean, std))
    assert np.all(scores < 0)


def test_make_gene_scorer_crps_needs_return_std():
    X, Y, _ = _cohort()
    model = Ridge().fit(X, Y)

    with pytest.raises(ValueError, match="Ridge does not support"):
        make_gene_scorer("crps_gaussian")(model, X, Y)


def test_make_gene_scorer_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric must be one of"):
        make_gene_scorer("spearman")


def test_mean_pearson_single_target():
    assert mean_pearson_per_gene([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]) > 0.9


# --- cross_val_predict_genes -----------------------------------------------


class _StdRegressor(RegressorMixin, BaseEstimator):
    """Ridge with a constant predictive std and a training-only gene score."""

    def __init__(self, require_groups=False):
        self.require_groups = require_groups

    def fit(self, X, Y, groups=None):
        if self.require_groups and (groups is None or len(groups) != len(X)):
            raise ValueError("fit did not receive the training groups")
        self.model_ = Ridge().fit(X, Y)
        self.gene_validation_score_ = np.arange(Y.shape[1], dtype=float)
        return self

    def predict(self, X, return_std=False):
        mean = self.model_.predict(X)
        if return_std:
            return mean, np.ones_like(mean)
        return mean


def test_cv_predict_grouped_out_of_fold():
    X, Y, groups = _cohort()

    result = cross_val_predict_genes(Ridge(), X, Y, groups=groups, cv=3)

    for fold in range(3):
        in_fold = result.test_fold == fold
        others = ~in_fold
        model = Ridge().fit(X[others], Y[others])
        np.testing.assert_allclose(result.predictions[in_fold], model.predict(X[in_fold]))
        assert not set(groups[in_fold]) & set(groups[others])


def test_cv_predict_table_and_inner_ranking():
    X, Y, groups = _cohort()
    names = [f"G{i}" for i in range(Y.shape[1])]

    result = cross_val_predict_genes(
        PLSRegression(n_components=2), X, pd.DataFrame(Y, columns=names),
        groups=groups, cv=3,
    )

    assert result.std is None
    assert list(result.table.index) == names
    assert len(result.ranking_scores) == 3
    assert "mean_r_honest" in result.summary


def test_cv_predict_std_and_validation_ranking():
    X, Y, groups = _cohort()

    result = cross_val_predict_genes(
        make_pipeline(StandardScaler(), _StdRegressor(require_groups=True)),
        X, Y, groups=groups, cv=4,
    )

    np.testing.assert_array_equal(result.std, np.ones_like(Y))
    assert "coverage" in result.table
    np.testing.assert_array_equal(result.ranking_scores[0], np.arange(Y.shape[1]))


class _UnscoredRegressor(_StdRegressor):
    """Regressor whose validation scores are all NaN, as without a validation split."""

    def fit(self, X, Y, groups=None):
        super().fit(X, Y, groups)
        self.gene_validation_score_ = np.full(Y.shape[1], np.nan)
        return self


def test_cv_predict_all_nan_validation_uses_inner_split():
    X, Y, groups = _cohort()

    result = cross_val_predict_genes(_UnscoredRegressor(), X, Y, groups=groups, cv=3)

    assert not np.isnan(result.ranking_scores[0]).any()
    assert not result.summary["mean_r_honest"].isna().any()


def test_cv_predict_passes_groups_to_fit():
    X, Y, groups = _cohort()
    estimator = _StdRegressor(require_groups=True)

    result = cross_val_predict_genes(estimator, X, Y, groups=groups, cv=2, ranking=None)

    assert result.ranking_scores is None
    assert "mean_r_honest" not in result.summary


def test_cv_predict_validation_ranking_missing_raises():
    X, Y, groups = _cohort()

    with pytest.raises(ValueError, match="no usable gene_validation_score_"):
        cross_val_predict_genes(Ridge(), X, Y, groups=groups, cv=3, ranking="validation_score")


def test_cv_predict_rejects_overlapping_folds():
    X, Y, _ = _cohort()
    folds = [(np.arange(10, 24), np.arange(0, 12)), (np.arange(0, 10), np.arange(10, 24))]

    with pytest.raises(ValueError, match="tested more than once"):
        cross_val_predict_genes(Ridge(), X, Y, cv=folds)


# --- real TCGA reference data ----------------------------------------------


def test_table_on_tcga_reference_slides(tcga_dir):
    frame = pd.read_csv(tcga_dir / "tcga_brca_reference_5_slides.csv")
    gene_columns = [c for c in frame.columns if c.startswith("rna_")]
    Y = frame[gene_columns].to_numpy(dtype=float)
    rng = np.random.default_rng(0)
    Y_pred = Y + rng.normal(scale=Y.std(axis=0) + 0.1, size=Y.shape)
    constant = np.all(Y == Y[0], axis=0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = gene_metrics_table(Y, Y_pred, gene_names=gene_columns)

    assert len(table) == 20820
    assert constant.sum() > 0
    assert (table["pearson_r"].to_numpy()[constant] == 0).all()
    assert not table["pearson_r"].isna().any()
    np.testing.assert_allclose(
        table["q_value"], stats.false_discovery_control(table["p_value"], method="bh")
    )
    for gene in np.flatnonzero(~constant)[:50]:
        expected = stats.pearsonr(Y[:, gene], Y_pred[:, gene])
        assert table["pearson_r"].iloc[gene] == pytest.approx(expected.statistic, abs=1e-12)
        assert table["p_value"].iloc[gene] == pytest.approx(expected.pvalue, rel=1e-9)
