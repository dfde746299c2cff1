"""``skrnafm fit``: a reference CSV and a feature folder -> a saved model."""

import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import _io, _models
from ._errors import CLIError

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Train a model on the slides of a reference CSV (one row per slide:
wsi_file_name, patient_id and one rna_<GENE> column per gene, for example
log2(FPKM-UQ + 1)) whose features 'skrnafm featurize' wrote into
--features. The model file stores the fitted pipeline (super-tile pooling
and regressor), the gene names and the encoder it expects.

With --cv K, a K-fold cross-validation grouped by patient_id runs first
(slides of one patient never fall in both the training and the test fold)
and its per-gene metrics and summary are written beside the model.

Model files are joblib pickles: load only model files you trust.
"""


def add_parser(subparsers, formatter_class):
    parser = subparsers.add_parser(
        "fit", help="train a model on a reference CSV", description=DESCRIPTION,
        formatter_class=formatter_class,
    )
    parser.add_argument("--reference", required=True, metavar="REF.csv", help="reference CSV")
    parser.add_argument("--features", required=True, metavar="DIR", help="feature folder")
    parser.add_argument("--out", required=True, metavar="MODEL", help="model file to write")
    add_model_options(parser)
    parser.add_argument(
        "--max-genes",
        type=int,
        default=None,
        metavar="N",
        help="keep the N genes with the highest mean expression (default: all)",
    )
    parser.add_argument(
        "--genes", default=None, metavar="FILE", help="keep the gene symbols listed in FILE, one a line"
    )
    parser.add_argument("--cv", type=int, default=None, metavar="K", help="patient-grouped K-fold CV")
    parser.add_argument(
        "--on-error",
        choices=("raise", "warn"),
        default="raise",
        help="slides of the CSV without a feature file: stop ('raise') or list them and continue",
    )
    return parser


def add_model_options(parser):
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", choices=_models.MODEL_CHOICES, default="rnafm", help="the regressor"
    )
    group.add_argument(
        "--pathways",
        default="go_molecular_function",
        help="gene sets of rnafm: a bundled collection name, a .gmt or .json file, "
        "or 'none' to learn gene groups from the training targets",
    )
    group.add_argument(
        "--n-clusters", type=int, default=None, metavar="K",
        help="super-tiles per slide (default: the value featurize stored, else 100)",
    )
    group.add_argument("--max-epochs", type=int, default=None, help="training epochs (torch models)")
    group.add_argument("--batch-size", type=int, default=None, help="slides per training batch")
    group.add_argument("--learning-rate", type=float, default=None, help="AdamW learning rate")
    group.add_argument("--alpha", type=float, default=1.0, help="ridge penalty (model ridge)")
    group.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE",
        help="any other constructor argument of the regressor; repeatable",
    )
    group.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, mps")
    group.add_argument("--random-state", type=int, default=0, help="seed")


def load_training_set(reference, features_dir, *, on_error="raise"):
    """Match reference rows with feature files.

    Returns
    -------
    table : pandas.DataFrame
        The rows that have a feature file.
    genes : list of str
    embeddings : list of TileEmbeddings
        In the order of ``table``.
    manifest : dict or None
    """
    from ..exceptions import SlideReadWarning

    table, genes = _io.load_reference(reference)
    files = _io.feature_files(features_dir)
    manifest = _io.read_manifest(features_dir)

    names = [_io.slide_name(n) for n in table["wsi_file_name"]]
    missing = [n for n in names if n not in files]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        message = (
            f"{len(missing)} of {len(names)} slides in --reference have no feature file in "
            f"--features {str(features_dir)!r}: {shown}"
        )
        if on_error == "raise" or len(missing) == len(names):
            raise CLIError(message + "; featurize them, or pass --on-error warn to skip them")
        warnings.warn(message + "; they are skipped", SlideReadWarning, stacklevel=2)
    keep = [n in files for n in names]
    table = table.loc[keep].reset_index(drop=True)

    embeddings = [_io.read_embeddings(files[_io.slide_name(n)]) for n in table["wsi_file_name"]]
    encoders = {(e.encoder, e.features.shape[1]) for e in embeddings}
    if len(encoders) > 1:
        raise CLIError(
            f"--features {str(features_dir)!r} mixes encoders {sorted(encoders)!r}; "
            "featurize all slides with one encoder"
        )
    return table, genes, embeddings, manifest


def select_genes(table, genes, *, max_genes=None, genes_file=None):
    """Return the gene symbols to model, in reference column order."""
    selected = list(genes)
    if genes_file is not None:
        path = Path(genes_file).expanduser()
        if not path.is_file():
            raise CLIError(f"--genes {str(path)!r} not found")
        wanted = {line.strip() for line in path.read_text().splitlines() if line.strip()}
        selected = [g for g in selected if g in wanted]
        if not selected:
            raise CLIError(f"no gene of --genes {str(path)!r} is a column of --reference")
    if max_genes is not None:
        if max_genes < 1:
            raise CLIError(f"--max-genes must be at least 1, got {max_genes!r}")
        means = _io.reference_matrix(table, selected).mean(axis=0)
        order = np.argsort(-means, kind="stable")[:max_genes]
        selected = [selected[i] for i in sorted(order)]
    return selected


def cross_validate(pipeline, embeddings, Y, genes, groups, *, n_splits, n_samples=16, level=0.9,
                   random_state=0, verbose=0):
    """Grouped K-fold out-of-fold predictions of a pipeline.

    Returns
    -------
    result : dict
        ``mean``, ``std``, ``lower``, ``upper`` of shape (n_slides, n_genes),
        ``fold`` (n_slides,), the test fold of each slide, and ``ranking``
        (n_genes,), training-only gene scores averaged over folds, or None.
    """
    from sklearn.base import clone
    from sklearn.model_selection import GroupKFold

    from ..utils import progress

    n_groups = len(set(groups))
    if n_splits < 2 or n_splits > n_groups:
        raise CLIError(
            f"--cv must be between 2 and the number of patients ({n_groups}); got {n_splits!r}"
        )
    out = {key: np.full(Y.shape, np.nan, dtype=np.float32) for key in ("mean", "std", "lower", "upper")}
    out["fold"] = np.full(len(Y), -1, dtype=np.int64)
    from ._report import training_gene_scores

    rankings = []
    splits = list(GroupKFold(n_splits=n_splits).split(Y, Y, groups))
    for fold, (train, test) in enumerate(progress(splits, verbose=verbose, desc="cv", unit="fold")):
        model = clone(pipeline)
        _models.fit_pipeline(model, [embeddings[i] for i in train], Y[train], genes, groups[train])
        result = _models.predict_distribution(
            model, [embeddings[i] for i in test], n_samples=n_samples, level=level,
            random_state=random_state,
        )
        for key in ("mean", "std", "lower", "upper"):
            out[key][test] = result[key]
        out["fold"][test] = fold
        scores = training_gene_scores(model, Y[train])
        if scores is not None:
            rankings.append(scores)
    out["ranking"] = np.nanmean(np.vstack(rankings), axis=0) if len(rankings) == len(splits) else None
    return out


@contextmanager
def _gene_set_warnings_silenced():
    """Silence GeneSetWarning, which ``check_pathways`` has already shown once.

    Every fit on the same genes resolves the same gene sets and would repeat
    the warning, once per cross-validation fold and once more at the end.
    """
    from ..exceptions import GeneSetWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeneSetWarning)
        yield


def run(args):
    from ._report import metrics_report, print_summary

    out = _io.check_output_path(args.out)
    table, genes, embeddings, manifest = load_training_set(
        args.reference, args.features, on_error=args.on_error
    )
    genes = select_genes(table, genes, max_genes=args.max_genes, genes_file=args.genes)
    Y = _io.reference_matrix(table, genes)
    groups = table["patient_id"].to_numpy()

    n_clusters = args.n_clusters
    if n_clusters is None:
        n_clusters = (manifest or {}).get("n_clusters") or 100
    pathways = _models.parse_pathways(args.pathways)
    pipeline = _models.build_pipeline(
        args.model,
        n_clusters=n_clusters,
        pathways=pathways,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        alpha=args.alpha,
        device=args.device,
        random_state=args.random_state,
        verbose=max(args.verbosity - 1, 0),
        extra_params=_models.parse_params(args.param),
    )
    if args.model == "rnafm" and pathways is not None:
        _models.check_pathways(pathways, genes)
    logger.info(
        "training %s on %d slides, %d patients, %d genes, %d super-tiles",
        args.model, len(Y), len(set(groups)), len(genes), n_clusters,
    )

    if args.cv is not None:
        start = time.perf_counter()
        with _gene_set_warnings_silenced():
            cv = cross_validate(
                pipeline, embeddings, Y, genes, groups, n_splits=args.cv,
                random_state=args.random_state, verbose=args.verbosity,
            )
        gene_table, summary = metrics_report(
            Y, cv["mean"], genes, lower=cv["lower"], upper=cv["upper"], ranking_scores=cv["ranking"]
        )
        stem = str(out)
        gene_table.to_csv(f"{stem}.cv_genes.csv", index=False)
        summary.to_csv(f"{stem}.cv_summary.csv", index=False)
        print(f"{args.cv}-fold cross-validation grouped by patient_id "
              f"({time.perf_counter() - start:.0f} s):")
        print_summary(summary)
        print(f"per-gene metrics: {stem}.cv_genes.csv; summary: {stem}.cv_summary.csv")

    start = time.perf_counter()
    with _gene_set_warnings_silenced():
        _models.fit_pipeline(pipeline, embeddings, Y, genes, groups)
    bundle = {
        "pipeline": pipeline,
        "model": args.model,
        "genes": list(genes),
        "encoder": str(embeddings[0].encoder),
        "embedding_dim": int(embeddings[0].features.shape[1]),
        "n_clusters": int(n_clusters),
        "featurizer": (manifest or {}).get("settings", {"encoder": str(embeddings[0].encoder)}),
        "training_slides": list(table["wsi_file_name"]),
    }
    _io.save_model(out, bundle)
    print(
        f"trained {args.model} on {len(Y)} slides and {len(genes)} genes in "
        f"{time.perf_counter() - start:.0f} s; model written to {out}"
    )
    return 0
