"""Tests of WSIFeaturizer on the real slides, plus generated corner cases."""

import pickle
import shutil
import warnings

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline

from skrnafm.exceptions import MissingResolutionError, SlideReadWarning
from skrnafm.features import (
    SuperTilePooler,
    TileEmbeddings,
    WSIFeaturizer,
    failed_slides,
)
from skrnafm.features._featurizer import _SlideJob
from skrnafm.slide import SlideRegion

# Few tiles keep every encoder run here to a second or two.
SMALL = {"max_tiles": 6, "batch_size": 4}


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Run the encoder on one thread: on a busy shared machine a two-thread
    OpenMP team can run many times slower than one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embedding_cache")


@pytest.fixture(scope="module")
def cmu_embeddings(cmu_slide, cache_dir):
    """The whole CMU slide with default settings, written to the cache."""
    return WSIFeaturizer(cache_dir=cache_dir).fit_transform([cmu_slide])


@pytest.fixture
def white_png(tmp_path):
    path = tmp_path / "blank.png"
    Image.fromarray(np.full((600, 600, 3), 255, dtype=np.uint8)).save(path)
    return path


def test_featurizer_cmu_shapes(cmu_embeddings, cmu_slide):
    (item,) = cmu_embeddings

    assert isinstance(item, TileEmbeddings)
    assert item.features.shape == (item.n_tiles, 1280)
    assert item.n_tiles > 20
    assert item.features.dtype == np.float32
    assert item.coords.shape == (item.n_tiles, 2)
    assert item.coords.dtype == np.int64
    assert np.isfinite(item.features).all()
    assert item.slide == str(cmu_slide)
    assert item.encoder == "efficientnet_lite0"
    assert item.mpp == pytest.approx(0.499)
    assert not item.failed


def test_featurizer_then_pooler_on_cmu(cmu_embeddings):
    features = SuperTilePooler(n_clusters=16).fit_transform(cmu_embeddings)

    assert features.shape == (1, 16 * 1280)
    assert np.isfinite(features).all()


def test_featurizer_second_call_reads_cache(cmu_embeddings, cmu_slide, cache_dir):
    again = WSIFeaturizer(cache_dir=cache_dir).fit_transform([cmu_slide])

    assert again[0].metadata["from_cache"]
    assert not cmu_embeddings[0].metadata["from_cache"]
    np.testing.assert_array_equal(again[0].features, cmu_embeddings[0].features)
    np.testing.assert_array_equal(again[0].coords, cmu_embeddings[0].coords)


def test_featurizer_cache_is_one_file_per_slide(cmu_embeddings, cache_dir):
    files = sorted(cache_dir.glob("cmu-1-small-region*.npz"))

    assert len(files) == 1
    assert not list(cache_dir.glob("*.tmp"))


def test_cache_truncated_file_recomputed(cmu_slide, tmp_path, caplog):
    featurizer = WSIFeaturizer(cache_dir=tmp_path, **SMALL)
    first = featurizer.transform([cmu_slide])
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(path.read_bytes()[:200])

    with caplog.at_level("WARNING", logger="skrnafm.features._cache"):
        second = featurizer.transform([cmu_slide])

    assert "unreadable cache file" in caplog.text
    assert not second[0].metadata["from_cache"]
    np.testing.assert_allclose(second[0].features, first[0].features, rtol=1e-5, atol=1e-5)
    assert featurizer.transform([cmu_slide])[0].metadata["from_cache"]


def test_cache_file_from_other_parameters_recomputed(cmu_slide, tmp_path, caplog):
    WSIFeaturizer(cache_dir=tmp_path / "a", **SMALL).transform([cmu_slide])
    WSIFeaturizer(cache_dir=tmp_path / "b", **{**SMALL, "max_tiles": 3}).transform([cmu_slide])
    (file_a,) = (tmp_path / "a").glob("*.npz")
    (file_b,) = (tmp_path / "b").glob("*.npz")
    # Put the 3-tile result under the 6-tile file name, as a stale copy would.
    shutil.copy(file_b, file_a)

    with caplog.at_level("WARNING", logger="skrnafm.features._cache"):
        result = WSIFeaturizer(cache_dir=tmp_path / "a", **SMALL).transform([cmu_slide])

    assert "other parameters" in caplog.text
    assert result[0].n_tiles == 6


