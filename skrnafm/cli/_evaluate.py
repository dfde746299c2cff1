"""``skrnafm evaluate``: predictions against measured expression."""

import logging
import warnings

import numpy as np

from . import _io
from ._errors import CLIError
from ._table import count_noun

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Compare a prediction table from 'skrnafm predict' with the measured
expression of a reference CSV. Slides are matched by name (wsi_file_name
without its extension) and genes by symbol. Writes gene_metrics.csv (per
gene: Pearson r, p-value, FDR, RMSE, RMSE/mean, RMSE/IQR and, when the
predictions have intervals, their coverage) and summary.csv (mean r over
all genes and over the top-k genes) into --out, and prints the summary.

Top-k genes here are ranked by their r on the same slides, which is
optimistic; 'skrnafm fit --cv' and the demo also report an honest ranking.
"""


def add_parser(subparsers, formatter_class):
    parser = subparsers.add_parser(
        "evaluate", help="score predictions against a reference CSV", description=DESCRIPTION,
        formatter_class=formatter_class,
    )
    parser.add_argument("--reference", required=True, metavar="REF.csv", help="reference CSV")
    parser.add_argument(
        "--predictions", required=True, metavar="FILE.csv", help="table from 'skrnafm predict'"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    return parser


def run(args):
    from ._predict import read_predictions
    from ._report import metrics_report, print_summary

    out_dir = _io.check_output_path(args.out, is_dir=True)
    table, ref_genes = _io.load_reference(args.reference)
    slides, genes, predicted = read_predictions(args.predictions)

    ref_names = [_io.slide_name(n) for n in table["wsi_file_name"]]
    row_of = {name: i for i, name in enumerate(ref_names)}
    matched = [s for s in slides if s in row_of]
    if not matched:
        raise CLIError(
            f"no slide of --predictions {args.predictions!r} is in --reference {args.reference!r} "
            f"(first prediction slide {slides[0]!r}, first reference slide {ref_names[0]!r})"
        )
    unmatched = len(slides) - len(matched)
    if unmatched:
        warnings.warn(f"{unmatched} predicted slides are not in --reference; they are ignored",
                      UserWarning, stacklevel=2)
    ref_gene_set = set(ref_genes)
    common = [g for g in genes if g in ref_gene_set]
    if not common:
        raise CLIError("no gene of --predictions is an rna_<GENE> column of --reference")
    if len(common) < len(genes):
        warnings.warn(f"{len(genes) - len(common)} predicted genes are not in --reference; "
                      "they are ignored", UserWarning, stacklevel=2)
    if len(matched) < 3:
        warnings.warn(f"only {len(matched)} slides to evaluate; per-gene r across slides needs "
                      "at least 3 to mean anything", UserWarning, stacklevel=2)

    slide_index = [slides.index(s) for s in matched]
    gene_index = [genes.index(g) for g in common]
    Y_true = _io.reference_matrix(table.iloc[[row_of[s] for s in matched]], common)
    pick = {k: v[np.ix_(slide_index, gene_index)] for k, v in predicted.items()}
    gene_table, summary = metrics_report(
        Y_true, pick["mean"], common, lower=pick.get("lower"), upper=pick.get("upper")
    )

    out_dir.mkdir(exist_ok=True)
    gene_table.to_csv(out_dir / "gene_metrics.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    print(f"{count_noun(len(matched), 'slide')} x {count_noun(len(common), 'gene')} evaluated")
    print_summary(summary)
    print(f"per-gene metrics: {out_dir / 'gene_metrics.csv'}; summary: {out_dir / 'summary.csv'}")
    return 0
