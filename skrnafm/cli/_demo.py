"""``skrnafm demo``: RNA-FM against Ridge and HE2RNA on HER2ST pseudo-bulk samples.

Steps: load the sections and cut pseudo-bulk samples (3 x 3 spot blocks).
Encode the tiles of each whole section once with the default encoder
(cached) and give each sample the tiles inside its region. Pool
super-tiles, cross-validate RNA-FM against Ridge and a neural baseline
leaving one section out, and write a report folder with metrics and
figures.
"""

import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from . import _io, _models
from ._errors import CLIError
from ._table import format_table

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Compare RNA-FM with Ridge and the HE2RNA baseline on the real HER2ST
breast cancer sections, leaving one section out. RNA-FM runs twice: as
published, and around a Ridge mean (mean_estimator), where the flow model
learns what Ridge leaves unexplained. Each pseudo-bulk sample
sums the spot counts of a 3 x 3 block of spots, as log2(CPM + 1); its
features are the tile embeddings of the H&E inside the block's region
(default encoder, cached). The models predict the most expressed genes of
each held-out section.

--out receives metrics.csv (per model and gene), summary.csv, the
out-of-fold predictions, settings.json and the figures
pred_vs_measured.png, calibration.png, r_distribution.png and
gene_map.png. The summary table is printed at the end.

