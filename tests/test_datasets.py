"""Tests of skrnafm.datasets: data folder, TCGA files, HER2ST and synthetic cohorts."""

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skrnafm.datasets import (
    estimate_spot_pitch,
    fetch_her2st,
    get_data_home,
    load_tcga_gene_list,
    load_tcga_gene_stats,
    make_her2st_pseudobulk,
    make_synthetic_cohort,
    read_reference_csv,
)

N_TCGA_GENES = 20_820


# --------------------------------------------------------------------------
# get_data_home
# --------------------------------------------------------------------------


def test_get_data_home_argument_beats_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SKRNAFM_DATA", str(tmp_path / "env"))
    assert get_data_home(tmp_path / "arg") == tmp_path / "arg"


def test_get_data_home_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SKRNAFM_DATA", str(tmp_path))
    assert get_data_home() == tmp_path


def test_get_data_home_default(monkeypatch, tmp_path):
    monkeypatch.delenv("SKRNAFM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_data_home() == tmp_path / "skrnafm_data"


# --------------------------------------------------------------------------
# TCGA files
# --------------------------------------------------------------------------


def test_load_tcga_gene_list_real(tcga_dir):
    genes = load_tcga_gene_list(tcga_dir.parent)
    assert genes.shape == (N_TCGA_GENES,)
    assert genes[0] == "A1BG"
    assert len(set(genes)) == N_TCGA_GENES


@pytest.mark.parametrize("cohort", ["BRCA", "COAD", "LUAD", "CPTAC_BRCA", "CPTAC_COAD", "CPTAC_LUAD"])
def test_load_tcga_gene_stats_cohorts(tcga_dir, cohort):
    stats = load_tcga_gene_stats(cohort, data_home=tcga_dir.parent)
    assert stats.mean.shape == (N_TCGA_GENES,)
    assert stats.std.shape == (N_TCGA_GENES,)
    assert stats.mean.dtype == np.float32
    assert (stats.std >= 0).all()
    assert stats.gene_names.shape == (N_TCGA_GENES,)


def test_load_tcga_gene_stats_lowercase_cohort(tcga_dir):
    assert load_tcga_gene_stats("luad", data_home=tcga_dir.parent).cohort == "LUAD"


def test_load_tcga_gene_stats_unknown_cohort(tcga_dir):
    with pytest.raises(ValueError, match="cohort must be one of .*'GBM'"):
        load_tcga_gene_stats("GBM", data_home=tcga_dir.parent)


def test_load_tcga_gene_stats_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="gene_list.csv") as info:
        load_tcga_gene_stats("BRCA", data_home=tmp_path)
    assert str(tmp_path / "tcga") in str(info.value)
    assert "SKRNAFM_DATA" in str(info.value)


@pytest.fixture(scope="module")
def reference(tcga_dir):
    return read_reference_csv(tcga_dir / "tcga_brca_reference_5_slides.csv")


def test_read_reference_csv_real(reference):
    data = reference
    assert data.Y.shape == (5, N_TCGA_GENES)
    assert len(data.slides) == 5
    assert len(set(data.patient_ids)) == 3
    assert list(data.projects) == ["TCGA-BRCA"] * 5
    assert data.gene_names[0] == "A1BG"
    assert not data.Y.isna().any().any()


def test_read_reference_csv_gene_order_matches_gene_list(reference, tcga_dir):
    np.testing.assert_array_equal(reference.gene_names, load_tcga_gene_list(tcga_dir.parent))


def _write_reference(path, **columns):
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def test_read_reference_csv_slide_dir(tmp_path):
    path = _write_reference(
        tmp_path / "ref.csv", wsi_file_name=["a.svs", "b.svs"], patient_id=["p1", "p1"], rna_TP53=[1.0, 2.0]
    )
    data = read_reference_csv(path, slide_dir=tmp_path / "slides")
    assert data.slides == [str(tmp_path / "slides" / "a.svs"), str(tmp_path / "slides" / "b.svs")]
    assert data.projects is None
    assert list(data.Y.columns) == ["TP53"]


def test_read_reference_csv_text_value(tmp_path):
    path = _write_reference(
        tmp_path / "ref.csv", wsi_file_name=["a.svs", "b.svs"], patient_id=["p1", "p2"], rna_TP53=["1.5", "n/a?"]
    )
    with pytest.raises(ValueError, match=r"ref.csv: 1 expression column.*\['rna_TP53'\]"):
        read_reference_csv(path)


