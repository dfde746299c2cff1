"""Datasets: HER2ST spatial transcriptomics, TCGA gene statistics, synthetic cohorts.

Loaders follow :mod:`sklearn.datasets`: they take a ``data_home`` folder
(default: the ``SKRNAFM_DATA`` environment variable, then
``~/skrnafm_data``) and return a :class:`~sklearn.utils.Bunch`.
"""

from ._base import get_data_home
from ._her2st import estimate_spot_pitch, fetch_her2st, make_her2st_pseudobulk
from ._synthetic import SyntheticTruth, make_synthetic_cohort
from ._tcga import load_tcga_gene_list, load_tcga_gene_stats, read_reference_csv

__all__ = [
    "SyntheticTruth",
    "estimate_spot_pitch",
    "fetch_her2st",
    "get_data_home",
    "load_tcga_gene_list",
    "load_tcga_gene_stats",
    "make_her2st_pseudobulk",
    "make_synthetic_cohort",
    "read_reference_csv",
]
