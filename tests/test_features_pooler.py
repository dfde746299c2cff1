"""Tests of SuperTilePooler on generated embeddings."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from skrnafm.exceptions import SkrnafmWarning
from skrnafm.features import SuperTilePooler, TileEmbeddings, super_tile_feature_names


def _embeddings(features, name="slide.svs", error=None):
    features = np.asarray(features, dtype=np.float32)
    return TileEmbeddings(
        features=features,
        coords=np.zeros((features.shape[0], 2), dtype=np.int64),
        slide=name,
        encoder="test",
        error=error,
    )


@pytest.fixture
def slides():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(n, 4)).astype(np.float32) for n in (40, 25, 60)]


def test_pooler_output_shape_and_dtype(slides):
    out = SuperTilePooler(n_clusters=5).fit_transform(slides)

    assert out.shape == (3, 20)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_pooler_fitted_attributes(slides):
    pooler = SuperTilePooler(n_clusters=5).fit(slides)

    assert pooler.n_clusters_ == 5
    assert pooler.embedding_dim_ == 4
    assert pooler.n_features_in_ == 4


def test_pooler_cluster_major_sorted_by_size():
    big = np.tile([[10.0, 0.0]], (7, 1)) + np.linspace(0, 0.1, 7)[:, None]
    small = np.tile([[-10.0, 5.0]], (3, 1))
    tiles = np.vstack([small, big])

    out = SuperTilePooler(n_clusters=2).fit_transform([tiles])[0]

    np.testing.assert_allclose(out[:2], big.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out[2:], small.mean(axis=0), rtol=1e-6)


def test_pooler_fewer_distinct_tiles_repeat_in_order():
    tiles = np.array([[1.0, 1.0]] * 3 + [[2.0, 2.0]] * 2 + [[0.0, 5.0]] * 2)

    out = SuperTilePooler(n_clusters=5).fit_transform([tiles])[0].reshape(5, 2)

    # Sizes 3, 2, 2; the tie between the two 2-tile clusters goes to the
    # lexicographically smaller mean, then slots repeat cluster k mod 3.
    expected = np.array([[1.0, 1.0], [0.0, 5.0], [2.0, 2.0], [1.0, 1.0], [0.0, 5.0]])
    np.testing.assert_array_equal(out, expected)


def test_pooler_single_tile_slide_fills_every_slot():
    out = SuperTilePooler(n_clusters=4).fit_transform([np.array([[3.0, -1.0]])])

    np.testing.assert_array_equal(out, np.tile([[3.0, -1.0]], (1, 4)))


def test_pooler_duplicate_tiles_never_nan():
    tiles = np.ones((500, 8), dtype=np.float32)

    out = SuperTilePooler(n_clusters=100).fit_transform([tiles])

    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.ones((1, 800), dtype=np.float32))


def test_pooler_is_deterministic(slides):
    first = SuperTilePooler(n_clusters=6).fit_transform(slides)
    second = SuperTilePooler(n_clusters=6).fit_transform(slides)

    np.testing.assert_array_equal(first, second)


def test_pooler_row_independent_of_position(slides):
    forward = SuperTilePooler(n_clusters=6).fit_transform(slides)
    backward = SuperTilePooler(n_clusters=6).fit_transform(slides[::-1])

    np.testing.assert_array_equal(forward, backward[::-1])


def test_pooler_accepts_tile_embeddings_and_3d_array(slides):
    as_arrays = SuperTilePooler(n_clusters=3).fit_transform([s[:20] for s in slides])
    as_objects = SuperTilePooler(n_clusters=3).fit_transform([_embeddings(s[:20]) for s in slides])
    as_cube = SuperTilePooler(n_clusters=3).fit_transform(np.stack([s[:20] for s in slides]))

    np.testing.assert_array_equal(as_objects, as_arrays)
    np.testing.assert_array_equal(as_cube, as_arrays)


def test_pooler_2d_array_is_one_tile_per_slide():
    X = np.arange(6, dtype=np.float32).reshape(3, 2)

    with pytest.warns(SkrnafmWarning, match=r"wrap it in a list"):
        out = SuperTilePooler(n_clusters=2).fit_transform(X)

    np.testing.assert_array_equal(out, np.hstack([X, X]))


def test_pooler_2d_array_warns_once_in_fit_transform():
    X = np.random.default_rng(0).random((50, 4))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SuperTilePooler(n_clusters=2).fit_transform(X)

    assert len(caught) == 1
    assert issubclass(caught[0].category, UserWarning)
    assert "50 rows as a slide with one tile" in str(caught[0].message)


@pytest.mark.parametrize("n_clusters", [1, 2])
def test_pooler_list_and_one_cluster_do_not_warn(n_clusters):
    tiles = np.random.default_rng(0).random((50, 4))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SuperTilePooler(n_clusters=n_clusters).fit_transform([tiles])
        SuperTilePooler(n_clusters=1).fit_transform(tiles)


def test_pooler_nan_embeddings_name_slide(slides):
    bad = slides[1].copy()
    bad[3, 2] = np.nan

    with pytest.raises(ValueError, match=r"slide 1 \('bad\.svs'\).*NaN.*1 of 25 tiles"):
        SuperTilePooler(n_clusters=3).fit_transform(
            [_embeddings(slides[0]), _embeddings(bad, "bad.svs")]
        )


def test_pooler_empty_slide_raises_with_error(slides):
    failed = _embeddings(np.zeros((0, 4)), "lost.svs", error="SlideNotFoundError: gone")

    with pytest.raises(ValueError, match=r"slide 1 \('lost\.svs'\) has no tiles.*gone"):
        SuperTilePooler(n_clusters=3).fit_transform([_embeddings(slides[0]), failed])


def test_pooler_empty_slide_nan_row_keeps_alignment(slides):
    failed = _embeddings(np.zeros((0, 4)), "lost.svs", error="gone")
    items = [_embeddings(slides[0]), failed, _embeddings(slides[2])]

    out = SuperTilePooler(n_clusters=3, on_empty="nan").fit_transform(items)

    assert out.shape == (3, 12)
    assert np.isnan(out[1]).all()
    assert np.isfinite(out[[0, 2]]).all()


def test_pooler_empty_list_raises():
    with pytest.raises(ValueError, match="empty list of slides"):
        SuperTilePooler().fit([])


def test_pooler_mixed_dims_raise(slides):
    with pytest.raises(ValueError, match=r"different lengths \[4, 5\]"):
        SuperTilePooler(n_clusters=2).fit([slides[0], np.zeros((3, 5))])


def test_pooler_transform_other_dim_raises(slides):
    pooler = SuperTilePooler(n_clusters=2).fit(slides)

    with pytest.raises(ValueError, match="fitted on length 4"):
        pooler.transform([np.zeros((3, 5))])


def test_pooler_rejects_1d_slide():
    with pytest.raises(ValueError, match=r"must be 2-D"):
        SuperTilePooler(n_clusters=2).fit([np.zeros((3, 2)), np.zeros((2, 2, 2))])


def test_pooler_feature_names(slides):
    pooler = SuperTilePooler(n_clusters=2).fit(slides)

    names = pooler.get_feature_names_out()

    assert list(names[:5]) == ["st0_f0", "st0_f1", "st0_f2", "st0_f3", "st1_f0"]
    assert len(names) == 8
    assert list(super_tile_feature_names(2, 4)) == list(names)


def test_pooler_pandas_output(slides):
    pytest.importorskip("pandas")
    pooler = SuperTilePooler(n_clusters=2).set_output(transform="pandas")

    frame = pooler.fit_transform(slides)

    assert frame.shape == (3, 8)
    assert list(frame.columns) == list(super_tile_feature_names(2, 4))


def test_pooler_feeds_ridge_in_pipeline(slides):
    y = np.array([0.5, 1.0, -0.2])

    pipe = make_pipeline(SuperTilePooler(n_clusters=2), Ridge(alpha=1.0)).fit(slides, y)

    assert pipe.predict(slides).shape == (3,)


def test_pooler_clone_keeps_params():
    pooler = SuperTilePooler(n_clusters=7, n_init=1, on_empty="nan", random_state=3)

    assert clone(pooler).get_params() == pooler.get_params()