def test_cache_key_covers_parameters(cmu_slide, tmp_path):
    encoder_info = WSIFeaturizer(cache_dir=tmp_path)
    job = _SlideJob(encoder_info, "efficientnet_lite0")
    encoder, device, dtype = job.prepare()
    base = job.cache_key(cmu_slide, encoder, dtype)

    variants = {
        "tile_size": 224,
        "max_tiles": 100,
        "target_mpp": 1.0,
        "random_state": 1,
        "mpp": 0.25,
        "min_tissue_fraction": 0.5,
    }
    for name, value in variants.items():
        other = _SlideJob(clone(encoder_info).set_params(**{name: value}), "efficientnet_lite0")
        assert other.cache_key(cmu_slide, encoder, dtype) != base, name
    assert job.cache_key(cmu_slide, encoder, torch.float32) != job.cache_key(
        cmu_slide, encoder, torch.bfloat16
    )
    region = SlideRegion(cmu_slide, bbox=(0, 0, 512, 512))
    moved = SlideRegion(cmu_slide, bbox=(8, 0, 512, 512))
    assert job.cache_key(region, encoder, dtype) != job.cache_key(moved, encoder, dtype)
    assert job.cache_key(cmu_slide, encoder, dtype) == base


def test_cache_disabled_for_unseeded_sampling(cmu_slide, tmp_path):
    job = _SlideJob(WSIFeaturizer(cache_dir=tmp_path, random_state=None), "efficientnet_lite0")
    encoder, _, dtype = job.prepare()

    assert job.cache_key(cmu_slide, encoder, dtype) is None


def test_featurizer_warn_keeps_good_and_names_broken(cmu_slide, tcga_slide, tmp_path):
    missing = tmp_path / "missing.svs"
    featurizer = WSIFeaturizer(on_error="warn", **SMALL)

    with pytest.warns(SlideReadWarning) as record:
        out = featurizer.transform([tcga_slide, cmu_slide, missing])

    messages = [str(w.message) for w in record if issubclass(w.category, SlideReadWarning)]
    assert len(out) == 3
    assert out[1].n_tiles == 6
    assert out[0].n_tiles == 0
    assert out[2].n_tiles == 0
    assert any("tcga-cr-7395" in m and "MissingResolutionError" in m for m in messages)
    assert any("missing.svs" in m and "not found" in m for m in messages)
    assert [index for index, _, _ in failed_slides(out)] == [0, 2]


def test_featurizer_failed_slide_keeps_row_alignment(cmu_slide, tmp_path):
    featurizer = WSIFeaturizer(on_error="skip", **SMALL)
    out = featurizer.transform([tmp_path / "missing.svs", cmu_slide])

    X = SuperTilePooler(n_clusters=2, on_empty="nan").fit_transform(out)

    assert np.isnan(X[0]).all()
    assert np.isfinite(X[1]).all()
    with pytest.raises(ValueError, match=r"slide 0 \('.*missing\.svs'\) has no tiles"):
        SuperTilePooler(n_clusters=2).fit_transform(out)


def test_featurizer_skip_does_not_warn(tmp_path, cmu_slide):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlideReadWarning)
        out = WSIFeaturizer(on_error="skip", **SMALL).transform([tmp_path / "absent.svs", cmu_slide])

    assert out[0].failed
    assert "SlideNotFoundError" in out[0].error


def test_featurizer_raise_on_missing_resolution(tcga_slide):
    with pytest.raises(MissingResolutionError, match="mpp="):
        WSIFeaturizer(**SMALL).transform([tcga_slide])


def test_featurizer_mpp_override_reads_slide(tcga_slide):
    (item,) = WSIFeaturizer(mpp=0.5, **SMALL).transform([tcga_slide])

    assert item.n_tiles == 6
    assert item.mpp == 0.5


