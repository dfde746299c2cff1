"""Tests of RNAFlowRegressor: gene sets, sampling API, guidance, calibration, workflows."""

import json
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skrnafm.estimators import RNAFlowRegressor, make_rnafm_pipeline
from skrnafm.exceptions import CalibrationWarning, GeneSetWarning

TINY = {"hidden_dim": 8, "depth": 1, "n_heads": 2, "max_epochs": 2, "n_samples": 4, "precision": "fp32"}


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    # The networks here are tiny, so intra-op threads only add synchronization,
    # which made fits many times slower on a busy 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_data(n_samples=30, n_tokens=2, token_dim=4, n_genes=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_tokens * token_dim))
    Y = X[:, :1] * np.linspace(-1, 1, n_genes) + 0.3 * rng.normal(size=(n_samples, n_genes))
    return X, Y


def tiny(**params):
    return RNAFlowRegressor(**{**TINY, "random_state": 0, **params})


@pytest.fixture(scope="module")
def fitted():
    X, Y = make_data()
    return tiny(n_tokens=2).fit(X, Y), X, Y


# ---------------------------------------------------------------- prediction API


def test_predict_shape(fitted):
    model, X, _ = fitted
    assert model.predict(X[:3]).shape == (3, 5)


def test_predict_is_deterministic(fitted):
    model, X, _ = fitted
    np.testing.assert_array_equal(model.predict(X), model.predict(X))


def test_predict_independent_of_batch(fitted):
    model, X, _ = fitted
    np.testing.assert_allclose(model.predict(X[::-1])[::-1], model.predict(X), atol=1e-6)


def test_predict_return_std_shapes(fitted):
    model, X, _ = fitted
    mean, std = model.predict(X[:3], return_std=True)
    assert mean.shape == std.shape == (3, 5)
    assert (std > 0).all()


def test_predict_mean_of_draws(fitted):
    model, X, _ = fitted
    draws = model.sample_predict(X[:3])
    np.testing.assert_allclose(model.predict(X[:3]), draws.mean(axis=0))


def test_sample_predict_shape(fitted):
    model, X, _ = fitted
    assert model.sample_predict(X[:3], n_samples=7).shape == (7, 3, 5)


def test_sample_predict_seed_changes_draws(fitted):
    model, X, _ = fitted
    first = model.sample_predict(X[:2], random_state=1)
    second = model.sample_predict(X[:2], random_state=2)
    assert not np.allclose(first, second)


def test_sample_predict_same_seed_same_draws(fitted):
    model, X, _ = fitted
    np.testing.assert_array_equal(
        model.sample_predict(X[:2], random_state=5), model.sample_predict(X[:2], random_state=5)
    )


def test_sample_predict_invalid_n_samples_raises(fitted):
    model, X, _ = fitted
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1, got 0"):
        model.sample_predict(X, n_samples=0)


def test_predict_interval_brackets_mean(fitted):
    model, X, _ = fitted
    lower, upper = model.predict_interval(X[:4], coverage=0.8)
    mean = model.predict(X[:4])
    assert (lower < mean).all()
    assert (mean < upper).all()


def test_predict_interval_widens_with_coverage(fitted):
    model, X, _ = fitted
    narrow = np.subtract(*model.predict_interval(X[:4], coverage=0.5)[::-1])
    wide = np.subtract(*model.predict_interval(X[:4], coverage=0.95)[::-1])
    assert (wide > narrow).all()


@pytest.mark.parametrize("coverage", [0.0, 1.0, 1.5])
def test_predict_interval_invalid_coverage_raises(fitted, coverage):
    model, X, _ = fitted
    with pytest.raises(ValueError, match="coverage must be a float in"):
        model.predict_interval(X, coverage=coverage)


def test_predict_interval_one_draw_raises(fitted):
    model, X, _ = fitted
    with pytest.raises(ValueError, match="at least 2 draws"):
        model.predict_interval(X, n_samples=1)


def test_one_gene_target_gives_one_dimensional_outputs():
    X, Y = make_data()
    model = tiny().fit(X, Y[:, 0])
    assert model.predict(X[:3]).shape == (3,)
    assert model.sample_predict(X[:3]).shape == (4, 3)
    assert model.predict_interval(X[:3])[0].shape == (3,)


def test_gene_validation_score_shape(fitted):
    model, _, _ = fitted
    assert model.gene_validation_score_.shape == (5,)
    assert np.all(np.abs(model.gene_validation_score_) <= 1)


