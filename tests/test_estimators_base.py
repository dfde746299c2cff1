"""Tests of BaseTorchRegressor: input parsing, targets, validation split, training loop."""

import pickle
import warnings
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from skrnafm.estimators import BaseTorchRegressor
from skrnafm.exceptions import SkrnafmWarning


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    # The networks here are tiny, so intra-op threads only add synchronization,
    # which made fits many times slower on a busy 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class LinearTokenRegressor(BaseTorchRegressor):
    """Smallest useful subclass: a linear map from the flattened tokens."""

    def _build_network(self, n_tokens, token_dim, n_genes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_tokens * token_dim, n_genes))

    def _training_loss(self, network, tokens, targets_std, generator):
        return torch.mean((network(tokens).float() - targets_std) ** 2)

    def _predict_standardized(self, network, tokens):
        return network(tokens)


class RisingValidationLoss(LinearTokenRegressor):
    """Validation loss that gets worse every epoch, to trigger early stopping."""

    def _validation_loss(self, network, tokens, targets_std, generator):
        self.calls = getattr(self, "calls", 0) + 1
        return torch.tensor(float(self.calls))


def make_data(n_samples=40, n_features=12, n_genes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    Y = X[:, :n_genes] @ np.diag(np.arange(1.0, n_genes + 1)) + 0.01 * rng.normal(size=(n_samples, n_genes))
    return X, Y


def fast(**params):
    defaults = {"max_epochs": 3, "learning_rate": 1e-2, "precision": "fp32", "random_state": 0}
    return LinearTokenRegressor(**{**defaults, **params})


# ---------------------------------------------------------------- tokens


def test_tokens_auto_from_3d_array():
    X, Y = make_data()
    model = fast().fit(X.reshape(40, 3, 4), Y)
    assert (model.n_tokens_, model.token_dim_) == (3, 4)
    assert model.n_features_in_ == 12


def test_tokens_3d_and_flat_predict_agree():
    X, Y = make_data()
    model = fast().fit(X.reshape(40, 3, 4), Y)
    np.testing.assert_allclose(model.predict(X.reshape(40, 3, 4)), model.predict(X))


def test_tokens_auto_from_pooler_columns():
    X, Y = make_data()
    columns = [f"st{k}_f{d}" for k in range(4) for d in range(3)]
    model = fast().fit(pd.DataFrame(X, columns=columns), Y)
    assert (model.n_tokens_, model.token_dim_) == (4, 3)


def test_tokens_auto_other_columns_one_token():
    X, Y = make_data()
    columns = [f"feature{i}" for i in range(12)]
    model = fast().fit(pd.DataFrame(X, columns=columns), Y)
    assert (model.n_tokens_, model.token_dim_) == (1, 12)


def test_tokens_auto_plain_array_one_token():
    X, Y = make_data()
    model = fast().fit(X, Y)
    assert (model.n_tokens_, model.token_dim_) == (1, 12)


def test_tokens_int_splits_rows():
    X, Y = make_data()
    model = fast(n_tokens=6).fit(X, Y)
    assert (model.n_tokens_, model.token_dim_) == (6, 2)


def test_tokens_int_not_dividing_raises():
    X, Y = make_data()
    with pytest.raises(ValueError, match=r"12 features, which is not a multiple of n_tokens=5"):
        fast(n_tokens=5).fit(X, Y)


def test_tokens_int_disagreeing_with_3d_raises():
    X, Y = make_data()
    with pytest.raises(ValueError, match=r"n_tokens=4 does not match the 3-D X with 3 tokens"):
        fast(n_tokens=4).fit(X.reshape(40, 3, 4), Y)


def test_predict_3d_wrong_token_shape_raises():
    X, Y = make_data()
    model = fast().fit(X.reshape(40, 3, 4), Y)
    with pytest.raises(ValueError, match=r"tokens of shape \(4, 3\).*\(3, 4\)"):
        model.predict(X.reshape(40, 4, 3))


def test_predict_other_feature_count_raises():
    X, Y = make_data()
    model = fast().fit(X, Y)
    with pytest.raises(ValueError, match="X has 11 features, but LinearTokenRegressor is expecting 12"):
        model.predict(X[:, :11])


# ---------------------------------------------------------------- bad input


def test_fit_nan_in_x_names_rows():
    X, Y = make_data()
    X[[3, 7], 5] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or infinity in 2 row\(s\) \(indices 3, 7\)"):
        fast().fit(X, Y)


def test_fit_inf_in_y_names_genes():
    X, Y = make_data()
    Y[4, 1] = np.inf
    frame = pd.DataFrame(Y, columns=["ERBB2", "ESR1", "PGR"])
    with pytest.raises(ValueError, match=r"y contains NaN or infinity in 1 row\(s\) \(indices 4\).*'ESR1'"):
        fast().fit(X, frame)


def test_predict_nan_in_x_raises():
    X, Y = make_data()
    model = fast().fit(X, Y)
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict(X)


def test_fit_one_slide_raises():
    X, Y = make_data()
    with pytest.raises(ValueError, match="at least 2 training slides, got n_samples=1"):
        fast().fit(X[:1], Y[:1])


def test_fit_without_y_raises():
    X, _ = make_data()
    with pytest.raises(ValueError, match="requires y to be passed"):
        fast().fit(X, None)


def test_fit_y_length_mismatch_raises():
    X, Y = make_data()
    with pytest.raises(ValueError, match="X has 40 rows, y has 39"):
        fast().fit(X, Y[:39])


@pytest.mark.parametrize(
    "params, name",
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"n_tokens": 0}, "n_tokens"),
        ({"precision": "fp16"}, "precision"),
        ({"max_epochs": 0}, "max_epochs"),
    ],
)
def test_fit_invalid_parameter_raises(params, name):
    X, Y = make_data()
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        fast(**params).fit(X, Y)