def test_featurizer_blank_image_warns_no_tissue(white_png):
    with pytest.warns(SlideReadWarning, match="NoTissueError"):
        (item,) = WSIFeaturizer(mpp=0.5, on_error="warn", **SMALL).transform([white_png])

    assert item.failed


def test_featurizer_garbage_file_warns(tmp_path):
    path = tmp_path / "garbage.svs"
    path.write_bytes(b"not a slide at all" * 100)

    with pytest.warns(SlideReadWarning, match="garbage.svs"):
        (item,) = WSIFeaturizer(on_error="warn", **SMALL).transform([path])

    assert item.n_tiles == 0


def test_featurizer_empty_list_raises():
    with pytest.raises(ValueError, match="empty list of slides"):
        WSIFeaturizer().fit_transform([])


def test_featurizer_single_path_raises(cmu_slide):
    with pytest.raises(ValueError, match=r"wrap it in a list"):
        WSIFeaturizer().transform(str(cmu_slide))


def test_featurizer_rejects_non_path_items():
    with pytest.raises(ValueError, match=r"X\[1\] must be a slide path"):
        WSIFeaturizer().fit(["a.svs", 3.5])


def test_featurizer_invalid_param_raises(cmu_slide):
    with pytest.raises(ValueError, match="on_error"):
        WSIFeaturizer(on_error="ignore").fit([cmu_slide])


def test_featurizer_region_coords_inside_bbox(cmu_slide):
    region = SlideRegion(cmu_slide, bbox=(512, 1024, 1024, 1024), name="cmu_part")

    (item,) = WSIFeaturizer(**SMALL).transform([region])

    assert item.slide == "cmu_part"
    assert item.n_tiles > 0
    assert (item.coords[:, 0] >= 512 - 256).all()
    assert (item.coords[:, 1] >= 1024 - 256).all()
    assert (item.coords[:, 0] < 512 + 1024).all()


def test_featurizer_reader_threads_same_features(cmu_slide):
    inline = WSIFeaturizer(num_workers=0, precision="fp32", max_tiles=7, batch_size=2)
    threaded = clone(inline).set_params(num_workers=3)

    first = inline.transform([cmu_slide])[0]
    second = threaded.transform([cmu_slide])[0]

    np.testing.assert_array_equal(second.coords, first.coords)
    np.testing.assert_allclose(second.features, first.features, rtol=1e-4, atol=1e-4)


def test_featurizer_bf16_close_to_fp32(cmu_slide):
    fp32 = WSIFeaturizer(precision="fp32", max_tiles=8, batch_size=8).transform([cmu_slide])[0]
    bf16 = WSIFeaturizer(precision="bf16", max_tiles=8, batch_size=8).transform([cmu_slide])[0]

    a = fp32.features.astype(np.float64)
    b = bf16.features.astype(np.float64)
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    assert cosine.min() > 0.99


def test_featurizer_threading_backend_matches_sequential(cmu_slide):
    region = SlideRegion(cmu_slide, bbox=(0, 0, 1200, 1500))
    slides = [cmu_slide, region]
    sequential = WSIFeaturizer(precision="fp32", **SMALL).transform(slides)

    with joblib.parallel_config(backend="threading"):
        parallel = WSIFeaturizer(precision="fp32", n_jobs=2, **SMALL).transform(slides)

    assert [item.slide for item in parallel] == [item.slide for item in sequential]
    for got, expected in zip(parallel, sequential):
        np.testing.assert_allclose(got.features, expected.features, rtol=1e-4, atol=1e-4)