def test_condition_encoded_once_per_slide_batch(fitted):
    model, X, _ = fitted
    network = model.network_
    calls = {"encode": 0, "null": 0, "forward": 0}
    original_encode, original_null = network.encode_condition, network.null_condition

    def encode(*args, **kwargs):
        calls["encode"] += 1
        return original_encode(*args, **kwargs)

    def null(*args, **kwargs):
        calls["null"] += 1
        return original_null(*args, **kwargs)

    def count_forward(module, args):
        calls["forward"] += 1

    network.encode_condition, network.null_condition = encode, null
    hook = network.register_forward_pre_hook(count_forward)
    try:
        model.set_params(solver="euler", n_steps=6).predict(X[:5])
    finally:
        hook.remove()
        del network.encode_condition, network.null_condition
        model.set_params(solver="midpoint", n_steps=4)
    assert calls["encode"] == 1
    assert calls["null"] == 1
    # Guided Euler: one batched network call per step for both branches.
    assert calls["forward"] == 6


def test_cfg_scale_one_skips_null_branch(fitted):
    model, X, _ = fitted
    calls = []
    hook = model.network_.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        model.set_params(cfg_scale=1.0, solver="euler", n_steps=3).predict(X[:2])
    finally:
        hook.remove()
        model.set_params(cfg_scale=2.0, solver="midpoint", n_steps=4)
    # 2 slides x 4 draws per call, never the doubled batch of guided sampling.
    assert calls == [8, 8, 8]


# ---------------------------------------------------------------- gene sets


def test_pathways_none_learns_groups_for_one_gene():
    X, Y = make_data()
    model = tiny().fit(X, Y[:, :1])
    assert model.gene_sets_.n_genes == 1


def test_pathways_dict_matched_by_name():
    X, Y = make_data()
    frame = pd.DataFrame(Y, columns=["ERBB2", "ESR1", "PGR", "MKI67", "GATA3"])
    sets = {"hormone": ["ESR1", "PGR", "GATA3"], "growth": ["ERBB2", "MKI67"]}
    model = tiny(pathways=sets).fit(X, frame)
    assert model.gene_sets_.set_names == ["hormone", "growth"]
    assert model.gene_sets_.members[0].tolist() == [1, 2, 4]


def test_pathways_unmatched_genes_warn_with_count():
    X, Y = make_data()
    frame = pd.DataFrame(Y, columns=["ERBB2", "ESR1", "PGR", "MKI67", "GATA3"])
    with pytest.warns(GeneSetWarning, match="3 of 5 target genes are in no gene set"):
        model = tiny(pathways={"growth": ["ERBB2", "MKI67", "NOT_A_GENE"]}).fit(X, frame)
    assert model.gene_sets_.background.tolist() == [1, 2, 4]