# ---------------------------------------------------------------- targets


def test_targets_standardized_on_training_rows():
    X, Y = make_data()
    model = fast(validation_fraction=0.25).fit(X, Y)
    train = np.setdiff1d(np.arange(40), model.validation_indices_)
    np.testing.assert_allclose(model.target_mean_, Y[train].mean(axis=0))
    np.testing.assert_allclose(model.target_scale_, Y[train].std(axis=0))


def test_constant_gene_predicted_as_constant():
    X, Y = make_data()
    Y[:, 1] = 7.5
    model = fast().fit(X, Y)
    assert model.constant_genes_.tolist() == [False, True, False]
    assert model.target_scale_[1] == 1.0
    np.testing.assert_array_equal(model.predict(X)[:, 1], 7.5)


def test_gene_names_kept_from_dataframe():
    X, Y = make_data()
    model = fast().fit(X, pd.DataFrame(Y, columns=["A", "B", "C"]))
    assert model.gene_names_.tolist() == ["A", "B", "C"]


def test_gene_names_none_for_array():
    X, Y = make_data()
    assert fast().fit(X, Y).gene_names_ is None


def test_one_dimensional_y_gives_one_dimensional_prediction():
    X, Y = make_data()
    model = fast().fit(X, Y[:, 0])
    assert model.n_genes_ == 1
    assert model.predict(X).shape == (40,)


def test_linear_targets_are_learned():
    X, Y = make_data(n_samples=200)
    model = fast(max_epochs=60, learning_rate=3e-2, ema_decay=None).fit(X, Y)
    assert model.score(X, Y) > 0.95


# ---------------------------------------------------------------- validation split


def test_validation_split_keeps_groups_apart():
    X, Y = make_data()
    groups = np.repeat(np.arange(10), 4)
    model = fast(validation_fraction=0.3).fit(X, Y, groups=groups)
    valid_groups = set(groups[model.validation_indices_])
    train_groups = set(np.delete(groups, model.validation_indices_))
    assert valid_groups
    assert valid_groups.isdisjoint(train_groups)


def test_validation_split_size_follows_fraction():
    X, Y = make_data()
    model = fast(validation_fraction=0.25).fit(X, Y)
    assert model.validation_indices_.size == 10


def test_validation_split_skipped_with_few_rows():
    X, Y = make_data(n_samples=3)
    model = fast().fit(X, Y)
    assert model.validation_indices_.size == 0
    assert "no validation split: 3 training rows" in model.fit_notes_[0]
    assert np.isnan(model.gene_validation_score_).all()


def test_validation_split_skipped_with_one_group():
    X, Y = make_data()
    model = fast().fit(X, Y, groups=np.zeros(40))
    assert model.validation_indices_.size == 0
    assert model.fit_notes_ == ["no validation split: groups has a single group"]


def test_validation_fraction_zero_trains_all_epochs():
    X, Y = make_data()
    model = fast(validation_fraction=0.0, max_epochs=4).fit(X, Y)
    assert model.n_epochs_ == 4
    assert all(row["valid_loss"] is None for row in model.history_)


def test_gene_validation_score_is_pearson_on_validation_rows():
    X, Y = make_data(n_samples=200)
    model = fast(max_epochs=40, learning_rate=3e-2, validation_fraction=0.2).fit(X, Y)
    rows = model.validation_indices_
    predictions = model.predict(X[rows])
    expected = [np.corrcoef(predictions[:, g], Y[rows, g])[0, 1] for g in range(3)]
    np.testing.assert_allclose(model.gene_validation_score_, expected, rtol=1e-6)