def test_featurizer_dask_local_cluster(cmu_slide, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    slides = [cmu_slide, SlideRegion(cmu_slide, bbox=(0, 0, 1200, 1500)), tmp_path / "none.svs"]
    featurizer = WSIFeaturizer(precision="fp32", n_jobs=2, on_error="warn", **SMALL)
    expected = WSIFeaturizer(precision="fp32", on_error="skip", **SMALL).transform(slides[:2])

    # An in-process cluster talks over the inproc:// transport: no sockets.
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster, distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"), pytest.warns(SlideReadWarning, match="none.svs"):
            out = featurizer.transform(slides)

    assert out[2].failed
    for got, want in zip(out[:2], expected):
        np.testing.assert_allclose(got.features, want.features, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_featurizer_loky_processes(cmu_slide):
    slides = [cmu_slide, SlideRegion(cmu_slide, bbox=(0, 0, 1200, 1500))]
    expected = WSIFeaturizer(precision="fp32", **SMALL).transform(slides)

    out = WSIFeaturizer(precision="fp32", n_jobs=2, **SMALL).transform(slides)

    for got, want in zip(out, expected):
        np.testing.assert_allclose(got.features, want.features, rtol=1e-4, atol=1e-4)


def test_featurizer_verbose_shows_progress(cmu_slide, capsys):
    WSIFeaturizer(verbose=1, **SMALL).transform([cmu_slide])

    assert "slide" in capsys.readouterr().err


def test_featurizer_clone_and_pickle_keep_params(tmp_path):
    featurizer = WSIFeaturizer(target_mpp=1.0, cache_dir=tmp_path, on_error="warn", n_jobs=2)

    assert clone(featurizer).get_params() == featurizer.get_params()
    assert pickle.loads(pickle.dumps(featurizer)).get_params() == featurizer.get_params()


def test_featurizer_transform_without_fit(cmu_slide):
    (item,) = WSIFeaturizer(max_tiles=2).transform([cmu_slide])

    assert item.n_tiles == 2


def test_full_pipeline_with_ridge(cmu_slide, cache_dir, cmu_embeddings):
    slides = [cmu_slide, SlideRegion(cmu_slide, bbox=(0, 0, 1200, 1500))]
    y = np.array([[1.0, 2.0], [0.5, -1.0]])
    pipe = make_pipeline(
        WSIFeaturizer(cache_dir=cache_dir), SuperTilePooler(n_clusters=4), Ridge(alpha=1.0)
    )

    pipe.fit(slides, y)

    assert pipe.predict(slides).shape == (2, 2)


# scikit-learn's checks that need no numeric X; parametrize_with_checks
# skips the others because the featurizer takes slide paths.
API_CHECKS = [
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
    "check_valid_tag_types",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
]


@pytest.mark.parametrize("check_name", API_CHECKS)
def test_featurizer_sklearn_api_checks(check_name):
    from sklearn.utils import estimator_checks

    check = getattr(estimator_checks, check_name)
    check("WSIFeaturizer", WSIFeaturizer())


def test_cache_unwritable_dir_still_returns(cmu_slide, tmp_path, caplog):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")

    with caplog.at_level("WARNING", logger="skrnafm.features._featurizer"):
        (item,) = WSIFeaturizer(cache_dir=blocker / "cache", max_tiles=2).transform([cmu_slide])

    assert item.n_tiles == 2
    assert "Could not write cache file" in caplog.text


class _NaNNet(torch.nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 3), float("nan"))


def test_featurizer_nan_embeddings_raise(cmu_slide):
    from skrnafm.features import ModuleEncoder

    encoder = ModuleEncoder(_NaNNet(), output_dim=3, input_size=16, name="nan_net")

    with pytest.raises(FloatingPointError, match=r"'nan_net'.*cmu-1-small-region.*precision='fp32'"):
        WSIFeaturizer(encoder=encoder, on_error="warn", max_tiles=2).transform([cmu_slide])


@pytest.mark.slow
def test_featurizer_dask_worker_process(cmu_slide):
    distributed = pytest.importorskip("dask.distributed")
    slides = [cmu_slide, SlideRegion(cmu_slide, bbox=(0, 0, 1200, 1500))]
    expected = WSIFeaturizer(precision="fp32", **SMALL).transform(slides)

    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster, distributed.Client(cluster):
        with joblib.parallel_config(backend="dask"):
            out = WSIFeaturizer(precision="fp32", n_jobs=2, **SMALL).transform(slides)

    for got, want in zip(out, expected):
        np.testing.assert_array_equal(got.coords, want.coords)
        np.testing.assert_allclose(got.features, want.features, rtol=1e-4, atol=1e-4)
