"""TCGA/CPTAC per-gene statistics, the gene list and the reference-CSV reader."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ._base import _missing_files_error, get_data_home

logger = logging.getLogger(__name__)

TCGA_COHORTS = ("BRCA", "COAD", "LUAD", "CPTAC_BRCA", "CPTAC_COAD", "CPTAC_LUAD")
GENE_PREFIX = "rna_"


def _tcga_file(data_home, name):
    folder = get_data_home(data_home) / "tcga"
    path = folder / name
    if not path.is_file():
        raise _missing_files_error(
            "TCGA",
            folder,
            [name],
            data_home,
            "These files are not downloaded automatically.",
        )
    return path


def load_tcga_gene_list(data_home=None):
    """Load the 20,820 gene symbols of the TCGA reference files, in order.

    Reads ``<data_home>/tcga/gene_list.csv`` (one column with header
    ``gene``). The order is the column order of the RNA-FM and SEQUOIA
    reference files and of the per-gene statistics.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Data folder; see :func:`get_data_home`.

    Returns
    -------
    gene_names : ndarray of str of shape (n_genes,)
        Gene symbols.

    Raises
    ------
    FileNotFoundError
        If ``gene_list.csv`` is not in ``<data_home>/tcga``.
    """
    path = _tcga_file(data_home, "gene_list.csv")
    table = pd.read_csv(path)
    if "gene" not in table.columns:
        raise ValueError(
            f"{path} has no 'gene' column (columns: {list(table.columns)[:5]!r}); "
            "expected one gene symbol per row under the header 'gene'."
        )
    return table["gene"].astype(str).to_numpy()


def load_tcga_gene_stats(cohort="BRCA", *, data_home=None):
    """Load the per-gene mean and std of log2(FPKM-UQ + 1) for one cohort.

    Parameters
    ----------
    cohort : {"BRCA", "COAD", "LUAD", "CPTAC_BRCA", "CPTAC_COAD", "CPTAC_LUAD"}, default="BRCA"
        TCGA project (without the ``TCGA-`` prefix) or CPTAC cohort.
    data_home : str or path-like, default=None
        Data folder; see :func:`get_data_home`.

    Returns
    -------
    stats : :class:`~sklearn.utils.Bunch`
        ``mean`` and ``std``, float32 ndarrays of shape (n_genes,) in the
        order of ``gene_names`` (ndarray of str, from
        :func:`load_tcga_gene_list`), and ``cohort``. Each cohort has one
        gene with std 0 and a few below 0.01.

    Raises
    ------
    ValueError
        If ``cohort`` is not one of the cohorts above.
    FileNotFoundError
        If the statistics files are not in ``<data_home>/tcga``.
    """
    if not isinstance(cohort, str) or cohort.upper() not in TCGA_COHORTS:
        raise ValueError(f"cohort must be one of {TCGA_COHORTS}, got {cohort!r}.")
    cohort = cohort.upper()

    gene_names = load_tcga_gene_list(data_home)
    stats = {}
    for name in ("mean", "std"):
        path = _tcga_file(data_home, f"{cohort}_rna_data_{name}.npy")
        values = np.load(path, allow_pickle=False).astype(np.float32, copy=False)
        if values.shape != gene_names.shape:
            raise ValueError(
                f"{path} contains {values.shape[0]} values but gene_list.csv lists "
                f"{gene_names.shape[0]} genes; the two files must come from the same gene list."
            )
        stats[name] = values

    return Bunch(mean=stats["mean"], std=stats["std"], gene_names=gene_names, cohort=cohort)


def read_reference_csv(path, *, slide_dir=None):
    """Read a reference CSV: one slide per row with its patient and expression.

    The format is the one of the RNA-FM and SEQUOIA research code: columns
    ``wsi_file_name``, ``patient_id``, optionally ``tcga_project``, and one
    ``rna_<GENE>`` column per gene with log2(FPKM-UQ + 1) values. Other
    columns are ignored.

    Parameters
    ----------
    path : str or path-like
        CSV file.
    slide_dir : str or path-like, default=None
        Folder the slide file names are relative to. When given, ``slides``
        contains ``slide_dir / wsi_file_name``; otherwise the names as written.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``slides`` (list of str, one per row), ``patient_ids`` (ndarray of
        str of shape (n_slides,)), ``projects`` (ndarray of str, or ``None``
        without a ``tcga_project`` column), ``Y`` (DataFrame of shape
        (n_slides, n_genes) indexed by slide name, columns are gene symbols
        without the ``rna_`` prefix) and ``gene_names`` (ndarray of str).

    Raises
    ------
    ValueError
        If ``wsi_file_name`` or ``patient_id`` is missing, no ``rna_``
        column exists, or an expression value is missing or not a number.
        The message names the file and the columns.
    """
    path = Path(path)
    # Ids stay text, so patient ids such as "007" keep their leading zeros.
    table = pd.read_csv(path, dtype={"wsi_file_name": str, "patient_id": str})

    for column in ("wsi_file_name", "patient_id"):
        if column not in table.columns:
            raise ValueError(
                f"{path} has no {column!r} column; a reference CSV needs "
                f"'wsi_file_name', 'patient_id' and one 'rna_<GENE>' column per gene."
            )
        if table[column].isna().any():
            rows = np.flatnonzero(table[column].isna().to_numpy())[:5].tolist()
            raise ValueError(f"{path}: column {column!r} is empty in rows {rows} (0-based data rows).")

    gene_columns = [c for c in table.columns if c.startswith(GENE_PREFIX)]
    if not gene_columns:
        raise ValueError(
            f"{path} has no expression column: expected columns named "
            f"'{GENE_PREFIX}<GENE>', found {list(table.columns)[:5]!r}."
        )

    Y = table[gene_columns]
    text_columns = [c for c, dtype in zip(gene_columns, Y.dtypes) if dtype.kind not in "iufb"]
    if text_columns:
        # Only columns pandas could not parse as numbers need the slow path.
        Y = Y.copy()
        Y[text_columns] = Y[text_columns].apply(pd.to_numeric, errors="coerce")
    bad = Y.isna().any()
    if bad.any():
        bad_columns = bad.index[bad.to_numpy()].tolist()
        raise ValueError(
            f"{path}: {len(bad_columns)} expression column(s) hold missing or "
            f"non-numeric values, for example {bad_columns[:5]!r}; fill or drop "
            "them before reading."
        )
    Y.columns = [c[len(GENE_PREFIX):] for c in gene_columns]

    names = table["wsi_file_name"].to_numpy(dtype=str)
    Y.index = pd.Index(names, name="wsi_file_name")
    if slide_dir is not None:
        slides = [str(Path(slide_dir) / name) for name in names]
    else:
        slides = names.tolist()
    projects = table["tcga_project"].to_numpy(dtype=str) if "tcga_project" in table.columns else None

    return Bunch(
        slides=slides,
        patient_ids=table["patient_id"].to_numpy(dtype=str),
        projects=projects,
        Y=Y.astype(np.float32),
        gene_names=Y.columns.to_numpy(dtype=str),
    )