The data folder is --data-home, else $SKRNAFM_DATA, else ~/skrnafm_data;
it must contain her2st/<S>.jpg, <S>.tsv.gz and <S>_selection.tsv.
"""

# Settings sized so that the whole demo runs in minutes on a 2-core CPU.
QUICK_SETTINGS = {
    "sections": ["B4", "C2", "C3"],
    "n_genes": 100,
    "max_epochs": 5,
    "n_samples": 8,
}


def add_parser(subparsers, formatter_class):
    parser = subparsers.add_parser(
        "demo",
        help="compare RNA-FM with Ridge and HE2RNA on HER2ST pseudo-bulk, leave-one-section-out",
        description=DESCRIPTION,
        formatter_class=formatter_class,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder (created)")
    parser.add_argument("--data-home", default=None, metavar="DIR", help="data folder")
    parser.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="embedding cache (default: 'cache' beside the report folder)",
    )
    parser.add_argument("--n-genes", type=int, default=1000, help="most expressed genes modelled")
    parser.add_argument("--n-clusters", type=int, default=4, help="super-tiles per sample")
    parser.add_argument("--max-epochs", type=int, default=40,
                        help="maximum training epochs of the torch models (early stopping may end sooner)")
    parser.add_argument("--n-samples", type=int, default=16, help="posterior draws per sample")
    parser.add_argument(
        "--sections", nargs="+", default=None, metavar="S",
        help="HER2ST sections to use (default: all five)",
    )
    # NOTE: with the GO sets (359 matched on the 1,000 genes) RNA-FM's
    # cross-validation took about 200 s on an idle 2-core CPU, against about
    # 20 s with learned groups ('none'); on a CPU shared with other work it
    # can take many times longer.
    parser.add_argument(
        "--pathways", default="go_molecular_function",
        help="gene sets of RNA-FM: 'go_molecular_function' (bundled), a .gmt or .json file, "
        "or 'none' to learn gene groups from the training targets (much faster on a CPU)",
    )
    parser.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, mps")
    parser.add_argument("--random-state", type=int, default=0, help="seed")
    parser.add_argument(
        "--quick", action="store_true",
        help="a smaller check: three sections, 100 genes, 5 epochs, 8 draws "
        "(also set by SKRNAFM_QUICK=1)",
    )
    return parser


def _settings(args):
    settings = {
        "sections": args.sections,
        "n_genes": args.n_genes,
        "n_clusters": args.n_clusters,
        "max_epochs": args.max_epochs,
        "n_samples": args.n_samples,
        "block_size": 3,
        "encoder": "efficientnet_lite0",
        "pathways": _models.parse_pathways(args.pathways),
        "target_mpp": 0.5,
        "tile_size": 256,
        "interval": 0.9,
        "random_state": args.random_state,
        "device": args.device,
    }
    if args.quick or os.environ.get("SKRNAFM_QUICK") == "1":
        settings.update(QUICK_SETTINGS)
        settings["quick"] = True
    return settings


def load_data(data_home, sections):
    """Load the pseudo-bulk samples, or stop with where the data was looked for."""
    from ..datasets import fetch_her2st, make_her2st_pseudobulk

    try:
        her2st = fetch_her2st(data_home=data_home, sections=sections, download_if_missing=False)
    except FileNotFoundError as exc:
        raise CLIError(
            f"{exc} Run the demo with --data-home DIR or SKRNAFM_DATA=DIR, where DIR "
            "contains her2st/."
        ) from exc
    except ValueError as exc:
        raise CLIError(f"--sections: {exc}") from exc
    bulk = make_her2st_pseudobulk(her2st, block_size=3)
    return her2st, bulk


def featurize_sections(her2st, *, cache_dir, settings, verbose):
    """Encode the tiles of each whole section once.

    Returns
    -------
    embeddings : dict
        Section name -> :class:`~skrnafm.features.TileEmbeddings`.
    """
    from PIL import Image

    from ..features import WSIFeaturizer
    from ..slide import SlideRegion

    regions = []
    for name in her2st.section_names:
        part = her2st.sections[name]
        # Only the header is read; the images are a little above Pillow's
        # decompression-bomb warning limit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(part.image_path) as image:
                width, height = image.size
        # A region covering the whole image carries the section's own µm per
        # pixel, which differs a little between sections.
        regions.append(SlideRegion(part.image_path, bbox=(0, 0, width, height), mpp=part.mpp,
                                   name=name))
    featurizer = WSIFeaturizer(
        encoder=settings["encoder"],
        target_mpp=settings["target_mpp"],
        tile_size=settings["tile_size"],
        device=settings["device"],
        random_state=settings["random_state"],
        cache_dir=str(cache_dir),
        verbose=verbose,
    )
    return dict(zip(her2st.section_names, featurizer.fit_transform(regions)))


def assign_tiles(section_embeddings, bulk):
    """Give each pseudo-bulk sample the tiles whose centre lies in its region.

    Returns
    -------
    embeddings : list of TileEmbeddings
        One per sample of ``bulk``, in its order.
    empty : list of str
        Samples whose region contains no tissue tile.
    """
    from ..features import TileEmbeddings

    samples, empty = [], []
    for name, section, (x, y, w, h) in zip(bulk.Y.index, bulk.groups, bulk.bboxes):
        tiles = section_embeddings[section]
        # Level-0 side of a tile: tile_size pixels at target_mpp.
        side = tiles.tile_size * tiles.target_mpp / tiles.mpp
        centres = tiles.coords + side / 2.0
        inside = (
            (centres[:, 0] >= x) & (centres[:, 0] < x + w)
            & (centres[:, 1] >= y) & (centres[:, 1] < y + h)
        )
        if not inside.any():
            empty.append(str(name))
        samples.append(
            TileEmbeddings(
                features=tiles.features[inside],
                coords=tiles.coords[inside],
                slide=str(name),
                encoder=tiles.encoder,
                mpp=tiles.mpp,
                tile_size=tiles.tile_size,
                target_mpp=tiles.target_mpp,
            )
        )
    return samples, empty


def model_specs(settings):
    """Build the compared models, as name -> unfitted pipeline.

    The torch models are small (width 64, two blocks) and learn at 1e-3 so
    that a leave-one-section-out run fits in minutes on a 2-core CPU; the
    RNA-FM condition transformer works at width 64 instead of the encoder's
    1280.
    """
    from ..utils import resolve_device

    common = {"n_clusters": settings["n_clusters"], "device": settings["device"],
              "random_state": settings["random_state"], "max_epochs": settings["max_epochs"],
              "learning_rate": 1e-3}
    # NOTE: precision="auto" picks bf16 autocast on CPUs with native bf16;
    # for networks this small it fitted about 5 times slower than fp32 on
    # the 2-core test machine, so CPU runs use fp32.
    cpu = resolve_device(settings["device"]).type == "cpu"
    precision = {"precision": "fp32" if cpu else "auto"}
    rnafm = {"hidden_dim": 64, "depth": 2, "n_heads": 4, "condition_dim": 64,
             "n_samples": settings["n_samples"], **precision}
    return {
        "RNA-FM": _models.build_pipeline(
            "rnafm", pathways=settings["pathways"], extra_params=rnafm, **common
        ),
        "RNA-FM + Ridge mean": _models.build_pipeline(
            "rnafm", pathways=settings["pathways"],
            extra_params={**rnafm, "mean_estimator": _ridge_regressor()}, **common
        ),
        "Ridge": _ridge_pipeline(settings),
        "HE2RNA": _models.build_pipeline(
            "he2rna", extra_params={"hidden_dim": 64, **precision}, **common
        ),
    }


def _ridge_regressor():
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # The penalty is chosen by efficient leave-one-out CV inside each
    # training fold, over a wide grid because features outnumber samples.
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(0, 6, 13), store_cv_results=True))


def _ridge_pipeline(settings):
    from sklearn.pipeline import Pipeline

    from ..features import SuperTilePooler

    pooler = SuperTilePooler(n_clusters=settings["n_clusters"], random_state=settings["random_state"])
    return Pipeline([("pool", pooler), ("regressor", _ridge_regressor())])


def cross_validate_models(models, embeddings, Y, genes, groups, *, settings, verbose):
    """Leave-one-section-out predictions of every model.

    Returns
    -------
    results : dict
        model name -> dict with ``mean``, ``std``, ``lower``, ``upper`` of
        shape (n_samples, n_genes), ``draws`` (n_draws, n_samples, n_genes)
        or None, ``ranking`` (n_genes,), the training-only gene scores
        averaged over folds, or None, and ``seconds``.
    """
    from sklearn.base import clone
    from sklearn.model_selection import LeaveOneGroupOut

    from ..exceptions import GeneSetWarning
    from ._report import training_gene_scores

    splits = list(LeaveOneGroupOut().split(Y, Y, groups))
    results = {}
    for name, pipeline in models.items():
        start = time.perf_counter()
        out = {key: np.full(Y.shape, np.nan, dtype=np.float32) for key in ("mean", "std", "lower", "upper")}
        draws = None
        rankings = []
        for fold, (train, test) in enumerate(splits):
            logger.info("%s: fold %d of %d (test section %s)", name, fold + 1, len(splits), groups[test[0]])
            model = clone(pipeline)
            with warnings.catch_warnings():
                # Genes in no gene set are counted once below, not per fold.
                warnings.simplefilter("ignore", GeneSetWarning)
                _models.fit_pipeline(model, [embeddings[i] for i in train], Y[train], genes)
            gene_sets = getattr(model[-1], "gene_sets_", None)
            if fold == 0 and gene_sets is not None:
                print(f"{name}: {gene_sets.n_sets} gene sets; {len(gene_sets.background)} of "
                      f"{len(genes)} genes are in no set and form the background token")
            result = _models.predict_distribution(
                model, [embeddings[i] for i in test], n_samples=settings["n_samples"],
                level=settings["interval"], random_state=settings["random_state"],
            )
            for key in ("mean", "std", "lower", "upper"):
                out[key][test] = result[key]
            scores = training_gene_scores(model, Y[train])
            if scores is not None:
                rankings.append(scores)
            if result["draws"] is not None:
                if draws is None:
                    draws = np.full((result["draws"].shape[0], *Y.shape), np.nan, dtype=np.float32)
                draws[:, test] = result["draws"]
        out["draws"] = draws
        # Honest top-k: genes ranked by scores from the training folds only.
        out["ranking"] = np.nanmean(np.vstack(rankings), axis=0) if len(rankings) == len(splits) else None
        out["seconds"] = time.perf_counter() - start
        logger.info("%s: cross-validation took %.0f s", name, out["seconds"])
        results[name] = out
    return results


def _subset_bulk(bulk, keep):
    """Return the pseudo-bulk Bunch restricted to the samples where ``keep`` is True."""
    from sklearn.utils import Bunch

    subset = Bunch(**bulk)
    subset.Y = bulk.Y.loc[keep]
    subset.counts = bulk.counts.loc[keep]
    subset.regions = [r for r, k in zip(bulk.regions, keep) if k]
    for key in ("groups", "patients", "blocks", "n_spots", "bboxes", "mpp"):
        subset[key] = np.asarray(bulk[key])[keep]
    return subset


def _load_average():
    """Return the 1-minute load average, or None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _package_versions():
    import sklearn
    import torch

    from .._version import __version__

    return {
        "skrnafm": __version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def run(args):
    from . import _report

    wall_start = time.perf_counter()
    load_start = _load_average()
    settings = _settings(args)
    out_dir = _io.check_output_path(args.out, option="--out", is_dir=True)
    cache_dir = Path(args.cache_dir) if args.cache_dir else out_dir.resolve().parent / "cache"
    for name, value in (("--n-genes", settings["n_genes"]), ("--n-clusters", settings["n_clusters"]),
                        ("--max-epochs", settings["max_epochs"]), ("--n-samples", settings["n_samples"])):
        if value < 1:
            raise CLIError(f"{name} must be at least 1, got {value!r}")

    her2st, bulk = load_data(args.data_home, settings["sections"])
    out_dir.mkdir(exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"data: {her2st.data_dir} ({len(bulk.regions)} pseudo-bulk samples from sections "
          f"{', '.join(bulk.sections)})")
    print(f"embedding cache: {cache_dir} (delete it to featurize again)")

    # Gene panel: the most expressed genes over all samples. Ranking by mean
    # expression uses no image, so it does not favour any model.
    Y_all = bulk.Y.to_numpy(dtype=np.float32)
    order = np.argsort(-Y_all.mean(axis=0), kind="stable")[: settings["n_genes"]]
    order = np.sort(order)
    genes = [str(g) for g in bulk.gene_names[order]]
    Y = Y_all[:, order]
    groups = np.asarray(bulk.groups)

    start = time.perf_counter()
    sections = featurize_sections(her2st, cache_dir=cache_dir, settings=settings,
                                  verbose=args.verbosity)
    featurize_seconds = time.perf_counter() - start
    embeddings, empty = assign_tiles(sections, bulk)
    if empty:
        # Samples without a tissue tile cannot be featurized; they are left out.
        logger.info("%d samples without a tissue tile left out: %s", len(empty), ", ".join(empty))
        keep = np.array([e.n_tiles > 0 for e in embeddings])
        embeddings = [e for e, k in zip(embeddings, keep) if k]
        Y, groups = Y[keep], groups[keep]
        bulk = _subset_bulk(bulk, keep)
    n_tiles = np.array([e.n_tiles for e in embeddings])
    print(f"featurized {len(sections)} sections in {featurize_seconds:.0f} s: "
          f"{sum(e.n_tiles for e in sections.values())} tiles, median {int(np.median(n_tiles))} "
          f"per pseudo-bulk sample")

    models = model_specs(settings)
    results = cross_validate_models(models, embeddings, Y, genes, groups, settings=settings,
                                    verbose=args.verbosity)

    report = _report.write_demo_report(
        out_dir, results=results, Y=Y, genes=genes, bulk=bulk, her2st=her2st, settings=settings,
    )
    wall_seconds = time.perf_counter() - wall_start
    info = {
        "settings": settings,
        "n_pseudobulk_samples": int(len(Y)),
        "n_genes": len(genes),
        "featurize_seconds": round(featurize_seconds, 1),
        "cv_seconds": {name: round(r["seconds"], 1) for name, r in results.items()},
        "wall_seconds": round(wall_seconds, 1),
        "versions": _package_versions(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        # Timings from a machine busy with other work are upper bounds.
        "load_average_1min": {"start": load_start, "end": _load_average()},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (out_dir / "settings.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    print()
    print(f"Leave-one-section-out CV, {len(Y)} pseudo-bulk samples, {len(genes)} genes "
          f"(per-gene Pearson r within each held-out section, averaged over sections):")
    print(format_table(report["header"], report["rows"]))
    print()
    print(f"report written to {out_dir} in {wall_seconds:.0f} s: {', '.join(report['files'])}")
    return 0
