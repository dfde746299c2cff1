"""Work with the reference-CSV format of the RNA-FM and SEQUOIA research code.

A reference CSV has one row per slide: ``wsi_file_name``, ``patient_id``,
optionally ``tcga_project``, and one ``rna_<GENE>`` column per gene with
log2(FPKM-UQ + 1) values. This script reads the five real TCGA-BRCA slides
of ``<data home>/tcga/tcga_brca_reference_5_slides.csv`` and compares them
with the per-gene statistics of the whole TCGA-BRCA cohort. It then scores
the simplest possible predictor (the cohort mean) with the package's
metrics and writes a reference CSV for new slides in the same format.

Run:  python examples/reference_csv_format.py [--quick]
"""

import numpy as np
import pandas as pd

from _common import parse_args, require
from skrnafm.datasets import get_data_home, load_tcga_gene_stats, read_reference_csv
from skrnafm.metrics import gene_metrics_table, top_k_summary

args = parse_args(__doc__.splitlines()[0], default_out="skrnafm_reports/examples")
path = require(get_data_home(args.data_home) / "tcga" / "tcga_brca_reference_5_slides.csv",
               "the TCGA-BRCA reference CSV")

reference = read_reference_csv(path)
Y = reference.Y
print(f"{path.name}: {Y.shape[0]} slides, {len(set(reference.patient_ids))} patients, "
      f"{Y.shape[1]} genes")
print(pd.DataFrame({"patient_id": reference.patient_ids, "project": reference.projects},
                   index=[s[:23] + "..." for s in reference.slides]))

# The cohort statistics come in the order of the 20,820-gene TCGA list,
# the same order as the columns here.
stats = load_tcga_gene_stats("BRCA", data_home=args.data_home)
cohort = pd.DataFrame({"mean": stats.mean, "std": stats.std}, index=stats.gene_names)
cohort = cohort.loc[Y.columns]
z = (Y - cohort["mean"]) / cohort["std"].where(cohort["std"] > 0)
print(f"median |z| of these slides against the TCGA-BRCA cohort: {np.nanmedian(np.abs(z)):.2f}")

# The cohort mean is the baseline every model must beat: it has no per-slide
# information, so its per-gene r is 0 and only its error is informative.
n_genes = 2000 if args.quick else Y.shape[1]
genes = Y.var().sort_values(ascending=False).index[:n_genes]
baseline = np.tile(cohort.loc[genes, "mean"].to_numpy(), (len(Y), 1))
table = gene_metrics_table(Y[genes].to_numpy(), baseline, gene_names=list(genes))
print(f"cohort-mean predictor on the {n_genes} most variable genes: median RMSE "
      f"{table['rmse'].median():.2f}, median RMSE/IQR {table['rmse_over_iqr'].median():.2f}")
print(top_k_summary(table, k=[20, 100]))

# A reference CSV for your own slides: same columns, your expression values.
new = pd.DataFrame(
    {"wsi_file_name": ["my-slide-1.svs", "my-slide-2.svs"], "patient_id": ["P001", "P001"]}
)
for gene in ["ERBB2", "ESR1", "PGR", "MKI67"]:
    new[f"rna_{gene}"] = Y[gene].iloc[:2].to_numpy()
out = args.out / "my_reference.csv"
new.to_csv(out, index=False)
print(f"wrote {out}; train on it with:\n"
      f"  skrnafm featurize my_slides/ --out features/\n"
      f"  skrnafm fit --reference {out} --features features/ --out model.joblib")