def test_groups_length_mismatch_raises():
    X, Y = make_data()
    with pytest.raises(ValueError, match="groups has 39 entries but X has 40 rows"):
        fast().fit(X, Y, groups=np.arange(39))


# ---------------------------------------------------------------- training loop


def test_early_stopping_keeps_best_epoch():
    X, Y = make_data()
    model = RisingValidationLoss(max_epochs=50, patience=3, precision="fp32", random_state=0).fit(X, Y)
    assert model.n_epochs_ == 4
    assert model.best_epoch_ == 1


def test_early_stopping_off_runs_all_epochs():
    X, Y = make_data()
    model = RisingValidationLoss(max_epochs=6, patience=2, early_stopping=False, random_state=0).fit(X, Y)
    assert model.n_epochs_ == 6


def test_history_has_one_row_per_epoch():
    X, Y = make_data()
    model = fast(max_epochs=5, validation_fraction=0.2).fit(X, Y)
    assert len(model.history_) == model.n_epochs_
    assert set(model.history_[0]) == {"epoch", "train_loss", "valid_loss", "ema_decay", "seconds"}


def test_ema_decay_ramps_to_final_value():
    model = fast(ema_decay=0.999, ema_warmup_steps=100)
    assert model._ema_decay_at(0) == pytest.approx(0.85)
    assert model._ema_decay_at(50) == pytest.approx(0.9245)
    assert model._ema_decay_at(500) == pytest.approx(0.999)


def test_ema_disabled_copies_weights():
    X, Y = make_data()
    model = fast(ema_decay=None, validation_fraction=0.0).fit(X, Y)
    assert model.history_[-1]["ema_decay"] == 0.0


def test_fit_is_reproducible():
    X, Y = make_data()
    first = fast(validation_fraction=0.2).fit(X, Y).predict(X)
    second = fast(validation_fraction=0.2).fit(X, Y).predict(X)
    np.testing.assert_array_equal(first, second)


def test_fit_leaves_global_torch_rng_alone():
    X, Y = make_data()
    before = torch.random.get_rng_state()
    fast().fit(X, Y)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_network_in_eval_mode_after_fit():
    X, Y = make_data()
    assert not fast().fit(X, Y).network_.training


def test_nonfinite_training_loss_warns():
    X, Y = make_data()
    with pytest.warns(SkrnafmWarning, match="training loss is not finite"):
        fast(learning_rate=1e30, max_epochs=3, validation_fraction=0.0).fit(X, Y * 1e30)


# ---------------------------------------------------------------- precision and device


def test_precision_auto_is_fp32_on_cpu():
    model = fast(precision="auto")
    assert model._resolved_precision(torch.device("cpu")) == "fp32"


def test_precision_bf16_kept_on_cpu_when_requested():
    model = fast(precision="bf16")
    assert model._resolved_precision(torch.device("cpu")) == "bf16"


def test_precision_bf16_close_to_fp32():
    X, Y = make_data(n_samples=100)
    fp32 = fast(max_epochs=10, precision="fp32").fit(X, Y).predict(X)
    bf16 = fast(max_epochs=10, precision="bf16").fit(X, Y).predict(X)
    assert np.max(np.abs(bf16 - fp32)) < 0.1 * np.std(fp32)


def test_device_cpu_keeps_network_on_cpu():
    X, Y = make_data()
    model = fast(device="cpu").fit(X, Y)
    assert model._network_device().type == "cpu"


# ---------------------------------------------------------------- pickling


def test_pickle_round_trip_predicts_the_same():
    X, Y = make_data()
    model = fast().fit(X, Y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_pickle_from_cuda_loads_on_cpu_with_warning():
    # A model pickled on a GPU records that device; without CUDA it must
    # stay on the CPU, warn, and still predict.
    X, Y = make_data()
    model = fast(device="cpu").fit(X, Y)
    state = model.__getstate__()
    state["_saved_network_device"] = "cuda:0"
    restored = LinearTokenRegressor.__new__(LinearTokenRegressor)
    with mock.patch.object(torch.cuda, "is_available", return_value=False):
        with pytest.warns(SkrnafmWarning, match="saved with its network on 'cuda:0'"):
            restored.__setstate__(state)
    assert restored._network_device().type == "cpu"
    assert restored.device == "cpu"
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_pickle_from_cpu_loads_without_warning():
    X, Y = make_data()
    model = fast().fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.loads(pickle.dumps(model))


def test_verbose_shows_epoch_progress(capsys):
    X, Y = make_data()
    fast(verbose=1, max_epochs=2).fit(X, Y)
    assert "LinearTokenRegressor" in capsys.readouterr().err
