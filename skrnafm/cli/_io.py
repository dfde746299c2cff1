"""Files the CLI reads and writes: feature folders, model bundles, CSVs.

A feature folder contains one ``<slide name>.npz`` per slide (tile embeddings
and their level-0 coordinates) and a ``features.json`` manifest that records
the encoder, the embedding dimension and the status of every slide.
"""

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._version import __version__
from ._errors import CLIError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "features.json"
MODEL_FORMAT = "skrnafm-model-bundle"
MODEL_FORMAT_VERSION = 1

# Extensions stripped from a file name to get the slide name. TCGA names
# contain dots ("TCGA-...-DX1.F6E9A5DF-..."), so only these are removed.
SLIDE_EXTENSIONS = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".bif",
    ".svslide",
    ".jpg",
    ".jpeg",
    ".png",
    ".npz",
)


def slide_name(path_or_name):
    """Return the slide name: the file name without a known slide extension."""
    name = Path(str(path_or_name)).name
    lower = name.lower()
    for ext in SLIDE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def check_output_path(path, *, option="--out", is_dir=False):
    """Fail early when the parent folder of an output path does not exist.

    Parameters
    ----------
    path : str or Path
        The output file or folder.
    option : str, default="--out"
        The option that named it, for the error message.
    is_dir : bool, default=False
        When True, ``path`` is a folder that may be created, but its parent
        must exist.

    Returns
    -------
    path : Path
    """
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(
            f"{option} {str(path)!r}: the folder {str(parent)!r} does not exist; "
            "create it first or choose another path"
        )
    if not is_dir and path.is_dir():
        raise CLIError(f"{option} {str(path)!r} is a folder; give a file name")
    if is_dir and path.exists() and not path.is_dir():
        raise CLIError(f"{option} {str(path)!r} is a file; give a folder")
    return path


# ---------------------------------------------------------------- features


def write_embeddings(out_dir, embeddings, *, supertiles=None):
    """Write one slide's tile embeddings to ``<out_dir>/<slide name>.npz``."""
    name = slide_name(embeddings.slide)
    path = Path(out_dir) / f"{name}.npz"
    arrays = {
        "features": np.asarray(embeddings.features, dtype=np.float32),
        "coords": np.asarray(embeddings.coords, dtype=np.int64),
        "slide": np.array(str(embeddings.slide)),
        "encoder": np.array(str(embeddings.encoder)),
        "mpp": np.array(np.nan if embeddings.mpp is None else float(embeddings.mpp)),
        "tile_size": np.array(int(embeddings.tile_size or 0)),
        "target_mpp": np.array(np.nan if embeddings.target_mpp is None else float(embeddings.target_mpp)),
    }
    if supertiles is not None:
        arrays["supertiles"] = np.asarray(supertiles, dtype=np.float32)
    np.savez_compressed(path, **arrays)
    return path


def read_embeddings(path):
    """Read a ``.npz`` written by :func:`write_embeddings` as ``TileEmbeddings``."""
    from ..features import TileEmbeddings

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"features", "coords", "encoder"} - set(data.files)
            if missing:
                raise CLIError(
                    f"{str(path)!r} is not a skrnafm feature file: it lacks "
                    f"{sorted(missing)}; create it with 'skrnafm featurize'"
                )
            return TileEmbeddings(
                features=data["features"].astype(np.float32, copy=False),
                coords=data["coords"].astype(np.int64, copy=False),
                slide=str(data["slide"]) if "slide" in data.files else str(path),
                encoder=str(data["encoder"]),
                mpp=float(data["mpp"]) if "mpp" in data.files else float("nan"),
                tile_size=int(data["tile_size"]) if "tile_size" in data.files else None,
                target_mpp=float(data["target_mpp"]) if "target_mpp" in data.files else None,
            )
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read feature file {str(path)!r}: {exc}") from exc