def test_pathways_file_with_unknown_genes_only_raises(tmp_path):
    X, Y = make_data()
    frame = pd.DataFrame(Y, columns=["ERBB2", "ESR1", "PGR", "MKI67", "GATA3"])
    path = tmp_path / "sets.gmt"
    path.write_text("mouse\tna\tTrp53\tCdk1\nother\tna\tGapdh\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeneSetWarning)
        with pytest.raises(ValueError, match="No gene of pathways=.*matched the 5 target genes"):
            tiny(pathways=str(path)).fit(X, frame)


def test_pathways_json_file(tmp_path):
    X, Y = make_data()
    frame = pd.DataFrame(Y, columns=["ERBB2", "ESR1", "PGR", "MKI67", "GATA3"])
    path = tmp_path / "sets.json"
    path.write_text(json.dumps({"a": ["ERBB2", "ESR1"], "b": ["ESR1", "PGR", "MKI67", "GATA3"]}))
    model = tiny(pathways=str(path)).fit(X, frame)
    assert model.gene_sets_.n_sets == 2
    assert model.gene_sets_.background.size == 0


def test_pathways_names_without_gene_names_raises():
    X, Y = make_data()
    with pytest.raises(ValueError, match="pass y as a pandas DataFrame"):
        tiny(pathways={"a": ["ERBB2", "ESR1"]}).fit(X, Y)


def test_pathways_bundled_collection_on_tcga_genes(data_dir):
    # Real TCGA gene symbols against the bundled GO molecular-function sets.
    genes = pd.read_csv(data_dir / "tcga" / "gene_list.csv")["gene"].tolist()
    chosen = genes[:: len(genes) // 60][:60]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 8))
    frame = pd.DataFrame(rng.normal(size=(12, len(chosen))), columns=chosen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeneSetWarning)
        model = tiny(pathways="go_molecular_function", max_epochs=1).fit(X, frame)
    assert model.gene_sets_.n_sets > 0
    assert model.predict(X[:2]).shape == (2, len(chosen))


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "params, name",
    [
        ({"cfg_scale": -0.5}, "cfg_scale"),
        ({"n_steps": 0}, "n_steps"),
        ({"solver": "rk45"}, "solver"),
        ({"cond_drop_prob": 1.5}, "cond_drop_prob"),
        ({"n_samples": 0}, "n_samples"),
        ({"calibrate": "always"}, "calibrate"),
        ({"pathways": 3}, "pathways"),
    ],
)
def test_invalid_parameter_raises(params, name):
    X, Y = make_data()
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        tiny(**params).fit(X, Y)


def test_hidden_dim_not_multiple_of_heads_raises():
    X, Y = make_data()
    with pytest.raises(ValueError, match="hidden_dim=10 must be a multiple of n_heads=4"):
        tiny(hidden_dim=10, n_heads=4).fit(X, Y)


def test_odd_token_width_uses_hidden_width():
    X, Y = make_data(n_tokens=1, token_dim=5)
    model = tiny().fit(X, Y)
    assert model.predict(X[:2]).shape == (2, 5)


def test_few_training_slides_raise():
    X, Y = make_data(n_samples=1)
    with pytest.raises(ValueError, match="at least 2 training slides"):
        tiny().fit(X, Y)


def test_x_width_not_matching_tokens_raises():
    X, Y = make_data()
    with pytest.raises(ValueError, match="not a multiple of n_tokens=3"):
        tiny(n_tokens=3).fit(X, Y)


# ---------------------------------------------------------------- calibration


def calibration_inputs(model, spread_ratio, n_valid=40, seed=0):
    """Draws whose spread is ``spread_ratio`` times the true error scale."""
    rng = np.random.default_rng(seed)
    n_genes = model.n_genes_
    center = rng.normal(size=(n_valid, n_genes))
    truth = center + rng.normal(size=(n_valid, n_genes)) * model.target_scale_
    draws = center + spread_ratio * rng.normal(size=(200, n_valid, n_genes)) * model.target_scale_
    return draws, truth


def test_calibration_rescales_too_narrow_spread(fitted):
    model = clone(fitted[0]).fit(fitted[1], fitted[2])
    draws, truth = calibration_inputs(model, spread_ratio=1 / 3)
    model._fit_calibration(draws, truth)
    assert model.validation_coverage_ < 0.5
    np.testing.assert_allclose(model.spread_scale_, 3.0, rtol=0.25)
    assert model.calibrated_coverage_ == pytest.approx(0.9, abs=0.05)


def test_calibration_keeps_good_spread(fitted):
    model = clone(fitted[0]).fit(fitted[1], fitted[2])
    draws, truth = calibration_inputs(model, spread_ratio=1.0)
    model._fit_calibration(draws, truth)
    assert model.validation_coverage_ == pytest.approx(0.9, abs=0.05)
    np.testing.assert_allclose(model.spread_scale_, 1.0, rtol=0.25)


def test_calibration_none_warns_when_off(fitted):
    model = clone(fitted[0]).set_params(calibrate="none").fit(fitted[1], fitted[2])
    draws, truth = calibration_inputs(model, spread_ratio=1 / 3)
    with pytest.warns(CalibrationWarning, match="Nominal 90% intervals"):
        model._fit_calibration(draws, truth)
    np.testing.assert_array_equal(model.spread_scale_, 1.0)


def test_calibration_scale_widens_draws(fitted):
    model, X, _ = fitted
    model = clone(model).fit(X, fitted[2])
    model.spread_scale_ = np.ones(model.n_genes_)
    before = model.predict(X[:3], return_std=True)[1]
    model.spread_scale_ = np.full(model.n_genes_, 2.0)
    after = model.predict(X[:3], return_std=True)[1]
    np.testing.assert_allclose(after, 2 * before)


def test_calibration_skipped_without_validation_split():
    X, Y = make_data()
    model = tiny(validation_fraction=0.0).fit(X, Y)
    np.testing.assert_array_equal(model.spread_scale_, 1.0)
    assert np.isnan(model.validation_coverage_)


def test_calibration_measured_after_fit(fitted):
    model, _, _ = fitted
    assert 0.0 <= model.validation_coverage_ <= 1.0
    assert model.spread_scale_.shape == (5,)


# ---------------------------------------------------------------- workflows


def test_pipeline_cross_val_score_with_groups():
    X, Y = make_data(n_samples=36)
    groups = np.repeat(np.arange(12), 3)
    pipeline = Pipeline([("scale", StandardScaler()), ("flow", tiny(n_tokens=2))])
    scores = cross_val_score(pipeline, X, Y, groups=groups, cv=GroupKFold(n_splits=3))
    assert scores.shape == (3,)
    assert np.isfinite(scores).all()


def test_grid_search_over_cfg_scale():
    X, Y = make_data(n_samples=36)
    groups = np.repeat(np.arange(12), 3)
    search = GridSearchCV(tiny(n_tokens=2), {"cfg_scale": [1.0, 2.0]}, cv=GroupKFold(n_splits=2))
    search.fit(X, Y, groups=groups)
    assert search.best_params_["cfg_scale"] in (1.0, 2.0)
    assert search.predict(X[:2]).shape == (2, 5)


def test_joblib_round_trip_predicts_the_same(fitted, tmp_path):
    model, X, _ = fitted
    path = tmp_path / "flow.joblib"
    joblib.dump(model, path)
    restored = joblib.load(path)
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_pooler_pipeline_from_tile_embeddings():
    # SuperTilePooler output feeds the flow regressor with n_tokens handed over.
    from skrnafm.features import SuperTilePooler

    rng = np.random.default_rng(0)
    slides = [rng.normal(size=(rng.integers(20, 40), 6)).astype(np.float32) for _ in range(24)]
    Y = np.stack([tiles.mean(axis=0)[:3] for tiles in slides])
    pipeline = Pipeline(
        [("pooler", SuperTilePooler(n_clusters=3, random_state=0)), ("flow", tiny(n_tokens=3))]
    )
    pipeline.fit(slides, Y)
    assert pipeline.named_steps["flow"].token_dim_ == 6
    assert pipeline.predict(slides[:2]).shape == (2, 3)


def test_make_rnafm_pipeline_hands_clusters_to_tokens():
    pipeline = make_rnafm_pipeline(n_clusters=7, max_epochs=3)
    assert [name for name, _ in pipeline.steps] == ["featurizer", "pooler", "regressor"]
    assert pipeline.named_steps["pooler"].n_clusters == 7
    assert pipeline.named_steps["regressor"].n_tokens == 7
    assert pipeline.named_steps["regressor"].max_epochs == 3


def test_make_rnafm_pipeline_conflicting_tokens_raises():
    with pytest.raises(ValueError, match="n_tokens=5 differs from n_clusters=7"):
        make_rnafm_pipeline(n_clusters=7, n_tokens=5)


def test_bf16_sampling_close_to_fp32(fitted):
    model, X, _ = fitted
    fp32 = model.predict(X[:6])
    model.set_params(precision="bf16")
    try:
        bf16 = model.predict(X[:6])
    finally:
        model.set_params(precision="fp32")
    assert np.max(np.abs(bf16 - fp32)) < 0.1 * np.std(fp32)


@pytest.mark.slow
def test_make_rnafm_pipeline_on_real_slide_regions(cmu_slide):
    # Four quarters of a real 20x slide stand in for four slides.
    from skrnafm.slide import SlideRegion, open_slide

    with open_slide(cmu_slide) as slide:
        width, height = slide.dimensions
    regions = [
        SlideRegion(cmu_slide, bbox=(x, y, width // 2, height // 2))
        for x in (0, width // 2)
        for y in (0, height // 2)
    ]
    Y = np.arange(8.0).reshape(4, 2)
    pipeline = make_rnafm_pipeline(
        n_clusters=2,
        featurizer_params={"max_tiles": 6, "device": "cpu"},
        **{**TINY, "random_state": 0},
    )
    pipeline.fit(regions, Y)
    assert pipeline.named_steps["regressor"].n_tokens_ == 2
    assert pipeline.predict(regions[:2]).shape == (2, 2)


# ---------------------------------------------------------------- antithetic noise and mean estimator


def test_draws_start_from_antithetic_noise():
    from skrnafm.estimators._rnaflow import _slide_noise

    noise = _slide_noise(torch.zeros(2, 3), seed=0, n_samples=5, n_genes=4)
    torch.testing.assert_close(noise[3:5], -noise[0:2])
    assert noise.shape == (5, 4)


def make_linear_data(n_train=60, n_test=40, n_genes=6, seed=0):
    """Return train and test sets of a linear model and the test set's noiseless mean."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(8, n_genes))
    X = rng.normal(size=(n_train + n_test, 8))
    Y = X @ weights + 0.3 * rng.normal(size=(n_train + n_test, n_genes))
    return X[:n_train], Y[:n_train], X[n_train:], X[n_train:] @ weights


def test_mean_estimator_beats_plain_flow():
    from sklearn.linear_model import RidgeCV

    X, Y, X_test, true_mean = make_linear_data()
    plain = tiny(n_tokens=2).fit(X, Y)
    with_mean = tiny(n_tokens=2, mean_estimator=RidgeCV()).fit(X, Y)

    error_plain = np.mean((plain.predict(X_test) - true_mean) ** 2)
    error_with_mean = np.mean((with_mean.predict(X_test) - true_mean) ** 2)
    assert error_with_mean < 0.25 * error_plain


def test_mean_estimator_added_to_every_draw():
    from sklearn.linear_model import LinearRegression

    X, Y, X_test, _ = make_linear_data()
    model = tiny(n_tokens=2, mean_estimator=LinearRegression()).fit(X, Y)
    draws = model.sample_predict(X_test[:3])
    residual_draws = model._format_output(model._draw(model._validate_tokens(X_test[:3]), 4, seed=None))

    mean = model.mean_estimator_.predict(X_test[:3])
    np.testing.assert_allclose(draws - residual_draws, np.broadcast_to(mean, draws.shape), atol=1e-5)


def test_mean_estimator_one_gene_groups():
    from sklearn.linear_model import RidgeCV

    X, Y, X_test, _ = make_linear_data(n_genes=1)
    groups = np.repeat(np.arange(20), 3)
    model = tiny(n_tokens=2, mean_estimator=RidgeCV()).fit(X, Y[:, 0], groups=groups)

    assert model.predict(X_test).shape == (40,)
    assert np.isfinite(model.gene_validation_score_).all()


def test_mean_estimator_not_fitted_in_place():
    from sklearn.linear_model import RidgeCV

    X, Y, _, _ = make_linear_data()
    ridge = RidgeCV()
    tiny(n_tokens=2, mean_estimator=ridge).fit(X, Y)

    assert not hasattr(ridge, "coef_")


def test_mean_estimator_joblib_round_trip(tmp_path):
    from sklearn.linear_model import RidgeCV

    X, Y, X_test, _ = make_linear_data()
    model = tiny(n_tokens=2, mean_estimator=RidgeCV()).fit(X, Y)
    joblib.dump(model, tmp_path / "flow.joblib")

    np.testing.assert_array_equal(joblib.load(tmp_path / "flow.joblib").predict(X_test), model.predict(X_test))


def test_mean_estimator_rejected_by_safe_format(tmp_path):
    from sklearn.linear_model import RidgeCV

    X, Y, _, _ = make_linear_data()
    model = tiny(n_tokens=2, mean_estimator=RidgeCV()).fit(X, Y)

    with pytest.raises(TypeError, match="mean_estimator=.*joblib.dump"):
        model.save(tmp_path / "flow.safetensors")


def test_mean_estimator_without_predict_raises():
    X, Y, _, _ = make_linear_data()
    with pytest.raises(InvalidParameterError, match="mean_estimator"):
        tiny(n_tokens=2, mean_estimator="ridge").fit(X, Y)


def test_failing_mean_estimator_named():
    from sklearn.neighbors import KNeighborsRegressor

    X, Y, _, _ = make_linear_data()
    with pytest.raises(ValueError, match=r"mean_estimator=KNeighborsRegressor\(n_neighbors=500\) failed on 60"):
        tiny(n_tokens=2, mean_estimator=KNeighborsRegressor(n_neighbors=500)).fit(X, Y)


def test_mean_estimator_class_raises():
    from sklearn.linear_model import RidgeCV

    X, Y, _, _ = make_linear_data()
    with pytest.raises(InvalidParameterError, match=r"Pass RidgeCV\(\) instead"):
        tiny(n_tokens=2, mean_estimator=RidgeCV).fit(X, Y)


def test_mean_estimator_groups_length_checked():
    from sklearn.linear_model import RidgeCV

    X, Y, _, _ = make_linear_data()
    with pytest.raises(ValueError, match="groups has 10 entries but X has 60 rows"):
        tiny(n_tokens=2, mean_estimator=RidgeCV()).fit(X, Y, groups=np.arange(10))


def test_mean_estimator_with_metadata_routing():
    import sklearn
    from sklearn.linear_model import RidgeCV

    X, Y, _, _ = make_linear_data()
    groups = np.repeat(np.arange(20), 3)
    with sklearn.config_context(enable_metadata_routing=True):
        model = tiny(n_tokens=2, mean_estimator=RidgeCV()).set_fit_request(groups=True)
        scores = cross_val_score(model, X, Y, cv=GroupKFold(n_splits=3), params={"groups": groups})

    assert scores.shape == (3,)
    assert np.isfinite(scores).all()
