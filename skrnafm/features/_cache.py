"""On-disk cache of tile embeddings: one ``.npz`` file per slide.

A file's name carries a key computed from the slide's content identity and
every parameter that changes its features, and the key is stored inside the
file as well. A file whose stored key, arrays or shapes do not match is
treated as missing and recomputed, so an interrupted run, a run with other
parameters or a truncated file never yields wrong features.
"""

import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# Bump when the file layout or the meaning of the features changes.
CACHE_FORMAT = 1

# Bytes hashed at each end of a slide file. Hashing whole multi-gigabyte
# slides would cost more than featurizing them. Size plus both ends
# distinguishes slides in practice, because headers carry scan dates and
# tile data differs from the first tile on.
_CHUNK = 1 << 20


def file_fingerprint(path):
    """Return a digest of a file's size and its first and last MiB.

    NOTE: formats that spread one slide over several files (MIRAX ``.mrxs``
    with its data folder) are fingerprinted by the named file only.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_CHUNK))
        if size > _CHUNK:
            handle.seek(max(size - _CHUNK, _CHUNK))
            digest.update(handle.read(_CHUNK))
    return digest.hexdigest()


def make_cache_key(identity):
    """Return a hex key for a JSON-serialisable ``identity`` dict."""
    text = json.dumps({"format": CACHE_FORMAT, **identity}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def cache_path(cache_dir, slide_name, key):
    """Return the cache file for one slide: ``<stem>-<key prefix>.npz``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(slide_name))[:80] or "slide"
    return Path(cache_dir) / f"{stem}-{key[:20]}.npz"


def write_cache(path, key, features, coords, meta):
    """Write one slide's arrays atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"key": key, "format": CACHE_FORMAT, **meta}, default=str)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(
                handle,
                features=np.asarray(features, dtype=np.float32),
                coords=np.asarray(coords, dtype=np.int64),
                meta=np.asarray(header),
            )
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def read_cache(path, key, *, embedding_dim=None):
    """Return ``(features, coords, meta)`` from a valid cache file, else None.

    A missing file returns None silently. A file that cannot be read, has
    another key, or contains inconsistent arrays returns None with a
    logged warning, and the caller recomputes and overwrites it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            features = data["features"]
            coords = data["coords"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        logger.warning("Ignoring unreadable cache file %s (%s); recomputing.", path, exc)
        return None

    problem = None
    if meta.get("key") != key:
        problem = "it was written for other parameters or another slide"
    elif features.ndim != 2 or coords.shape != (features.shape[0], 2):
        problem = f"features {features.shape} and coords {coords.shape} do not match"
    elif embedding_dim is not None and features.shape[1] != embedding_dim:
        problem = f"embedding length {features.shape[1]} is not {embedding_dim}"
    elif not np.isfinite(features).all():
        problem = "features contain NaN or infinite values"
    if problem is not None:
        logger.warning("Ignoring cache file %s because %s; recomputing.", path, problem)
        return None
    return features.astype(np.float32, copy=False), coords.astype(np.int64, copy=False), meta