def test_read_reference_csv_no_patient_column(tmp_path):
    path = _write_reference(tmp_path / "ref.csv", wsi_file_name=["a.svs"], rna_TP53=[1.0])
    with pytest.raises(ValueError, match="ref.csv has no 'patient_id' column"):
        read_reference_csv(path)


def test_read_reference_csv_no_gene_column(tmp_path):
    path = _write_reference(tmp_path / "ref.csv", wsi_file_name=["a.svs"], patient_id=["p1"], TP53=[1.0])
    with pytest.raises(ValueError, match="ref.csv has no expression column"):
        read_reference_csv(path)


def test_read_reference_csv_missing_value(tmp_path):
    path = _write_reference(
        tmp_path / "ref.csv",
        wsi_file_name=["a.svs", "b.svs"],
        patient_id=["p1", "p2"],
        rna_TP53=[1.0, np.nan],
        rna_EGFR=[1.0, 2.0],
    )
    with pytest.raises(ValueError, match=r"ref.csv: 1 expression column.*\['rna_TP53'\]"):
        read_reference_csv(path)


# --------------------------------------------------------------------------
# HER2ST
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def her2st_two(her2st_dir):
    return fetch_her2st(data_home=her2st_dir.parent, sections=["C2", "B4"])


@pytest.fixture(scope="module")
def pseudobulk_two(her2st_two):
    return make_her2st_pseudobulk(her2st_two)


def test_fetch_her2st_section(her2st_two):
    section = her2st_two.sections["C2"]
    assert section.counts.shape[0] == len(section.spots)
    assert section.counts.shape[1] > 15_000
    assert list(section.counts.index) == list(section.spots.index)
    assert section.patient == "C"
    assert section.image_path.endswith("C2.jpg")


def test_fetch_her2st_patients(her2st_two):
    assert her2st_two.sections["B4"].patient == "B"
    assert her2st_two.section_names == ["C2", "B4"]


@pytest.mark.parametrize("section", ["C2", "B4"])
def test_fetch_her2st_mpp_from_spot_spacing(her2st_two, section):
    assert 0.67 < her2st_two.sections[section].mpp < 0.71


def test_fetch_her2st_missing_files_no_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_if_missing=False") as info:
        fetch_her2st(data_home=tmp_path, download_if_missing=False, sections=["C3"])
    message = str(info.value)
    assert "C3.jpg" in message
    assert "C3_selection.tsv" in message
    assert str(tmp_path / "her2st") in message
    assert "SKRNAFM_DATA" in message


def test_fetch_her2st_missing_files_download_advice(tmp_path):
    with pytest.raises(FileNotFoundError, match="Automatic download is not implemented"):
        fetch_her2st(data_home=tmp_path, sections="C3")


