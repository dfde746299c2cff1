"""Gene-level metrics and scorers for expression prediction.

Point metrics follow the expression-from-histology literature (per-gene
Pearson r with constant genes at 0, Benjamini–Hochberg FDR, RMSE and its
normalized forms, top-k summaries), with an honest top-k that ranks genes
on training data only. Probabilistic metrics score predictive
distributions (interval coverage, CRPS).
"""

from ._cv import GeneCVResult, cross_val_predict_genes
from ._gene import (
    DEFAULT_TOP_K,
    fdr_bh,
    gene_metrics_table,
    mean_pearson_per_gene,
    pearson_per_gene,
    rmse_per_gene,
    top_k_summary,
)
from ._probabilistic import (
    crps_ensemble,
    crps_gaussian,
    gaussian_interval,
    interval_coverage,
    sample_interval,
)
from ._scorers import gene_pearson_scorer, make_gene_scorer, mean_rmse_per_gene

__all__ = [
    "DEFAULT_TOP_K",
    "GeneCVResult",
    "cross_val_predict_genes",
    "crps_ensemble",
    "crps_gaussian",
    "fdr_bh",
    "gaussian_interval",
    "gene_metrics_table",
    "gene_pearson_scorer",
    "interval_coverage",
    "make_gene_scorer",
    "mean_pearson_per_gene",
    "mean_rmse_per_gene",
    "pearson_per_gene",
    "rmse_per_gene",
    "sample_interval",
    "top_k_summary",
]
