"""Tests of the safe model format (save / load_model) and of joblib persistence."""

import json
import pickle
import warnings
from unittest import mock

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from sklearn.exceptions import NotFittedError

from skrnafm.estimators import BaseTorchRegressor, RNAFlowRegressor, load_model
from skrnafm.estimators._persistence import save_model
from skrnafm.exceptions import GeneSetWarning, SkrnafmWarning

GENES = ["ERBB2", "ESR1", "PGR", "MKI67", "GATA3"]


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    # The networks here are tiny, so intra-op threads only add synchronization,
    # which made fits many times slower on a busy 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_data(n_samples=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, 8))
    Y = pd.DataFrame(X[:, :1] * np.linspace(-1, 1, 5) + 0.3 * rng.normal(size=(n_samples, 5)), columns=GENES)
    return X, Y


@pytest.fixture(scope="module")
def fitted():
    X, Y = make_data()
    model = RNAFlowRegressor(
        pathways={"growth": ["ERBB2", "MKI67"], "hormone": ["ESR1", "PGR"]},
        hidden_dim=8,
        depth=1,
        n_heads=2,
        max_epochs=2,
        n_samples=4,
        n_tokens=2,
        precision="fp32",
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeneSetWarning)
        model.fit(X, Y)
    return model, X


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    model, _ = fitted
    path = tmp_path_factory.mktemp("model") / "flow.safetensors"
    model.save(path)
    return path


def test_save_load_predicts_the_same(fitted, saved):
    model, X = fitted
    restored = load_model(saved)
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_load_restores_class_and_params(fitted, saved):
    model, _ = fitted
    restored = load_model(saved)
    assert type(restored) is RNAFlowRegressor
    assert restored.get_params() == model.get_params()


def test_load_restores_fitted_attributes(fitted, saved):
    model, _ = fitted
    restored = load_model(saved)
    assert restored.gene_names_.tolist() == GENES
    assert restored.n_tokens_ == 2
    assert restored.history_ == model.history_
    np.testing.assert_array_equal(restored.target_mean_, model.target_mean_)
    np.testing.assert_array_equal(restored.spread_scale_, model.spread_scale_)
    np.testing.assert_array_equal(restored.validation_indices_, model.validation_indices_)


def test_load_restores_gene_sets(fitted, saved):
    model, _ = fitted
    restored = load_model(saved)
    assert restored.gene_sets_.set_names == model.gene_sets_.set_names
    assert [m.tolist() for m in restored.gene_sets_.members] == [m.tolist() for m in model.gene_sets_.members]
    assert restored.gene_sets_.background.tolist() == [4]


def test_saved_file_is_safetensors_with_json_header(saved):
    with safe_open(str(saved), framework="pt") as handle:
        metadata = handle.metadata()
        keys = list(handle.keys())
    assert metadata["format"] == "skrnafm-model"
    assert json.loads(metadata["params"])["hidden_dim"] == 8
    assert any(key.startswith("network.") for key in keys)


def test_load_on_explicit_device(saved):
    restored = load_model(saved, device="cpu")
    assert next(restored.network_.parameters()).device.type == "cpu"


def test_load_unavailable_device_falls_back_to_cpu(fitted, tmp_path):
    model, X = fitted
    path = tmp_path / "cuda.safetensors"
    model.set_params(device="cuda")
    try:
        model.save(path)
    finally:
        model.set_params(device="auto")
    with mock.patch.object(torch.cuda, "is_available", return_value=False):
        with pytest.warns(SkrnafmWarning, match="device='cuda', which is not available"):
            restored = load_model(path)
    assert restored.device == "cpu"
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_load_never_unpickles(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_WritesMarker(str(marker))))
    with pytest.raises(ValueError, match="not a readable safetensors model file"):
        load_model(path)
    assert not marker.exists()


def test_load_other_safetensors_file_raises(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a skrnafm model file"):
        load_model(path)


def test_load_unknown_class_raises(saved, tmp_path):
    path = _rewrite_metadata(saved, tmp_path, **{"class": "os.system"})
    with pytest.raises(ValueError, match="unknown estimator class 'os.system'"):
        load_model(path)


def test_load_non_regressor_class_raises(saved, tmp_path):
    path = _rewrite_metadata(saved, tmp_path, **{"class": "make_rnafm_pipeline"})
    with pytest.raises(ValueError, match="not a skrnafm torch regressor"):
        load_model(path)


def test_load_newer_format_raises(saved, tmp_path):
    path = _rewrite_metadata(saved, tmp_path, format_version="99")
    with pytest.raises(ValueError, match="format version 99"):
        load_model(path)


def test_load_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="Model file not found"):
        load_model(tmp_path / "absent.safetensors")


def test_save_unfitted_raises(tmp_path):
    with pytest.raises(NotFittedError):
        RNAFlowRegressor().save(tmp_path / "model.safetensors")


def test_save_random_state_instance_raises(fitted, tmp_path):
    model, _ = fitted
    model.set_params(random_state=np.random.RandomState(0))
    try:
        with pytest.raises(TypeError, match="random_state=RandomState"):
            model.save(tmp_path / "model.safetensors")
    finally:
        model.set_params(random_state=0)


def test_save_model_rejects_other_estimators(tmp_path):
    from sklearn.linear_model import Ridge

    with pytest.raises(TypeError, match="expects a skrnafm torch regressor, got Ridge"):
        save_model(Ridge(), tmp_path / "ridge.safetensors")


def test_load_custom_subclass_with_extra_classes(tmp_path):
    X, Y = make_data()
    model = _LinearRegressor(max_epochs=2, random_state=0).fit(X, Y.to_numpy())
    path = model.save(tmp_path / "linear.safetensors")
    with pytest.raises(ValueError, match="Pass the class in extra_classes"):
        load_model(path)
    restored = load_model(path, extra_classes=[_LinearRegressor])
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_joblib_round_trip_predicts_the_same(fitted, tmp_path):
    model, X = fitted
    path = tmp_path / "flow.joblib"
    joblib.dump(model, path)
    np.testing.assert_array_equal(joblib.load(path).predict(X), model.predict(X))


class _WritesMarker:
    """Pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _LinearRegressor(BaseTorchRegressor):
    def _build_network(self, n_tokens, token_dim, n_genes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_tokens * token_dim, n_genes))

    def _training_loss(self, network, tokens, targets_std, generator):
        return torch.mean((network(tokens).float() - targets_std) ** 2)

    def _predict_standardized(self, network, tokens):
        return network(tokens)


def _rewrite_metadata(source, tmp_path, **changes):
    """Copy a saved model with some header fields replaced."""
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    metadata.update(changes)
    path = tmp_path / "changed.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path
