"""The ``skrnafm`` command line on real slides and real expression values.

The slide fixture cuts six small images out of the real CMU slide and pairs
them with rows of the real TCGA-BRCA reference CSV, so every command runs
on real pixels and real expression values in seconds. The images are not
the slides the expression was measured on; these tests check the plumbing,
the outputs and the exit codes, not accuracy.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from skrnafm.cli import main

N_GENES = 40
CROP = 600
# Crop corners (x, y) on the CMU slide that hold tissue.
CROP_ORIGINS = [(900, 600), (1200, 600), (900, 1200), (1200, 1200), (900, 1800), (1200, 1800)]
TINY_RNAFM = [
    "--param", "hidden_dim=16", "--param", "depth=1", "--param", "n_heads=2",
    "--param", "n_samples=4", "--param", "precision='fp32'", "--max-epochs", "2",
    "--pathways", "none",
]


def run_cli(*argv):
    """Run the CLI in this process and return its exit code; output goes to capsys."""
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def slide_folder(cmu_slide, tmp_path_factory):
    """Six PNG crops of the real CMU slide (0.499 µm/px) in one folder."""
    import openslide

    folder = tmp_path_factory.mktemp("slides")
    with openslide.OpenSlide(str(cmu_slide)) as slide:
        for index, (x, y) in enumerate(CROP_ORIGINS):
            region = slide.read_region((x, y), 0, (CROP, CROP)).convert("RGB")
            region.save(folder / f"crop-{index}.png")
    return folder


@pytest.fixture(scope="module")
def reference_csv(tcga_dir, tmp_path_factory):
    """A reference CSV for the six crops: real TCGA-BRCA values, three patients."""
    real = pd.read_csv(tcga_dir / "tcga_brca_reference_5_slides.csv")
    rna = [c for c in real.columns if c.startswith("rna_")]
    values = real[rna].to_numpy(dtype=float)
    # The most variable genes, so that per-gene r is defined.
    keep = np.argsort(-values.std(axis=0))[:N_GENES]
    values = values[:, keep]
    rows = np.vstack([values, values[:2].mean(axis=0, keepdims=True)])
    table = pd.DataFrame(rows, columns=[rna[i] for i in keep])
    table.insert(0, "patient_id", ["P1", "P1", "P2", "P2", "P3", "P3"])
    table.insert(0, "wsi_file_name", [f"crop-{i}.png" for i in range(6)])
    table["tcga_project"] = "TCGA-BRCA"
    path = tmp_path_factory.mktemp("reference") / "reference.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def feature_folder(slide_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "features"
    code = main(["featurize", str(slide_folder), "--out", str(out), "--mpp", "0.499",
                 "--max-tiles", "4", "--n-clusters", "2", "-q"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def rnafm_model(feature_folder, reference_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "rnafm.joblib"
    code = main(["fit", "--reference", str(reference_csv), "--features", str(feature_folder),
                 "--out", str(path), "--n-clusters", "2", "-q", *TINY_RNAFM])
    assert code == 0
    return path


@pytest.fixture(scope="module")
def predictions(rnafm_model, feature_folder, tmp_path_factory):
    """Predictions of the RNA-FM model for the six crops, as CSV and AnnData."""
    out = tmp_path_factory.mktemp("predictions") / "pred.csv"
    assert main(["predict", "--model", str(rnafm_model), str(feature_folder), "--out", str(out),
                 "--n-samples", "4", "-q"]) == 0
    return out


# ---------------------------------------------------------------- help and usage


@pytest.mark.parametrize("command", ["featurize", "fit", "predict", "evaluate", "demo"])
def test_help_every_command(command, capsys):
    assert run_cli(command, "--help") == 0
    assert f"usage: skrnafm {command}" in capsys.readouterr().out


def test_main_without_command_is_usage_error(capsys):
    assert run_cli() == 2
    assert "featurize" in capsys.readouterr().err


def test_main_unknown_option_is_usage_error(capsys):
    assert run_cli("fit", "--nope") == 2


def test_main_value_error_is_user_error(monkeypatch, capsys):
    from skrnafm.cli import _evaluate

    def fail(args):
        raise ValueError("bad value in the input")

    monkeypatch.setattr(_evaluate, "run", fail)
    code = run_cli("evaluate", "--reference", "r.csv", "--predictions", "p.csv", "--out", "e")
    err = capsys.readouterr().err
    assert code == 1
    assert err == "skrnafm evaluate: error: bad value in the input\n"


def test_main_bug_is_unexpected_error(monkeypatch, capsys):
    from skrnafm.cli import _evaluate

    def fail(args):
        raise RuntimeError("internal state broken")

    monkeypatch.setattr(_evaluate, "run", fail)
    code = run_cli("evaluate", "--reference", "r.csv", "--predictions", "p.csv", "--out", "e")
    err = capsys.readouterr().err
    assert code == 1
    assert "internal state broken (RuntimeError)" in err
    assert "unexpected error" in err


def test_demo_help_names_models_and_scheme(capsys):
    assert run_cli("--help") == 0
    out = capsys.readouterr().out
    assert "main job" not in out
    assert "Ridge and HE2RNA" in out
    assert "leave-one-section-out" in out


def test_python_dash_m_prints_version():
    out = subprocess.run([sys.executable, "-m", "skrnafm", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("skrnafm ")


# ---------------------------------------------------------------- featurize


def test_featurize_writes_files_and_manifest(feature_folder):
    manifest = json.loads((feature_folder / "features.json").read_text())
    assert manifest["encoder"] == "efficientnet_lite0"
    assert manifest["embedding_dim"] == 1280
    assert [r["status"] for r in manifest["slides"]] == ["ok"] * 6
    with np.load(feature_folder / "crop-0.npz") as data:
        assert data["features"].shape[1] == 1280
        assert data["coords"].shape == (data["features"].shape[0], 2)
        assert data["supertiles"].shape == (2, 1280)


def test_featurize_lists_failed_slide(cmu_slide, kidney_tiff, tmp_path, capsys):
    code = run_cli("featurize", cmu_slide, kidney_tiff, "--out", tmp_path / "f", "--max-tiles", "2",
                   "-q")
    out = capsys.readouterr().out
    assert code == 3
    assert "kidney-48-5" in out
    assert "MissingResolutionError" in out
    assert "need --mpp" in out
    assert (tmp_path / "f" / "cmu-1-small-region.npz").is_file()
    assert not (tmp_path / "f" / "kidney-48-5.npz").exists()


def test_featurize_quiet_logs_nothing(cmu_slide, kidney_tiff, tmp_path, caplog, capsys):
    code = run_cli("featurize", cmu_slide, kidney_tiff, "--out", tmp_path / "f", "--max-tiles", "2",
                   "-q")
    assert code == 3
    assert [r for r in caplog.records if r.name.startswith("skrnafm")] == []
    assert capsys.readouterr().err == ""


def test_featurize_logs_failed_slide_once(cmu_slide, kidney_tiff, tmp_path, caplog, capsys):
    code = run_cli("featurize", cmu_slide, kidney_tiff, "--out", tmp_path / "f", "--max-tiles", "2")
    records = [r for r in caplog.records if r.levelname == "WARNING"]
    assert code == 3
    assert len(records) == 1
    assert "kidney-48-5" in records[0].getMessage()
    assert "pass --mpp" in records[0].getMessage()
    assert "open_slide" not in records[0].getMessage()


@pytest.mark.parametrize("value", ["none", "all", "None"])
def test_featurize_max_tiles_none_keeps_all(slide_folder, tmp_path, value):
    out = tmp_path / "f"
    assert run_cli("featurize", slide_folder / "crop-0.png", "--out", out, "--mpp", "0.499",
                   "--max-tiles", value, "-q") == 0
    manifest = json.loads((out / "features.json").read_text())
    assert manifest["settings"]["max_tiles"] is None
    # The crop has 8 tissue tiles; the feature_folder fixture keeps 4 of them.
    assert manifest["slides"][0]["n_tiles"] > 4


def test_featurize_max_tiles_word_rejected(capsys, tmp_path):
    assert run_cli("featurize", tmp_path, "--out", tmp_path / "f", "--max-tiles", "many") == 2
    assert "'none' to keep every tile" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--max-tiles", "0"], "--max-tiles must be at least 1, or 'none'"),
        (["--encoder", "resnet50"], "--encoder 'resnet50' is not a known encoder"),
        (["--batch-size", "0"], "--batch-size 0 is invalid"),
        (["--target-mpp", "-1"], "--target-mpp -1.0 is invalid"),
    ],
)
def test_featurize_bad_option_one_line(options, expected, cmu_slide, tmp_path, capsys):
    out = tmp_path / "f"
    code = run_cli("featurize", cmu_slide, "--out", out, *options)
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err
    assert "unexpected" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_featurize_raise_policy_stops(kidney_tiff, tmp_path, capsys):
    code = run_cli("featurize", kidney_tiff, "--out", tmp_path / "f", "--on-error", "raise", "-q")
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("skrnafm featurize: error:")
    assert "kidney-48-5" in err
    assert "pass --mpp" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_featurize_missing_slide(tmp_path, capsys):
    assert run_cli("featurize", tmp_path / "nope.svs", "--out", tmp_path / "f") == 1
    assert "not found" in capsys.readouterr().err


def test_featurize_output_parent_missing(cmu_slide, tmp_path, capsys):
    assert run_cli("featurize", cmu_slide, "--out", tmp_path / "no" / "f") == 1
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------- fit


def test_fit_ridge_cv_report(feature_folder, reference_csv, tmp_path, capsys):
    model = tmp_path / "ridge.joblib"
    code = run_cli("fit", "--reference", reference_csv, "--features", feature_folder, "--out", model,
                   "--model", "ridge", "--cv", "3", "-q")
    out = capsys.readouterr().out
    assert code == 0
    assert model.is_file()
    assert "3-fold cross-validation grouped by patient_id" in out
    genes = pd.read_csv(f"{model}.cv_genes.csv")
    assert len(genes) == N_GENES
    assert "pearson_r" in genes.columns
    summary = pd.read_csv(f"{model}.cv_summary.csv")
    assert summary["genes"].iloc[0] == "all"


def test_fit_max_genes_keeps_most_expressed(feature_folder, reference_csv, tmp_path):
    import joblib

    model = tmp_path / "ridge.joblib"
    assert run_cli("fit", "--reference", reference_csv, "--features", feature_folder, "--out", model,
                   "--model", "ridge", "--max-genes", "5", "-q") == 0
    assert len(joblib.load(model)["genes"]) == 5


def test_fit_cv_more_folds_than_patients(feature_folder, reference_csv, tmp_path, capsys):
    code = run_cli("fit", "--reference", reference_csv, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib", "--model", "ridge", "--cv", "4")
    assert code == 1
    assert "number of patients (3)" in capsys.readouterr().err


def test_fit_reference_without_patient_id(feature_folder, reference_csv, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    pd.read_csv(reference_csv).drop(columns="patient_id").to_csv(bad, index=False)
    code = run_cli("fit", "--reference", bad, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib")
    err = capsys.readouterr().err
    assert code == 1
    assert "no 'patient_id' column" in err


def test_fit_reference_without_rna_columns(feature_folder, reference_csv, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    table = pd.read_csv(reference_csv)
    table[["wsi_file_name", "patient_id", "tcga_project"]].to_csv(bad, index=False)
    code = run_cli("fit", "--reference", bad, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib")
    assert code == 1
    assert "no expression column" in capsys.readouterr().err


def _reference_with_missing_slide(reference_csv, tmp_path):
    table = pd.read_csv(reference_csv)
    table.loc[len(table)] = table.iloc[0]
    table.loc[len(table) - 1, "wsi_file_name"] = "missing-slide.svs"
    path = tmp_path / "with_missing.csv"
    table.to_csv(path, index=False)
    return path


def test_fit_missing_slide_raises_by_default(feature_folder, reference_csv, tmp_path, capsys):
    path = _reference_with_missing_slide(reference_csv, tmp_path)
    code = run_cli("fit", "--reference", path, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib", "--model", "ridge")
    err = capsys.readouterr().err
    assert code == 1
    assert "missing-slide" in err
    assert "--on-error warn" in err


def test_fit_missing_slide_warn_continues(feature_folder, reference_csv, tmp_path, capsys):
    path = _reference_with_missing_slide(reference_csv, tmp_path)
    code = run_cli("fit", "--reference", path, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib", "--model", "ridge", "--on-error", "warn", "-q")
    err = capsys.readouterr().err
    assert code == 0
    assert "missing-slide" in err
    assert (tmp_path / "m.joblib").is_file()


def test_fit_output_parent_missing(feature_folder, reference_csv, tmp_path, capsys):
    code = run_cli("fit", "--reference", reference_csv, "--features", feature_folder,
                   "--out", tmp_path / "no" / "m.joblib", "--model", "ridge")
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


def _gmt(path, genes):
    path.write_text("".join(f"set{i}\tna\t" + "\t".join(g) + "\n" for i, g in enumerate(genes)))
    return path


def _reference_genes(reference_csv):
    return [c[len("rna_"):] for c in pd.read_csv(reference_csv, nrows=0).columns
            if c.startswith("rna_")]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([*TINY_RNAFM, "--param", "solver=eulr"],
         "--param solver='eulr' is invalid: RNAFlowRegressor's solver"),
        ([*TINY_RNAFM, "--max-epochs", "0"], "--max-epochs 0 is invalid"),
        ([*TINY_RNAFM, "--pathways", "nofile.gmt"],
         "--pathways 'nofile.gmt' is neither a bundled collection"),
        (["--model", "ridge", "--alpha", "-1"], "--alpha -1.0 is invalid"),
        (["--model", "ridge", "--n-clusters", "0"], "--n-clusters 0 is invalid"),
        (["--model", "ridge", "--param", "solver='x'"], "--param solver='x' is invalid"),
    ],
)
def test_fit_bad_option_one_line(options, expected, feature_folder, reference_csv, tmp_path,
                                 capsys):
    code = run_cli("fit", "--reference", reference_csv, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib", *options)
    err = capsys.readouterr().err
    assert code == 1
    assert expected in err
    assert "unexpected" not in err
    assert len(err.strip().splitlines()) == 1


def test_fit_gmt_without_match(feature_folder, reference_csv, tmp_path, capsys):
    gmt = _gmt(tmp_path / "other.gmt", [["NOT_A_GENE1", "NOT_A_GENE2"]])
    code = run_cli("fit", "--reference", reference_csv, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib", *TINY_RNAFM, "--pathways", gmt)
    err = capsys.readouterr().err
    assert code == 1
    assert "no gene set matched the 40 genes of --reference" in err
    assert "--pathways none" in err
    assert len(err.strip().splitlines()) == 1


def test_fit_cv_gene_set_warning_once(feature_folder, reference_csv, tmp_path, capsys):
    genes = _reference_genes(reference_csv)
    gmt = _gmt(tmp_path / "sets.gmt", [genes[:5], genes[5:10]])
    code = run_cli("fit", "--reference", reference_csv, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib", *TINY_RNAFM, "--pathways", gmt, "--cv", "2")
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("[GeneSetWarning]") == 1
    assert "30 of 40 target genes are in no gene set" in err


def test_fit_unknown_param(feature_folder, reference_csv, tmp_path, capsys):
    code = run_cli("fit", "--reference", reference_csv, "--features", feature_folder,
                   "--out", tmp_path / "m.joblib", "--param", "nope=1")
    assert code == 1
    assert "no parameter ['nope']" in capsys.readouterr().err


# ---------------------------------------------------------------- predict


def test_predict_features_with_intervals(rnafm_model, feature_folder, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    code = run_cli("predict", "--model", rnafm_model, feature_folder, "--out", out,
                   "--n-samples", "4", "--draws", tmp_path / "draws.npz", "-q")
    assert code == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["slide", "gene", "mean", "std", "lower", "upper"]
    assert len(table) == 6 * N_GENES
    assert table[["mean", "std", "lower", "upper"]].notna().all().all()
    assert (table["lower"] <= table["upper"]).all()
    with np.load(tmp_path / "draws.npz") as draws:
        assert draws["draws"].shape == (4, 6, N_GENES)


def test_predict_writes_h5ad(predictions):
    anndata = pytest.importorskip("anndata")
    adata = anndata.read_h5ad(predictions.with_suffix(".h5ad"))
    assert adata.shape == (6, N_GENES)
    assert set(adata.layers) == {"std", "lower", "upper"}


def test_predict_cmu_svs_end_to_end(rnafm_model, cmu_slide, tmp_path):
    out = tmp_path / "pred.csv"
    assert run_cli("predict", "--model", rnafm_model, cmu_slide, "--out", out, "--n-samples", "4",
                   "--no-h5ad", "-q") == 0
    table = pd.read_csv(out)
    assert set(table["slide"]) == {"cmu-1-small-region"}
    assert len(table) == N_GENES
    assert table["std"].gt(0).all()


def test_predict_slide_without_resolution(rnafm_model, kidney_tiff, tmp_path, capsys):
    code = run_cli("predict", "--model", rnafm_model, kidney_tiff, "--out", tmp_path / "p.csv",
                   "--no-h5ad", "-q")
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "kidney-48-5" in err
    assert "pass --mpp" in err
    assert "open_slide" not in err


def test_predict_skips_failed_slide_with_one_line(rnafm_model, feature_folder, kidney_tiff,
                                                  tmp_path, capsys):
    out = tmp_path / "p.csv"
    code = run_cli("predict", "--model", rnafm_model, feature_folder / "crop-0.npz", kidney_tiff,
                   "--out", out, "--n-samples", "2", "--no-h5ad", "-q")
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.count("kidney-48-5") == 1
    assert len(captured.err.strip().splitlines()) == 1
    assert "pass --mpp" in captured.err
    assert "predictions for 1 slide x 40 genes" in captured.out


def test_predict_other_encoder_features(rnafm_model, tmp_path, capsys):
    np.savez(tmp_path / "other.npz", features=np.zeros((3, 8), np.float32),
             coords=np.zeros((3, 2), np.int64), encoder=np.array("resnet50"))
    code = run_cli("predict", "--model", rnafm_model, tmp_path / "other.npz",
                   "--out", tmp_path / "p.csv")
    err = capsys.readouterr().err
    assert code == 1
    assert "'resnet50' with dimension 8" in err
    assert "'efficientnet_lite0' with dimension 1280" in err


def test_predict_unreadable_model(feature_folder, tmp_path, capsys):
    model = tmp_path / "broken.joblib"
    model.write_bytes(b"not a model at all")
    code = run_cli("predict", "--model", model, feature_folder, "--out", tmp_path / "p.csv")
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot be read as a skrnafm model" in err
    assert "Traceback" not in err


def test_predict_model_of_other_kind(feature_folder, tmp_path, capsys):
    import joblib

    model = tmp_path / "dict.joblib"
    joblib.dump({"hello": 1}, model)
    code = run_cli("predict", "--model", model, feature_folder, "--out", tmp_path / "p.csv")
    assert code == 1
    assert "not a skrnafm model bundle" in capsys.readouterr().err


def test_predict_output_parent_missing(rnafm_model, feature_folder, tmp_path, capsys):
    code = run_cli("predict", "--model", rnafm_model, feature_folder,
                   "--out", tmp_path / "no" / "p.csv")
    assert code == 1
    assert "does not exist" in capsys.readouterr().err


def test_predict_out_h5ad_rejected(rnafm_model, feature_folder, tmp_path, capsys):
    code = run_cli("predict", "--model", rnafm_model, feature_folder, "--out", tmp_path / "p.h5ad")
    assert code == 1
    assert "must be the CSV file" in capsys.readouterr().err


def test_predict_ridge_leaves_intervals_empty(feature_folder, reference_csv, tmp_path):
    model = tmp_path / "ridge.joblib"
    assert run_cli("fit", "--reference", reference_csv, "--features", feature_folder, "--out", model,
                   "--model", "ridge", "-q") == 0
    out = tmp_path / "pred.csv"
    assert run_cli("predict", "--model", model, feature_folder, "--out", out, "--no-h5ad", "-q") == 0
    table = pd.read_csv(out)
    assert table["mean"].notna().all()
    assert table["std"].isna().all()


# ---------------------------------------------------------------- evaluate


def test_evaluate_writes_metrics(predictions, reference_csv, tmp_path, capsys):
    code = run_cli("evaluate", "--reference", reference_csv, "--predictions", predictions,
                   "--out", tmp_path / "eval", "-q")
    out = capsys.readouterr().out
    assert code == 0
    genes = pd.read_csv(tmp_path / "eval" / "gene_metrics.csv")
    assert len(genes) == N_GENES
    assert "coverage" in genes.columns
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert summary["genes"].iloc[0] == "all"
    assert "mean_r_test_ranked" in out


def test_evaluate_no_common_slide(reference_csv, tmp_path, capsys):
    pred = tmp_path / "pred.csv"
    pd.DataFrame({"slide": ["x"], "gene": ["G"], "mean": [1.0]}).to_csv(pred, index=False)
    code = run_cli("evaluate", "--reference", reference_csv, "--predictions", pred,
                   "--out", tmp_path / "eval")
    assert code == 1
    assert "no slide of --predictions" in capsys.readouterr().err


def test_evaluate_predictions_without_mean(reference_csv, tmp_path, capsys):
    pred = tmp_path / "pred.csv"
    pd.DataFrame({"slide": ["x"], "gene": ["G"]}).to_csv(pred, index=False)
    code = run_cli("evaluate", "--reference", reference_csv, "--predictions", pred,
                   "--out", tmp_path / "eval")
    assert code == 1
    assert "lacks columns ['mean']" in capsys.readouterr().err


# ---------------------------------------------------------------- demo


def test_demo_data_not_found(tmp_path, capsys):
    code = run_cli("demo", "--out", tmp_path / "report", "--data-home", tmp_path / "nowhere")
    err = capsys.readouterr().err
    assert code == 1
    assert str(tmp_path / "nowhere") in err
    assert "SKRNAFM_DATA" in err
    assert "--data-home" in err


@pytest.fixture(scope="module")
def her2st_two_sections(her2st_dir):
    from skrnafm.datasets import fetch_her2st, make_her2st_pseudobulk

    her2st = fetch_her2st(data_home=her2st_dir.parent, sections=["B4", "C2"])
    return her2st, make_her2st_pseudobulk(her2st)


def test_demo_report_files_and_table(her2st_two_sections, tmp_path):
    from skrnafm.cli._report import write_demo_report

    her2st, bulk = her2st_two_sections
    genes = list(bulk.gene_names[:30])
    Y = bulk.Y[genes].to_numpy(dtype=np.float32)
    rng = np.random.default_rng(0)
    draws = Y[None] + rng.normal(size=(8, *Y.shape)).astype(np.float32)
    std = draws.std(axis=0, ddof=1)
    sampled = {"mean": draws.mean(axis=0), "std": std, "lower": draws.mean(axis=0) - 1.64 * std,
               "upper": draws.mean(axis=0) + 1.64 * std, "draws": draws,
               "ranking": rng.normal(size=len(genes)), "seconds": 1.0}
    nan = np.full_like(Y, np.nan)
    point = {"mean": Y + rng.normal(size=Y.shape), "std": nan, "lower": nan, "upper": nan,
             "draws": None, "ranking": None, "seconds": 2.0}
    settings = {"interval": 0.9}

    report = write_demo_report(tmp_path, results={"RNA-FM": sampled, "Ridge": point}, Y=Y,
                               genes=genes, bulk=bulk, her2st=her2st, settings=settings)

    for name in ["metrics.csv", "summary.csv", "predictions.csv", "pred_vs_measured.png",
                 "calibration.png", "r_distribution.png", "gene_map.png"]:
        assert (tmp_path / name).is_file(), name
    assert [row[0] for row in report["rows"]] == ["RNA-FM", "Ridge"]
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert len(metrics) == 2 * len(genes)
    assert set(metrics["n_sections"]) == {2}
    coverage = pd.read_csv(tmp_path / "summary.csv").set_index("model")["coverage"]
    assert 0.75 < coverage["RNA-FM"].iloc[0] < 1.0


def test_fold_averaged_r_ignores_section_shift():
    from skrnafm.cli._report import fold_averaged_metrics

    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 3))
    groups = np.repeat(["A", "B"], 20)
    # Perfect within sections, but shifted the wrong way between them.
    predicted = truth + np.where(groups == "A", 5.0, -5.0)[:, None]
    nan = np.full_like(truth, np.nan)
    result = {"mean": predicted, "lower": nan, "upper": nan}
    table = fold_averaged_metrics(truth, result, ["g0", "g1", "g2"], groups, level=0.9)
    assert np.allclose(table["pearson_r"], 1.0)


@pytest.mark.slow
def test_demo_quick_end_to_end(data_dir, tmp_path, capsys):
    code = run_cli("demo", "--out", tmp_path / "report", "--data-home", data_dir, "--quick", "-q")
    out = capsys.readouterr().out
    assert code == 0
    assert "Leave-one-section-out CV" in out
    for name in ["metrics.csv", "summary.csv", "gene_map.png", "calibration.png"]:
        assert (tmp_path / "report" / name).is_file()