def write_manifest(out_dir, manifest):
    path = Path(out_dir) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(features_dir):
    """Return the manifest of a feature folder, or None when it has none."""
    path = Path(features_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot read {str(path)!r}: {exc}") from exc


def feature_files(features_dir):
    """Map slide name -> ``.npz`` path for every feature file in a folder."""
    features_dir = Path(features_dir)
    if not features_dir.is_dir():
        raise CLIError(
            f"--features {str(features_dir)!r} is not a folder; "
            "create it with 'skrnafm featurize SLIDES --out DIR'"
        )
    files = {p.stem: p for p in sorted(features_dir.glob("*.npz"))}
    if not files:
        raise CLIError(
            f"--features {str(features_dir)!r} contains no .npz feature file; "
            "create them with 'skrnafm featurize SLIDES --out DIR'"
        )
    return files


# ---------------------------------------------------------------- reference CSV


def load_reference(path, *, option="--reference"):
    """Read a reference CSV: one row per slide, ``rna_<GENE>`` columns.

    Validation is :func:`skrnafm.datasets.read_reference_csv`'s; its
    ValueError becomes a one-line CLI error naming the option.

    Returns
    -------
    table : pandas.DataFrame
        ``wsi_file_name``, ``patient_id`` and the ``rna_<GENE>`` columns,
        indexed from 0.
    genes : list of str
        Gene symbols, in column order, without the ``rna_`` prefix.
    """
    from ..datasets import read_reference_csv

    path = Path(path).expanduser()
    if not path.is_file():
        raise CLIError(f"{option} {str(path)!r} not found")
    try:
        reference = read_reference_csv(path)
    except (OSError, ValueError) as exc:
        raise CLIError(f"{option}: {exc}") from exc

    genes = [str(g) for g in reference.gene_names]
    table = reference.Y.add_prefix("rna_").reset_index(drop=True)
    table.insert(0, "patient_id", [str(p) for p in reference.patient_ids])
    table.insert(0, "wsi_file_name", [str(s) for s in reference.slides])
    return table, genes


def reference_matrix(table, genes):
    """Return the expression matrix of the ``rna_`` columns as float32."""
    values = table[[f"rna_{g}" for g in genes]].to_numpy(dtype=np.float32)
    return values


# ---------------------------------------------------------------- model bundle


def save_model(path, bundle):
    """Save a model bundle (a dict with the fitted pipeline) with joblib."""
    import joblib

    bundle = dict(bundle)
    bundle["format"] = MODEL_FORMAT
    bundle["format_version"] = MODEL_FORMAT_VERSION
    bundle["skrnafm_version"] = __version__
    bundle["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    joblib.dump(bundle, tmp, compress=3)
    os.replace(tmp, path)
    return Path(path)


def load_bundle(path, *, option="--model"):
    """Load a model bundle written by ``skrnafm fit``.

    NOTE: joblib files are pickles, which run code while loading. Load only
    model files you trust.
    """
    import joblib

    path = Path(path).expanduser()
    if not path.is_file():
        raise CLIError(f"{option} {str(path)!r} not found")
    try:
        bundle = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "unreadable"
        raise CLIError(
            f"{option} {str(path)!r} cannot be read as a skrnafm model "
            f"({type(exc).__name__}: {exc}); create one with 'skrnafm fit'"
        ) from exc
    if not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT:
        raise CLIError(
            f"{option} {str(path)!r} is not a skrnafm model bundle; create one with 'skrnafm fit'"
        )
    return bundle


def check_encoder(bundle, embeddings, *, source):
    """Raise when features come from another encoder than the model's."""
    expected_dim = bundle["embedding_dim"]
    expected_encoder = bundle["encoder"]
    found_dim = int(np.asarray(embeddings.features).shape[1])
    found_encoder = str(embeddings.encoder)
    if found_dim != expected_dim or found_encoder != expected_encoder:
        raise CLIError(
            f"features in {source!r} come from encoder {found_encoder!r} with dimension "
            f"{found_dim}, but the model was trained on encoder {expected_encoder!r} with "
            f"dimension {expected_dim}; featurize the slides again with "
            f"--encoder {expected_encoder}"
        )