def test_fetch_her2st_missing_files_env_named(monkeypatch, tmp_path):
    monkeypatch.setenv("SKRNAFM_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="chosen by the SKRNAFM_DATA environment variable"):
        fetch_her2st(download_if_missing=False)


def test_fetch_her2st_unknown_section(tmp_path):
    with pytest.raises(ValueError, match="sections must be a non-empty subset.*'A1'"):
        fetch_her2st(data_home=tmp_path, sections=["A1"])


def test_estimate_spot_pitch_grid():
    x, y = np.meshgrid(np.arange(4), np.arange(3))
    spots = pd.DataFrame({"x": x.ravel(), "y": y.ravel()})
    spots["pixel_x"] = 100.0 + 290.0 * spots["x"]
    spots["pixel_y"] = 50.0 + 290.0 * spots["y"]
    assert estimate_spot_pitch(spots) == pytest.approx(290.0)


def test_estimate_spot_pitch_no_neighbours():
    spots = pd.DataFrame({"x": [0, 5], "y": [0, 5], "pixel_x": [0.0, 1.0], "pixel_y": [0.0, 1.0]})
    with pytest.raises(ValueError, match="no two spots are grid neighbours"):
        estimate_spot_pitch(spots)


def test_make_her2st_pseudobulk_shapes(pseudobulk_two):
    n_samples = len(pseudobulk_two.regions)
    assert pseudobulk_two.Y.shape[0] == n_samples
    assert pseudobulk_two.counts.shape == pseudobulk_two.Y.shape
    assert pseudobulk_two.groups.shape == (n_samples,)
    assert pseudobulk_two.blocks.shape == (n_samples, 2)
    assert pseudobulk_two.bboxes.shape == (n_samples, 4)


def test_make_her2st_pseudobulk_groups(pseudobulk_two):
    assert set(pseudobulk_two.groups) == {"C2", "B4"}
    assert set(pseudobulk_two.patients[pseudobulk_two.groups == "B4"]) == {"B"}
    assert set(pseudobulk_two.patients[pseudobulk_two.groups == "C2"]) == {"C"}


def test_make_her2st_pseudobulk_log_cpm(pseudobulk_two):
    assert not pseudobulk_two.Y.isna().any().any()
    cpm = np.exp2(pseudobulk_two.Y.to_numpy(dtype=float)) - 1
    np.testing.assert_allclose(cpm.sum(axis=1), 1e6, rtol=1e-3)


def test_make_her2st_pseudobulk_gene_panel(her2st_two, pseudobulk_two):
    shared = her2st_two.sections["C2"].counts.columns.intersection(her2st_two.sections["B4"].counts.columns)
    assert list(pseudobulk_two.gene_names) == sorted(shared)


def test_make_her2st_pseudobulk_min_spots(pseudobulk_two):
    assert pseudobulk_two.n_spots.min() >= 5
    assert pseudobulk_two.n_spots.max() <= 9


def test_make_her2st_pseudobulk_regions(pseudobulk_two):
    region = pseudobulk_two.regions[0]
    assert tuple(region.bbox) == tuple(pseudobulk_two.bboxes[0])
    assert region.mpp == pytest.approx(pseudobulk_two.mpp[0])
    assert region.name == pseudobulk_two.Y.index[0]
    # A 3 x 3 block with half a spacing of padding spans about 3 spacings (600 um).
    assert 450 < pseudobulk_two.bboxes[:, 2].max() * pseudobulk_two.mpp[0] < 700


def test_make_her2st_pseudobulk_region_on_tissue(pseudobulk_two):
    from skrnafm.slide import open_slide

    full = np.flatnonzero(pseudobulk_two.n_spots == 9)[0]
    with open_slide(pseudobulk_two.regions[full]) as slide:
        width, height = slide.dimensions
        pixels = slide.get_thumbnail((256, 256))
    assert (width, height) == tuple(pseudobulk_two.bboxes[full, 2:])
    # H&E tissue is darker than the glass background (about 220-240 grey).
    assert (pixels.mean(axis=2) < 200).mean() > 0.3


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"block_size": 0}, "block_size must be a positive integer"),
        ({"block_size": 2.5}, "block_size must be a positive integer"),
        ({"min_spots": 10}, "min_spots must be an integer from 1 to block_size"),
        ({"min_counts": -1}, "min_counts must be a non-negative number"),
    ],
)
def test_make_her2st_pseudobulk_invalid(her2st_two, params, match):
    with pytest.raises(ValueError, match=match):
        make_her2st_pseudobulk(her2st_two, **params)


