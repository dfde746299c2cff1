"""``skrnafm predict``: a saved model and slides or features -> predictions."""

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from . import _featurize, _io, _models
from ._errors import CLIError
from ._table import count_noun

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Predict expression with a model from 'skrnafm fit'. Inputs are feature
files (.npz from 'skrnafm featurize'), feature folders, slide files or
folders of slides; slides are featurized first with the encoder and tiling
settings stored in the model.

--out FILE.csv gets one row per slide and gene: the predictive mean, its
standard deviation and the bounds of the central --interval. Models
without a sampler (ridge) leave std and bounds empty. When anndata is
installed, FILE.h5ad is written too (X = mean; layers std, lower, upper).
--draws FILE.npz stores the raw posterior draws.
"""


def add_parser(subparsers, formatter_class):
    parser = subparsers.add_parser(
        "predict", help="predict expression for slides or features", description=DESCRIPTION,
        formatter_class=formatter_class,
    )
    parser.add_argument("--model", required=True, metavar="MODEL", help="model file from 'fit'")
    parser.add_argument(
        "inputs", nargs="+", metavar="SLIDES_OR_FEATURES", help="slides, .npz files or folders"
    )
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="prediction table")
    parser.add_argument("--n-samples", type=int, default=32, help="posterior draws per slide")
    parser.add_argument(
        "--interval", type=float, default=0.9, help="probability of the central interval, in (0, 1)"
    )
    parser.add_argument(
        "--draws", default=None, metavar="FILE.npz", help="also write the raw draws here"
    )
    parser.add_argument(
        "--no-h5ad", action="store_true", help="do not write FILE.h5ad even if anndata is installed"
    )
    group = parser.add_argument_group("featurizing slides")
    group.add_argument("--mpp", type=float, default=None, help="µm per pixel of slides lacking it")
    group.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, mps")
    group.add_argument("--batch-size", type=int, default=64, help="tiles per encoder batch")
    group.add_argument("--cache-dir", default=None, metavar="DIR", help="embedding cache")
    group.add_argument("--random-state", type=int, default=0, help="seed of sampling and tiling")
    return parser


def _split_inputs(inputs):
    """Sort inputs into feature files and slide files."""
    feature_paths, slide_inputs = [], []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file() and path.suffix.lower() == ".npz":
            feature_paths.append(path)
        elif path.is_dir() and (
            (path / _io.MANIFEST_NAME).is_file() or any(path.glob("*.npz"))
        ):
            feature_paths.extend(_io.feature_files(path).values())
        elif path.exists():
            slide_inputs.append(path)
        else:
            raise CLIError(f"input {str(item)!r} not found")
    return feature_paths, slide_inputs


def collect_embeddings(args, bundle):
    """Read or compute the tile embeddings of every input, checking the encoder."""
    feature_paths, slide_inputs = _split_inputs(args.inputs)
    embeddings = []
    for path in feature_paths:
        emb = _io.read_embeddings(path)
        _io.check_encoder(bundle, emb, source=str(path))
        embeddings.append(emb)

    if slide_inputs:
        slides = _featurize.find_slides(slide_inputs)
        settings = dict(bundle.get("featurizer") or {})
        featurizer_args = _FeaturizerArgs(
            encoder=settings.get("encoder", bundle["encoder"]),
            target_mpp=settings.get("target_mpp", 0.5),
            tile_size=settings.get("tile_size", 256),
            max_tiles=settings.get("max_tiles", 4000),
            # The training slides' resolution override does not apply to
            # new slides, so only --mpp sets one here.
            mpp=args.mpp,
            batch_size=args.batch_size,
            device=args.device,
            n_jobs=1,
            cache_dir=args.cache_dir,
            random_state=settings.get("random_state", args.random_state),
        )
        featurizer = _featurize.make_featurizer(featurizer_args, verbose=max(args.verbosity - 1, 0))
        with tempfile.TemporaryDirectory(prefix="skrnafm-predict-") as tmp:
            records = _featurize.featurize_slides(
                slides, featurizer, tmp, on_error="warn", verbose=args.verbosity,
                log_failures=False,
            )
            for record in records:
                if record["status"] == "ok":
                    emb = _io.read_embeddings(Path(tmp) / record["file"])
                    _io.check_encoder(bundle, emb, source=record["slide"])
                    embeddings.append(emb)
        report_failed_slides([r for r in records if r["status"] != "ok"], any_left=bool(embeddings))
    return embeddings


def report_failed_slides(failed, *, any_left):
    """Report each slide that could not be featurized on one line.

    Raises
    ------
    CLIError
        When no input is left to predict. A single failed slide is then
        reported by the error alone.
    """
    from ..exceptions import SlideReadWarning

    lines = [
        f"slide {r['slide']!r} failed: {_featurize.describe_failure(r['reason'])}" for r in failed
    ]
    if not any_left and len(lines) == 1:
        raise CLIError(lines[0])
    for line in lines:
        warnings.warn(f"{line}; it is left out of the predictions", SlideReadWarning, stacklevel=2)
    if not any_left and lines:
        raise CLIError(f"none of the {len(lines)} input slides could be featurized (listed above)")


class _FeaturizerArgs:
    """The attributes ``make_featurizer`` reads, filled from a model bundle."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def write_predictions_csv(path, slides, genes, result):
    """Write a long table: slide, gene, mean, std, lower, upper."""
    import pandas as pd

    n_slides, n_genes = result["mean"].shape
    frame = pd.DataFrame(
        {
            "slide": np.repeat(np.asarray(slides, dtype=object), n_genes),
            "gene": np.tile(np.asarray(genes, dtype=object), n_slides),
            "mean": result["mean"].ravel(),
            "std": result["std"].ravel(),
            "lower": result["lower"].ravel(),
            "upper": result["upper"].ravel(),
        }
    )
    frame.to_csv(path, index=False, float_format="%.6g")
    return path


