"""``skrnafm featurize``: slides -> a folder of tile-embedding files."""

import argparse
import logging
import os
import time
import warnings
from pathlib import Path

from . import _io
from ._errors import CLIError, check_parameters
from ._table import format_table

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Tile each slide's tissue, encode the tiles with a pretrained encoder and
write one <slide name>.npz per slide (tile embeddings and level-0 tile
coordinates) plus a features.json manifest into --out. A status table
lists every slide at the end, failed slides with the reason.

Folders given as SLIDE_OR_DIR are searched (not recursively) for slide
and image files (.svs .tif .tiff .ndpi .mrxs .scn .bif .jpg .png).
"""


def add_parser(subparsers, formatter_class):
    parser = subparsers.add_parser(
        "featurize",
        help="encode slides into tile embeddings",
        description=DESCRIPTION,
        formatter_class=formatter_class,
    )
    parser.add_argument("slides", nargs="+", metavar="SLIDE_OR_DIR", help="slide files or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_featurizer_options(parser)
    parser.add_argument(
        "--n-clusters",
        type=int,
        default=None,
        metavar="K",
        help="also store K super-tiles (k-means cluster means) per slide in its .npz",
    )
    parser.add_argument(
        "--on-error",
        choices=("raise", "warn"),
        default="warn",
        help="on a slide that cannot be read: stop ('raise') or list it and continue ('warn')",
    )
    return parser


def add_featurizer_options(parser):
    """Add the options that set up a ``WSIFeaturizer`` (shared with ``predict``)."""
    group = parser.add_argument_group("featurizer")
    group.add_argument(
        "--encoder",
        default="efficientnet_lite0",
        help="tile encoder: 'efficientnet_lite0' or 'timm:<model name>' (needs the timm extra)",
    )
    group.add_argument(
        "--target-mpp", type=float, default=0.5, help="resolution of the tiles, in µm per pixel"
    )
    group.add_argument("--tile-size", type=int, default=256, help="tile side, in pixels")
    group.add_argument(
        "--max-tiles",
        type=parse_max_tiles,
        default=4000,
        metavar="N",
        help="maximum tiles per slide, drawn at random; 'none' or 'all' keeps every tile",
    )
    group.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="µm per pixel of slides whose files lack it (otherwise those slides fail)",
    )
    group.add_argument("--batch-size", type=int, default=64, help="tiles per encoder batch")
    group.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps")
    group.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="slides featurized in parallel by this many joblib worker processes, each "
        "loading its own encoder and using an equal share of the CPU threads; -1 uses all CPUs",
    )
    group.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="reuse embeddings cached here from earlier runs with the same settings",
    )
    group.add_argument("--random-state", type=int, default=0, help="seed of the tile sampling")


def parse_max_tiles(text):
    """Parse ``--max-tiles``: an integer, or 'none' / 'all' for no limit."""
    if text.strip().lower() in {"none", "all"}:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}; give a positive integer, or 'none' to keep every tile"
        ) from None


def check_encoder_name(name):
    """Reject an ``--encoder`` value that ``get_encoder`` would reject, before any work."""
    from ..features._encoders import DEFAULT_ENCODER, encoder_kind

    if encoder_kind(name) is not None:
        return
    raise CLIError(
        f"--encoder {name!r} is not a known encoder; use {DEFAULT_ENCODER!r} or "
        "'timm:<model name>' (needs the timm extra: pip install skrnafm[timm])"
    )


# WSIFeaturizer parameter -> the option that sets it, for error messages.
FEATURIZER_OPTIONS = {
    "encoder": "--encoder",
    "target_mpp": "--target-mpp",
    "tile_size": "--tile-size",
    "max_tiles": "--max-tiles",
    "mpp": "--mpp",
    "batch_size": "--batch-size",
    "device": "--device",
    "n_jobs": "--n-jobs",
    "cache_dir": "--cache-dir",
    "random_state": "--random-state",
}


def make_featurizer(args, *, verbose=0):
    """Build a ``WSIFeaturizer`` from parsed featurizer options.

    Raises
    ------
    CLIError
        When an option value is invalid, naming the option.
    """
    from ..features import WSIFeaturizer

    check_encoder_name(args.encoder)
    if args.max_tiles is not None and args.max_tiles < 1:
        raise CLIError(
            f"--max-tiles must be at least 1, or 'none' to keep every tile; got {args.max_tiles!r}"
        )
    featurizer = WSIFeaturizer(
        encoder=args.encoder,
        target_mpp=args.target_mpp,
        tile_size=args.tile_size,
        max_tiles=args.max_tiles,
        batch_size=args.batch_size,
        mpp=args.mpp,
        device=args.device,
        n_jobs=args.n_jobs,
        random_state=args.random_state,
        on_error="raise",
        cache_dir=args.cache_dir,
        verbose=verbose,
    )
    check_parameters(featurizer, FEATURIZER_OPTIONS)
    return featurizer


def featurizer_settings(args):
    """Return the featurizer options as a JSON-ready dict."""
    return {
        "encoder": args.encoder,
        "target_mpp": args.target_mpp,
        "tile_size": args.tile_size,
        "max_tiles": args.max_tiles,
        "mpp": args.mpp,
        "random_state": args.random_state,
    }


def find_slides(inputs):
    """Expand files and folders into a sorted, duplicate-free list of slide paths."""
    slides = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix.lower() in _io.SLIDE_EXTENSIONS
                and p.suffix.lower() != ".npz"
            )
            if not found:
                logger.warning("no slide file found in folder %s", path)
            slides.extend(found)
        elif path.is_file():
            slides.append(path)
        else:
            raise CLIError(f"slide {str(item)!r} not found")
    unique = list(dict.fromkeys(slides))
    if not unique:
        raise CLIError(f"no slide file found in {list(map(str, inputs))!r}")
    return unique


def describe_failure(reason):
    """Return a slide's failure reason with the CLI option that fixes it.

    The library's message for a missing resolution suggests Python calls,
    so it is replaced by one that names ``--mpp``.
    """
    if reason.startswith("MissingResolutionError"):
        return (
            "MissingResolutionError: the file records no µm per pixel; "
            "pass --mpp (0.5 for a 20x scan, 0.25 for 40x)"
        )
    return reason


def featurize_slides(slides, featurizer, out_dir, *, n_clusters=None, on_error="warn", verbose=0,
                     log_failures=True):
    """Featurize slides and write one ``.npz`` per slide.

    Slides go to the featurizer in chunks, so ``n_jobs`` workers run in
    parallel while at most one chunk of embeddings is held in memory.
    With ``log_failures``, each failed slide gets one warning log line (the
    caller's status table lists it again at the end).

    Returns
    -------
    records : list of dict
        One status record per slide: slide, name, status ('ok' or
        'failed'), n_tiles, mpp, seconds (of its chunk, per slide), file,
        reason (the first line of the library's message).

    Raises
    ------
    CLIError
        Under ``on_error="raise"``, for the first slide that cannot be
        used, once the other slides of its chunk are done.
    """
    from ..utils import progress

    # Under "warn" the featurizer logs failures at INFO level only. It also
    # warns in this process, for slides read in joblib workers too. This
    # function reports each failure itself, so that warning is dropped.
    featurizer.set_params(on_error="warn")
    n_jobs = featurizer.n_jobs if featurizer.n_jobs and featurizer.n_jobs > 0 else os.cpu_count()
    chunk_size = max(4 * n_jobs, 8)

    records, todo, names_seen = [], [], {}
    for slide in slides:
        name = _io.slide_name(slide)
        record = {"slide": str(slide), "name": name, "status": "failed", "n_tiles": 0,
                  "mpp": None, "seconds": 0.0, "file": None, "reason": ""}
        records.append(record)
        if name in names_seen:
            record["reason"] = f"same slide name as {names_seen[name]}"
            if on_error == "raise":
                raise CLIError(f"slide {str(slide)!r} has the same name as {names_seen[name]!r}")
            continue
        names_seen[name] = str(slide)
        todo.append(record)

    bar = progress(total=len(todo), verbose=verbose, desc="featurize", unit="slide")
    try:
        _featurize_chunks(todo, featurizer, out_dir, chunk_size, bar, n_clusters=n_clusters,
                          on_error=on_error, log_failures=log_failures)
    finally:
        bar.close()
    return records


def _featurize_chunks(todo, featurizer, out_dir, chunk_size, bar, *, n_clusters, on_error,
                      log_failures):
    """Featurize the records of ``todo`` in place, ``chunk_size`` slides at a time."""
    from ..exceptions import SlideReadWarning

    for first in range(0, len(todo), chunk_size):
        chunk = todo[first:first + chunk_size]
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Slide \d+ \(", category=SlideReadWarning)
            results = featurizer.transform([r["slide"] for r in chunk])
        seconds = (time.perf_counter() - start) / len(chunk)
        for record, embeddings in zip(chunk, results):
            record["seconds"] = seconds
            if embeddings.failed:
                record["reason"] = str(embeddings.error).splitlines()[0]
                if on_error == "raise":
                    raise CLIError(
                        f"slide {record['slide']!r} failed: {describe_failure(record['reason'])}; "
                        "pass --on-error warn to skip failed slides"
                    )
                if log_failures:
                    logger.warning(
                        "slide %s failed: %s", record["slide"], describe_failure(record["reason"])
                    )
                continue
            supertiles = None
            if n_clusters is not None:
                supertiles = pool_one(embeddings, n_clusters, featurizer.random_state)
            path = _io.write_embeddings(out_dir, embeddings, supertiles=supertiles)
            record.update(
                status="ok",
                n_tiles=embeddings.n_tiles,
                mpp=embeddings.mpp,
                file=path.name,
                embedding_dim=embeddings.embedding_dim,
                encoder=str(embeddings.encoder),
            )
        bar.update(len(chunk))


def pool_one(embeddings, n_clusters, random_state):
    """Return one slide's super-tiles as a (n_clusters, D) array."""
    from ..features import SuperTilePooler

    pooled = SuperTilePooler(n_clusters=n_clusters, random_state=random_state).fit_transform(
        [embeddings]
    )
    return pooled.reshape(n_clusters, -1)


def _shorten(text, width):
    return text if len(text) <= width else text[: width - 3] + "..."


def status_table(records):
    rows = []
    for r in records:
        rows.append(
            [
                r["name"],
                r["status"],
                r["n_tiles"] if r["status"] == "ok" else "",
                f"{r['mpp']:.3f}" if r["mpp"] else "",
                f"{r['seconds']:.1f}",
                r["file"] if r["status"] == "ok" else _shorten(describe_failure(r["reason"]), 100),
            ]
        )
    return format_table(["slide", "status", "tiles", "µm/px", "s/slide", "file or reason"], rows)


def run(args):
    from .._version import __version__

    out_dir = _io.check_output_path(args.out, is_dir=True)
    if args.n_clusters is not None and args.n_clusters < 1:
        raise CLIError(f"--n-clusters must be at least 1, got {args.n_clusters!r}")
    slides = find_slides(args.slides)
    featurizer = make_featurizer(args, verbose=max(args.verbosity - 1, 0))
    out_dir.mkdir(exist_ok=True)

    records = featurize_slides(
        slides,
        featurizer,
        out_dir,
        n_clusters=args.n_clusters,
        on_error=args.on_error,
        verbose=args.verbosity,
    )

    ok = [r for r in records if r["status"] == "ok"]
    manifest = {
        "skrnafm_version": __version__,
        "encoder": ok[0]["encoder"] if ok else args.encoder,
        "embedding_dim": ok[0]["embedding_dim"] if ok else None,
        "n_clusters": args.n_clusters,
        "settings": featurizer_settings(args),
        "slides": records,
    }
    _io.write_manifest(out_dir, manifest)

    print(status_table(records))
    failed = len(records) - len(ok)
    summary = f"{len(ok)} of {len(records)} slides featurized into {out_dir}"
    if failed:
        summary += f"; full reasons in {out_dir / _io.MANIFEST_NAME}"
    print(summary)
    if any("MissingResolutionError" in r["reason"] for r in records):
        print("slides without resolution metadata need --mpp (µm per pixel of their level 0)")
    if not ok:
        raise CLIError(f"no slide could be featurized ({failed} failed; see the table above)")
    return 3 if failed else 0