def _write_tiny_section(folder, section, counts_per_spot):
    """Write a 4 x 3 spot section with 100 px pitch and a 500 x 400 px image."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (500, 400), (200, 120, 160)).save(folder / f"{section}.jpg")
    rows = []
    for y in range(3):
        for x in range(4):
            rows.append({"x": x + 1, "y": y + 1, "pixel_x": 100.0 + 100 * x, "pixel_y": 100.0 + 100 * y, "selected": 1})
    spots = pd.DataFrame(rows)
    spots.to_csv(folder / f"{section}_selection.tsv", sep="\t", index=False)
    ids = [f"{r['x']}x{r['y']}" for r in rows]
    counts = pd.DataFrame(
        {"GENEA": counts_per_spot, "GENEB": [10] * len(rows)},
        index=ids,
    )
    with gzip.open(folder / f"{section}.tsv.gz", "wt") as handle:
        counts.to_csv(handle, sep="\t")


def test_make_her2st_pseudobulk_tiny_blocks(tmp_path):
    # Blocks of 3: columns x = 1..3 form a full 3 x 3 block, x = 4 a 1 x 3 partial one.
    counts = [90] * 12
    counts[0] = 0
    _write_tiny_section(tmp_path / "her2st", "C2", counts)
    for section in ("B4", "C3", "C4", "C5"):
        _write_tiny_section(tmp_path / "her2st", section, [90] * 12)

    data = fetch_her2st(data_home=tmp_path, sections=["C2"])
    bulk = make_her2st_pseudobulk(data, min_counts=50)

    # Spot 1x1 has 10 counts, below min_counts; the partial block has 3 < 5 spots.
    assert list(bulk.Y.index) == ["C2_0_0"]
    assert bulk.n_spots.tolist() == [8]
    assert bulk.counts.loc["C2_0_0", "GENEA"] == 8 * 90
    assert bulk.bboxes[0].tolist() == [50, 50, 300, 300]


def test_make_her2st_pseudobulk_tiny_partial_kept(tmp_path):
    for section in ("C2",):
        _write_tiny_section(tmp_path / "her2st", section, [90] * 12)
    data = fetch_her2st(data_home=tmp_path, sections=["C2"])
    bulk = make_her2st_pseudobulk(data, min_spots=3)
    assert list(bulk.Y.index) == ["C2_0_0", "C2_1_0"]
    assert bulk.n_spots.tolist() == [9, 3]
    # The right block is clipped at the image's right edge (500 px).
    assert bulk.bboxes[1].tolist() == [350, 50, 100, 300]


def test_make_her2st_pseudobulk_no_block_left(tmp_path):
    _write_tiny_section(tmp_path / "her2st", "C2", [90] * 12)
    data = fetch_her2st(data_home=tmp_path, sections=["C2"])
    with pytest.raises(ValueError, match="no block has at least min_spots=5"):
        make_her2st_pseudobulk(data, min_counts=1000)


# --------------------------------------------------------------------------
# Synthetic cohort
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_cohort(tcga_dir):
    return make_synthetic_cohort(40, n_genes=400, data_home=tcga_dir.parent, random_state=0)


def test_make_synthetic_cohort_shapes(small_cohort):
    n_slides = small_cohort.X.shape[0]
    assert small_cohort.X.shape == (n_slides, 8 * 32)
    assert small_cohort.X.dtype == np.float32
    assert small_cohort.Y.shape == (n_slides, 400)
    assert small_cohort.groups.shape == (n_slides,)
    assert small_cohort.n_tokens == 8
    assert small_cohort.latent.shape == (n_slides, 6)


def test_make_synthetic_cohort_slides_per_patient(small_cohort):
    _, per_patient = np.unique(small_cohort.groups, return_counts=True)
    assert len(per_patient) == 40
    assert per_patient.min() >= 1
    assert per_patient.max() <= 3


def test_make_synthetic_cohort_descr_lists_departures(small_cohort):
    assert "heteroscedastic noise" in small_cohort.DESCR
    assert "bimodal genes" in small_cohort.DESCR


def test_make_synthetic_cohort_no_nan(small_cohort):
    assert np.isfinite(small_cohort.X).all()
    assert np.isfinite(small_cohort.Y.to_numpy()).all()
    assert np.isfinite(small_cohort.truth.std).all()


def test_make_synthetic_cohort_genes_from_tcga(small_cohort, tcga_dir):
    genes = load_tcga_gene_list(tcga_dir.parent)
    assert set(small_cohort.gene_names) <= set(genes)
    assert list(small_cohort.Y.columns) == list(small_cohort.gene_names)


def test_make_synthetic_cohort_deterministic(small_cohort, tcga_dir):
    again = make_synthetic_cohort(40, n_genes=400, data_home=tcga_dir.parent, random_state=0)
    np.testing.assert_array_equal(again.X, small_cohort.X)
    pd.testing.assert_frame_equal(again.Y, small_cohort.Y)
    np.testing.assert_array_equal(again.truth.mean, small_cohort.truth.mean)


def test_make_synthetic_cohort_seed_changes_data(small_cohort, tcga_dir):
    other = make_synthetic_cohort(40, n_genes=400, data_home=tcga_dir.parent, random_state=1)
    assert not np.array_equal(other.X[:5], small_cohort.X[:5])


def test_make_synthetic_cohort_all_genes(tcga_dir):
    data = make_synthetic_cohort(10, slides_per_patient=1, data_home=tcga_dir.parent, random_state=0)
    assert data.Y.shape == (10, N_TCGA_GENES)


def test_make_synthetic_cohort_matches_real_stats(tcga_dir):
    data = make_synthetic_cohort(300, n_genes=2000, data_home=tcga_dir.parent, random_state=0)
    stats = load_tcga_gene_stats("BRCA", data_home=tcga_dir.parent)
    genes = np.searchsorted(stats.gene_names, data.gene_names)
    # The gene list is sorted, so searchsorted finds each gene's position.
    assert (stats.gene_names[genes] == data.gene_names).all()
    assert np.corrcoef(data.Y.mean(axis=0), stats.mean[genes])[0, 1] > 0.99
    assert np.corrcoef(data.Y.std(axis=0), stats.std[genes])[0, 1] > 0.95


def test_make_synthetic_cohort_features_determine_latent(small_cohort):
    design = np.column_stack([small_cohort.X.astype(float), np.ones(len(small_cohort.X))])
    coef, *_ = np.linalg.lstsq(design, small_cohort.latent, rcond=None)
    np.testing.assert_allclose(design @ coef, small_cohort.latent, atol=1e-3)


def test_make_synthetic_cohort_truth_moments(small_cohort):
    draws = small_cohort.sample_truth(400, random_state=0)
    assert draws.shape == (400, *small_cohort.Y.shape)
    np.testing.assert_allclose(draws.mean(axis=0), small_cohort.truth.mean, atol=0.25)
    ratio = draws.std(axis=0).mean() / small_cohort.truth.std.mean()
    assert ratio == pytest.approx(1.0, abs=0.03)


def test_make_synthetic_cohort_truth_sampler_seeded(small_cohort):
    first = small_cohort.sample_truth(2, random_state=3)
    np.testing.assert_array_equal(first, small_cohort.sample_truth(2, random_state=3))


def test_synthetic_truth_interval_coverage(small_cohort):
    truth = small_cohort.truth
    draws = small_cohort.sample_truth(200, random_state=0)
    lower, upper = np.quantile(draws, [0.05, 0.95], axis=0)
    assert truth.interval_coverage(lower, upper).mean() == pytest.approx(0.9, abs=0.02)
    everything = truth.interval_coverage(np.full(lower.shape, -np.inf), np.full(lower.shape, np.inf))
    np.testing.assert_allclose(everything, 1.0)


def test_synthetic_truth_cdf_point_mass():
    from skrnafm.datasets import SyntheticTruth

    truth = SyntheticTruth(
        base_mean=np.zeros((1, 2), np.float32),
        noise_std=np.array([[0.0, 1.0]], np.float32),
        subtype_shift=np.zeros(2, np.float32),
        subtype_probability=np.array([0.5]),
    )
    np.testing.assert_allclose(truth.cdf(np.array([[0.0, 0.0]])), [[1.0, 0.5]])
    np.testing.assert_allclose(truth.interval_coverage(np.zeros((1, 2)), np.zeros((1, 2))), [[1.0, 0.0]])


def test_make_synthetic_cohort_bimodal_genes(tcga_dir):
    data = make_synthetic_cohort(
        150, n_genes=600, bimodal_fraction=0.5, data_home=tcga_dir.parent, random_state=0
    )
    bimodal = data.bimodal_genes
    assert 0.3 < bimodal.mean() < 0.7
    assert (data.truth.subtype_shift[~bimodal] == 0).all()
    # The subtype explains much of a bimodal gene's variance.
    residual = data.Y.to_numpy() - data.truth.base_mean
    shift = residual[data.subtype].mean(axis=0) - residual[~data.subtype].mean(axis=0)
    np.testing.assert_allclose(shift[bimodal], data.truth.subtype_shift[bimodal], atol=0.5)


def test_make_synthetic_cohort_heteroscedastic(tcga_dir):
    varying = make_synthetic_cohort(20, n_genes=50, data_home=tcga_dir.parent, random_state=0)
    constant = make_synthetic_cohort(
        20, n_genes=50, heteroscedasticity=0.0, data_home=tcga_dir.parent, random_state=0
    )
    assert varying.truth.noise_std.std(axis=0).max() > 0
    np.testing.assert_allclose(constant.truth.noise_std.std(axis=0), 0.0, atol=1e-5)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_patients": 0}, "n_patients must be an integer >= 1"),
        ({"slides_per_patient": (3, 1)}, "slides_per_patient must be"),
        ({"slides_per_patient": 0}, "slides_per_patient must be"),
        ({"n_genes": 0}, "n_genes must be an integer from 1 to 20820"),
        ({"n_factors": 256}, "n_factors must be an integer from 1 to 255"),
        ({"bimodal_fraction": 1.5}, "bimodal_fraction must be a number from 0 to 1"),
        ({"feature_noise": -1.0}, "feature_noise must be a non-negative number"),
        ({"cohort": "GBM"}, "cohort must be one of"),
    ],
)
def test_make_synthetic_cohort_invalid(tcga_dir, params, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_cohort(**{"n_patients": 5, "n_genes": 10, "data_home": tcga_dir.parent, **params})