def write_predictions_h5ad(path, slides, genes, result, *, level, model):
    """Write the predictions as AnnData: X = mean, layers std, lower and upper."""
    import anndata
    import pandas as pd

    adata = anndata.AnnData(
        X=np.asarray(result["mean"], dtype=np.float32),
        obs=pd.DataFrame(index=pd.Index([str(s) for s in slides], name="slide")),
        var=pd.DataFrame(index=pd.Index([str(g) for g in genes], name="gene")),
    )
    for layer in ("std", "lower", "upper"):
        adata.layers[layer] = np.asarray(result[layer], dtype=np.float32)
    adata.uns["interval"] = float(level)
    adata.uns["model"] = str(model)
    adata.write_h5ad(path)
    return path


def read_predictions(path):
    """Read a prediction CSV back as (slides, genes, dict of (n_slides, n_genes) arrays)."""
    import pandas as pd

    path = Path(path).expanduser()
    if not path.is_file():
        raise CLIError(f"--predictions {str(path)!r} not found")
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise CLIError(f"--predictions {str(path)!r} cannot be read as CSV: {exc}") from exc
    required = {"slide", "gene", "mean"}
    if not required <= set(frame.columns):
        raise CLIError(
            f"--predictions {str(path)!r} lacks columns {sorted(required - set(frame.columns))!r}; "
            "use a file written by 'skrnafm predict'"
        )
    frame["slide"] = frame["slide"].astype(str)
    frame["gene"] = frame["gene"].astype(str)
    slides = list(dict.fromkeys(frame["slide"]))
    genes = list(dict.fromkeys(frame["gene"]))
    arrays = {}
    for column in ("mean", "std", "lower", "upper"):
        if column in frame.columns:
            wide = frame.pivot(index="slide", columns="gene", values=column)
            arrays[column] = wide.loc[slides, genes].to_numpy(dtype=np.float32)
    return slides, genes, arrays


def run(args):
    if not 0 < args.interval < 1:
        raise CLIError(f"--interval must be in (0, 1), got {args.interval!r}")
    if args.n_samples < 1:
        raise CLIError(f"--n-samples must be at least 1, got {args.n_samples!r}")
    out = _io.check_output_path(args.out)
    if out.suffix.lower() == ".h5ad":
        raise CLIError(
            f"--out {str(out)!r} must be the CSV file; the .h5ad file is written beside it"
        )
    draws_path = _io.check_output_path(args.draws, option="--draws") if args.draws else None
    bundle = _io.load_bundle(args.model)

    embeddings = collect_embeddings(args, bundle)
    slides = [_io.slide_name(e.slide) for e in embeddings]
    result = _models.predict_distribution(
        bundle["pipeline"], embeddings, n_samples=args.n_samples, level=args.interval,
        random_state=args.random_state,
    )
    genes = bundle["genes"]

    write_predictions_csv(out, slides, genes, result)
    print(
        f"predictions for {count_noun(len(slides), 'slide')} x {count_noun(len(genes), 'gene')} "
        f"written to {out}"
    )
    if result["draws"] is None:
        logger.info("model %s has no sampler: std and interval bounds are empty", bundle["model"])

    if not args.no_h5ad:
        try:
            import anndata  # noqa: F401
        except ImportError:
            logger.info("anndata is not installed; no .h5ad written (pip install skrnafm[anndata])")
        else:
            h5ad = out.with_suffix(".h5ad")
            write_predictions_h5ad(h5ad, slides, genes, result, level=args.interval,
                                   model=bundle["model"])
            print(f"AnnData written to {h5ad}")

    if draws_path is not None:
        if result["draws"] is None:
            raise CLIError(f"--draws: model {bundle['model']!r} cannot sample; use an rnafm model")
        np.savez_compressed(
            draws_path, draws=result["draws"], slides=np.array(slides), genes=np.array(genes)
        )
        print(f"{result['draws'].shape[0]} draws per slide written to {draws_path}")
    return 0
