"""Tests for the HE2RNA, tRNAsformer and SEQUOIA baselines and their networks."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skrnafm.datasets import make_synthetic_cohort
from skrnafm.estimators import (
    HE2RNARegressor,
    SequoiaRegressor,
    TRNAsformerRegressor,
    load_model,
)
from skrnafm.features import SuperTilePooler
from skrnafm.metrics import cross_val_predict_genes, gene_pearson_scorer, pearson_per_gene
from skrnafm.nn import HE2RNANet, SequoiaNet, TRNAsformerNet

N_TOKENS = 4
EMBEDDING_DIM = 8

SMALL = {
    HE2RNARegressor: {"hidden_dim": 32},
    TRNAsformerRegressor: {"hidden_dim": 16, "depth": 2, "n_heads": 2},
    SequoiaRegressor: {"hidden_dim": 16, "depth": 2, "n_heads": 2},
}
BASELINES = list(SMALL)


def _small(cls, **overrides):
    params = {
        **SMALL[cls],
        "n_tokens": N_TOKENS,
        "max_epochs": 40,
        "learning_rate": 3e-3,
        "batch_size": 16,
        "ema_warmup_steps": 0,
        "ema_decay": 0.9,
        "device": "cpu",
        "precision": "fp32",
        "random_state": 0,
    }
    params.update(overrides)
    return cls(**params)


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Tiny networks run faster on one thread than on two busy ones.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cohort(data_dir):
    """Semi-synthetic cohort with real TCGA-BRCA gene means and deviations."""
    return make_synthetic_cohort(
        30,
        slides_per_patient=2,
        n_genes=40,
        n_clusters=N_TOKENS,
        embedding_dim=EMBEDDING_DIM,
        n_factors=3,
        feature_noise=0.3,
        data_home=data_dir,
        random_state=0,
    )


# --- networks ----------------------------------------------------------------


def test_he2rna_net_top_k_mean():
    net = HE2RNANet(5, 3, hidden_dim=8).eval()
    tokens = torch.randn(2, 6, 5)
    scores = net.tile_scores(tokens)

    top2 = net(tokens, k=2)

    expected = scores.sort(dim=1, descending=True).values[:, :2].mean(dim=1)
    torch.testing.assert_close(top2, expected)


def test_he2rna_net_inference_averages_capped_k():
    net = HE2RNANet(5, 3, hidden_dim=8).eval()
    tokens = torch.randn(2, 6, 5)

    averaged = net(tokens)

    assert net.candidate_k(6) == [1, 2, 5, 6]
    expected = torch.stack([net(tokens, k=k) for k in (1, 2, 5, 6)]).mean(dim=0)
    torch.testing.assert_close(averaged, expected)


@pytest.mark.parametrize("net_class", [TRNAsformerNet, SequoiaNet])
def test_token_net_output_shape_and_projection(net_class):
    projected = net_class(4, 6, 3, hidden_dim=8, depth=2, n_heads=2)
    unprojected = net_class(4, 8, 3, hidden_dim=8, depth=2, n_heads=2)

    assert projected(torch.randn(5, 4, 6)).shape == (5, 3)
    assert isinstance(projected.token_input.projection, torch.nn.Linear)
    assert isinstance(unprojected.token_input.projection, torch.nn.Identity)


def test_sequoia_mixing_matches_per_head_reference():
    net = SequoiaNet(4, 8, 3, hidden_dim=8, depth=1, n_heads=2)
    mixing = net.blocks[0].attention
    x = torch.randn(3, 4, 8)

    heads = []
    for h in range(2):
        rows = slice(4 * h, 4 * h + 4)
        token_ln = (mixing.token_norm.weight[h], mixing.token_norm.bias[h])
        summary_ln = (mixing.summary_norm.weight[h], mixing.summary_norm.bias[h])
        local = torch.nn.functional.linear(
            x, mixing.token_projection.weight[rows], mixing.token_projection.bias[rows]
        )
        local = torch.nn.functional.gelu(torch.nn.functional.layer_norm(local, (4,), *token_ln))
        summary = torch.nn.functional.linear(
            x, mixing.summary_projection.weight[rows], mixing.summary_projection.bias[rows]
        ).mean(dim=1, keepdim=True)
        summary = torch.nn.functional.gelu(torch.nn.functional.layer_norm(summary, (4,), *summary_ln))
        both = torch.cat([local, summary.expand_as(local)], dim=-1)
        weight = torch.cat([mixing.mix_token[h], mixing.mix_summary[h]], dim=0)
        heads.append(torch.nn.functional.gelu(both @ weight + mixing.mix_bias[h]))
    expected = mixing.out_projection(torch.cat(heads, dim=-1))

    torch.testing.assert_close(mixing(x), expected)


def test_sequoia_net_summary_mixes_tokens():
    net = SequoiaNet(4, 8, 3, hidden_dim=8, depth=1, n_heads=2).eval()
    block = net.blocks[0]
    tokens = torch.randn(1, 4, 8)
    changed = tokens.clone()
    changed[0, 3] += 1.0

    before = block(tokens)
    after = block(changed)

    # The slide summary branch carries a change of token 3 to token 0.
    assert not torch.allclose(before[0, 0], after[0, 0])


# --- estimators ----------------------------------------------------------------


@pytest.mark.parametrize("cls", BASELINES)
def test_baseline_learns_signal(cls, cohort):
    train = np.arange(len(cohort.groups)) < 44

    model = _small(cls).fit(cohort.X[train], cohort.Y[train], groups=cohort.groups[train])
    r = pearson_per_gene(cohort.Y[~train], model.predict(cohort.X[~train]))

    assert r.mean() > 0.3


@pytest.mark.parametrize("cls", BASELINES)
def test_baseline_predicts_on_target_scale(cls, cohort):
    Y = cohort.Y.to_numpy() * 100.0 + 1000.0

    model = _small(cls, max_epochs=2).fit(cohort.X, Y)
    prediction = model.predict(cohort.X)

    np.testing.assert_allclose(prediction.mean(axis=0), Y.mean(axis=0), rtol=0.05)
    assert model.gene_validation_score_.shape == (Y.shape[1],)


@pytest.mark.parametrize("cls", BASELINES)
def test_baseline_accepts_3d_tokens(cls, cohort):
    tokens = cohort.X.reshape(-1, N_TOKENS, EMBEDDING_DIM)

    model = _small(cls, max_epochs=1, n_tokens="auto").fit(tokens, cohort.Y)

    assert model.n_tokens_ == N_TOKENS
    assert model.predict(tokens).shape == cohort.Y.shape


@pytest.mark.parametrize("cls", BASELINES)
def test_baseline_save_and_pickle_round_trip(cls, cohort, tmp_path):
    model = _small(cls, max_epochs=1).fit(cohort.X, cohort.Y)
    expected = model.predict(cohort.X[:5])

    loaded = load_model(model.save(tmp_path / "model.safetensors"))
    unpickled = pickle.loads(pickle.dumps(model))

    np.testing.assert_allclose(loaded.predict(cohort.X[:5]), expected, rtol=1e-5)
    np.testing.assert_allclose(unpickled.predict(cohort.X[:5]), expected, rtol=1e-5)


@pytest.mark.parametrize("cls", [TRNAsformerRegressor, SequoiaRegressor])
def test_baseline_heads_must_divide_width(cls, cohort):
    model = _small(cls, hidden_dim=None, n_heads=3, max_epochs=1)

    with pytest.raises(ValueError, match="token width D=8 must be a multiple of n_heads=3"):
        model.fit(cohort.X, cohort.Y)


def test_he2rna_rejects_bad_top_k(cohort):
    model = _small(HE2RNARegressor, top_k=(1, 0))

    with pytest.raises(ValueError, match=r"top_k must be .* positive integers, got \(1, 0\)"):
        model.fit(cohort.X, cohort.Y)


# --- the same features for every regressor ----------------------------------


def test_sklearn_regressors_on_pooled_features():
    rng = np.random.default_rng(0)
    slides = [rng.normal(size=(rng.integers(20, 40), EMBEDDING_DIM)) for _ in range(12)]
    X = SuperTilePooler(n_clusters=N_TOKENS, random_state=0).fit_transform(slides)
    Y = rng.normal(size=(12, 3))

    for regressor in (Ridge(), PLSRegression(n_components=2), _small(HE2RNARegressor, max_epochs=1)):
        prediction = clone(regressor).fit(X, Y).predict(X)
        assert prediction.shape == (12, 3)


@pytest.mark.parametrize(
    "regressor",
    [
        Ridge(alpha=10.0),
        PLSRegression(n_components=3),
        _small(HE2RNARegressor, max_epochs=10),
        _small(TRNAsformerRegressor, max_epochs=10),
        _small(SequoiaRegressor, max_epochs=10),
    ],
    ids=lambda regressor: type(regressor).__name__,
)
def test_cross_val_score_grouped_gene_r(regressor, cohort):
    scores = cross_val_score(
        make_pipeline(StandardScaler(), regressor),
        cohort.X,
        cohort.Y,
        groups=cohort.groups,
        cv=GroupKFold(3),
        scoring=gene_pearson_scorer,
    )

    assert scores.shape == (3,)
    assert np.all(np.isfinite(scores))


def test_cross_val_predict_genes_honest_from_validation(cohort):
    result = cross_val_predict_genes(
        _small(SequoiaRegressor, max_epochs=5),
        cohort.X,
        cohort.Y,
        groups=cohort.groups,
        cv=3,
    )

    assert result.predictions.shape == cohort.Y.shape
    assert result.ranking_scores[0].shape == (cohort.Y.shape[1],)
    assert "mean_r_honest" in result.summary
