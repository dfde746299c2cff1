"""WSIFeaturizer: slide files -> per-slide tile embeddings."""

import contextlib
import logging
import os
import threading
import time
import warnings
from numbers import Integral, Real
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from ..exceptions import SlideError, SlideReadWarning
from ..slide import SlideRegion, open_slide, tile_slide
from ..utils import progress, resolve_device
from ._cache import cache_path, file_fingerprint, make_cache_key, read_cache, write_cache
from ._embeddings import TileEmbeddings
from ._encoders import DEFAULT_ENCODER, TileEncoder, get_encoder
from ._loader import iter_prepared_batches

logger = logging.getLogger(__name__)

_PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Per-process memo of the encoder built from a string spec, so repeated
# transform calls (cross-validation folds, Dask tasks on one worker) load
# the weights once.
_ENCODER_MEMO = {}
_ENCODER_MEMO_LOCK = threading.Lock()


def _is_on(tensor, device):
    """Return True when ``tensor`` lives on ``device`` ("cuda" matches any index)."""
    if tensor.device.type != device.type:
        return False
    return device.index is None or tensor.device.index == device.index


def _prepare_encoder(spec, device):
    """Return the encoder for ``spec`` in eval mode on ``device``.

    Chunks running in threads of one process share the encoder, so the
    build and the in-place moves run under a lock. Moving the parameters
    while another thread ran its first forward pass gave NaN features,
    seen with two Dask worker threads.
    """
    with _ENCODER_MEMO_LOCK:
        if isinstance(spec, str):
            if spec not in _ENCODER_MEMO:
                _ENCODER_MEMO.clear()
                _ENCODER_MEMO[spec] = get_encoder(spec)
            encoder = _ENCODER_MEMO[spec]
        else:
            encoder = get_encoder(spec)
        encoder.eval()
        # Move only when needed: a no-op move still rewrites every parameter.
        tensors = list(encoder.parameters()) + list(encoder.buffers())
        if not all(_is_on(tensor, device) for tensor in tensors):
            encoder.to(device)
        channels_last = device.type in ("cpu", "cuda")
        if channels_last and not all(
            tensor.is_contiguous(memory_format=torch.channels_last)
            for tensor in tensors
            if tensor.ndim == 4
        ):
            encoder.to(memory_format=torch.channels_last)
    return encoder


def _bf16_supported(device):
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(check()) if check is not None else False
    return False


def resolve_precision(precision, encoder, device):
    """Return the autocast dtype for ``precision``, or None for plain fp32.

    ``"auto"`` uses the encoder's ``preferred_dtype`` when the device runs
    it natively (bf16 on CPUs with AVX512-BF16/AMX and on recent GPUs,
    fp16 on GPUs) and fp32 otherwise.
    """
    if precision == "auto":
        dtype = encoder.preferred_dtype
        if dtype == torch.bfloat16 and not _bf16_supported(device):
            dtype = torch.float32
        if dtype == torch.float16 and device.type != "cuda":
            dtype = torch.float32
    else:
        dtype = _PRECISIONS[precision]
    return None if dtype == torch.float32 else dtype


def _slide_label(source):
    if isinstance(source, SlideRegion):
        return source.name
    return os.fspath(source)


def _slide_identity(source, mpp):
    """Return what identifies a slide's pixels: file content, region, resolution."""
    if isinstance(source, SlideRegion):
        return {
            "file": file_fingerprint(source.path),
            "bbox": list(source.bbox),
            "mpp": source.mpp if source.mpp is not None else mpp,
        }
    return {"file": file_fingerprint(source), "bbox": None, "mpp": mpp}


class _SlideJob:
    """Settings shared by every slide of one transform call (picklable)."""

    def __init__(self, featurizer, encoder_spec):
        self.encoder_spec = encoder_spec
        self.target_mpp = featurizer.target_mpp
        self.tile_size = featurizer.tile_size
        self.max_tiles = featurizer.max_tiles
        self.min_tissue_fraction = featurizer.min_tissue_fraction
        self.batch_size = featurizer.batch_size
        self.mpp = featurizer.mpp
        self.device = featurizer.device
        self.precision = featurizer.precision
        self.num_workers = featurizer.num_workers
        self.random_state = featurizer.random_state
        self.on_error = featurizer.on_error
        self.cache_dir = featurizer.cache_dir
        self.verbose = featurizer.verbose

    def prepare(self):
        """Build the encoder on the device; return (encoder, device, autocast dtype)."""
        device = resolve_device(self.device)
        encoder = _prepare_encoder(self.encoder_spec, device)
        dtype = resolve_precision(self.precision, encoder, device)
        return encoder, device, dtype

    def cache_key(self, source, encoder, dtype):
        """Return the cache key of one slide, or None when caching is off."""
        if self.cache_dir is None or not isinstance(self.random_state, Integral):
            return None
        identity = {
            "slide": _slide_identity(source, self.mpp),
            "encoder": encoder.fingerprint(),
            "precision": str(dtype or torch.float32),
            "target_mpp": float(self.target_mpp),
            "tile_size": int(self.tile_size),
            "max_tiles": self.max_tiles,
            "min_tissue_fraction": float(self.min_tissue_fraction),
            "random_state": int(self.random_state),
        }
        return make_cache_key(identity)

    def run(self, source, encoder, device, dtype):
        """Featurize one slide, applying the cache and the ``on_error`` policy."""
        label = _slide_label(source)
        key = None
        path = None
        if self.cache_dir is not None:
            try:
                key = self.cache_key(source, encoder, dtype)
            except OSError:
                key = None  # An unreadable file fails below with a clear error.
            if key is not None:
                stem = source.name if isinstance(source, SlideRegion) else Path(source).stem
                path = cache_path(self.cache_dir, stem, key)
                cached = read_cache(path, key, embedding_dim=encoder.output_dim)
                if cached is not None:
                    features, coords, meta = cached
                    logger.debug("Read %d tiles of %s from %s", len(features), label, path)
                    return self._embeddings(label, encoder, features, coords, meta, from_cache=True)

        try:
            features, coords, meta = self._encode_slide(source, encoder, device, dtype)
        except (SlideError, OSError) as exc:
            if self.on_error == "raise":
                raise
            # The warning for on_error="warn" is emitted by transform in the
            # parent process, because joblib workers do not forward warnings.
            message = f"{type(exc).__name__}: {exc}"
            log = logger.info if self.on_error == "warn" else logger.warning
            log("Slide %s failed and gets zero tiles: %s", label, message)
            empty = np.zeros((0, encoder.output_dim), dtype=np.float32)
            return TileEmbeddings(
                features=empty,
                coords=np.zeros((0, 2), dtype=np.int64),
                slide=label,
                encoder=encoder.name,
                tile_size=int(self.tile_size),
                target_mpp=float(self.target_mpp),
                error=message,
            )

        if path is not None:
            try:
                write_cache(path, key, features, coords, meta)
            except OSError as exc:
                # A full or read-only cache directory costs reruns, not results.
                logger.warning("Could not write cache file %s for %s: %s", path, label, exc)
        return self._embeddings(label, encoder, features, coords, meta, from_cache=False)

    def _embeddings(self, label, encoder, features, coords, meta, *, from_cache):
        return TileEmbeddings(
            features=features,
            coords=coords,
            slide=label,
            encoder=encoder.name,
            mpp=meta.get("mpp"),
            tile_size=int(self.tile_size),
            target_mpp=float(self.target_mpp),
            metadata={**meta, "from_cache": from_cache},
        )

    def _encode_slide(self, source, encoder, device, dtype):
        start = time.perf_counter()
        with open_slide(source, mpp=self.mpp) as slide:
            grid = tile_slide(
                slide,
                target_mpp=self.target_mpp,
                tile_size=self.tile_size,
                min_tissue_fraction=self.min_tissue_fraction,
                max_tiles=self.max_tiles,
                random_state=self.random_state,
            )
            meta = {
                "mpp": float(slide.mpp),
                "mpp_source": slide.mpp_source,
                "level": int(grid.level),
                "read_size": int(grid.read_size),
            }
            batches = iter_prepared_batches(
                slide,
                grid,
                batch_size=self.batch_size,
                transform=encoder.transform,
                num_workers=self.num_workers,
            )
            features, coords, encoder_seconds = _encode_batches(
                batches, encoder, device, dtype, total=grid.n_tiles, verbose=self.verbose, label=slide.name
            )

        if features.shape[0] == 0:
            raise SlideError(
                f"No tile of slide {_slide_label(source)!r} could be read "
                f"({grid.n_tiles} tissue tiles were found)."
            )
        if not np.isfinite(features).all():
            raise FloatingPointError(
                f"The encoder {encoder.name!r} returned NaN or infinite embeddings for slide "
                f"{_slide_label(source)!r}; try precision='fp32'."
            )
        meta["seconds"] = time.perf_counter() - start
        meta["encoder_seconds"] = encoder_seconds
        return features, coords, meta


def _encode_batches(batches, encoder, device, dtype, *, total, verbose, label):
    """Run the encoder over prepared batches; return features, coords and encoder time."""
    features = []
    coords = []
    encoder_seconds = 0.0
    autocast = (
        torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    )
    bar = progress(total=total, verbose=verbose, desc=label, unit="tile", leave=verbose >= 2)
    try:
        with torch.inference_mode(), autocast:
            for batch, batch_coords in batches:
                tick = time.perf_counter()
                batch = batch.to(device, non_blocking=True)
                if batch.ndim == 4 and device.type in ("cpu", "cuda"):
                    batch = batch.contiguous(memory_format=torch.channels_last)
                out = encoder(batch)
                features.append(out.float().cpu().numpy())
                encoder_seconds += time.perf_counter() - tick
                coords.append(batch_coords)
                bar.update(len(batch_coords))
    finally:
        bar.close()

    if not features:
        return np.zeros((0, encoder.output_dim), dtype=np.float32), np.zeros((0, 2), np.int64), 0.0
    return (
        np.concatenate(features).astype(np.float32, copy=False),
        np.concatenate(coords).astype(np.int64, copy=False),
        encoder_seconds,
    )


def _run_chunk(job, sources, positions, n_chunks):
    """Featurize several slides with one encoder; runs in a joblib worker."""
    # torch's thread count is per thread, and several chunks may share one
    # machine, so each takes its share of the worker machine's cores.
    # NOTE: on a multi-machine Dask cluster n_jobs counts the threads of all
    # machines, so a chunk may get fewer threads than its machine could give.
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_chunks))
    try:
        encoder, device, dtype = job.prepare()
        return [
            (position, job.run(source, encoder, device, dtype))
            for position, source in zip(positions, sources)
        ]
    finally:
        torch.set_num_threads(previous)


class WSIFeaturizer(TransformerMixin, BaseEstimator):
    """Turn whole-slide images into per-slide tile embeddings.

    For each slide: find tissue, lay a grid of ``tile_size`` px tiles at
    ``target_mpp`` µm/px (at most ``max_tiles``, drawn with
    ``random_state``), read the tiles in background threads and encode them
    with a tile encoder. ``fit`` learns nothing; ``transform`` returns one
    :class:`TileEmbeddings` per input slide, in input order. Chain it with
    :class:`SuperTilePooler` to get 2-D features for a regressor.

    Parameters
    ----------
    encoder : str, TileEncoder or torch.nn.Module, default="efficientnet_lite0"
        Tile encoder; see :func:`get_encoder`. The default is
        EfficientNet-Lite0 with ImageNet weights (1,280-d), which works
        offline. For a pathology foundation model pass
        ``TimmEncoder(model_name, weights=path)``. An encoder object is
        moved to ``device`` and to channels-last memory format in place.
    target_mpp : float, default=0.5
        Micrometres per pixel of the encoded tiles (0.5 is about 20x).
    tile_size : int, default=256
        Tile side in pixels at ``target_mpp``. The encoder's transform
        resizes tiles to its own input size.
    max_tiles : int or None, default=4000
        Largest number of tiles per slide; None keeps all.
    min_tissue_fraction : float, default=0.2
        Smallest tissue fraction of a kept tile.
    batch_size : int, default=64
        Tiles per encoder batch.
    mpp : float, default=None
        Micrometres per level-0 pixel for slides whose files record none.
        Without it such slides fail with ``MissingResolutionError``; the
        resolution is never guessed.
    device : str, default="auto"
        Torch device; ``"auto"`` picks CUDA, then MPS, then the CPU.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Autocast precision of the encoder. ``"auto"`` uses the encoder's
        preferred precision where the device runs it natively (bf16 on
        CPUs with AVX512-BF16 or AMX) and fp32 elsewhere.
    n_jobs : int, default=1
        Parallel slide workers through joblib. The slides are split into
        ``n_jobs`` contiguous chunks and each worker loads the encoder
        once. Under ``joblib.parallel_config(backend="dask")`` the chunks
        run on a Dask cluster. Each chunk runs torch on
        ``cpu_count // n_jobs`` threads of the machine it runs on.
    num_workers : int, default=1
        Tile reader threads per slide; 0 reads in the encoding thread.
        One thread keeps a CPU encoder busy; more help with fast GPUs.
    random_state : int, RandomState instance or None, default=0
        Seed of the draw that enforces ``max_tiles``. Only an int seed
        allows caching, because the other two do not fix the tiles.
    on_error : {"raise", "warn", "skip"}, default="raise"
        What to do when a slide cannot be read, has no tissue or no
        resolution (a :class:`~skrnafm.exceptions.SlideError` or an
        ``OSError``). ``"raise"`` stops. ``"warn"`` and ``"skip"`` put a
        :class:`TileEmbeddings` with zero tiles and the message in its
        ``error`` field at the slide's position, so outputs stay aligned
        with the input and its targets. ``"warn"`` also emits a
        :class:`~skrnafm.exceptions.SlideReadWarning` naming the slide,
        while ``"skip"`` only logs. :class:`SuperTilePooler` raises on such an
        entry unless ``on_empty="nan"``; :func:`failed_slides` lists them.
    cache_dir : str or path-like, default=None
        Directory of the embedding cache: one ``.npz`` file per slide,
        keyed by the slide file's content, the region, the resolution
        override, the encoder's weights and every parameter above that
        changes the features. Later calls, cross-validation folds and
        interrupted runs read finished slides from it. None disables it.
    verbose : int, default=0
        1 shows progress bars over slides and tiles; 2 keeps the tile bars.

    See Also
    --------
    SuperTilePooler : pools the embeddings into (n_slides, K * D) features.

    Notes
    -----
    Input: a list (or 1-D array, or pandas Series) of slide paths and
    :class:`~skrnafm.slide.SlideRegion` objects.

    Examples
    --------
    >>> featurizer = WSIFeaturizer(cache_dir="embeddings")
    >>> embeddings = featurizer.fit_transform(["slide.svs"])  # doctest: +SKIP
    >>> embeddings[0].features.shape  # doctest: +SKIP
    (51, 1280)
    """

    _parameter_constraints = {
        "encoder": [str, TileEncoder, torch.nn.Module],
        "target_mpp": [Interval(Real, 0, None, closed="neither")],
        "tile_size": [Interval(Integral, 8, None, closed="left")],
        "max_tiles": [Interval(Integral, 1, None, closed="left"), None],
        "min_tissue_fraction": [Interval(Real, 0, 1, closed="both")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "mpp": [Interval(Real, 0, None, closed="neither"), None],
        "device": [str, torch.device],
        "precision": [StrOptions({"auto", "fp32", "bf16", "fp16"})],
        "n_jobs": [Integral, None],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
        "on_error": [StrOptions({"raise", "warn", "skip"})],
        "cache_dir": [str, os.PathLike, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        encoder=DEFAULT_ENCODER,
        *,
        target_mpp=0.5,
        tile_size=256,
        max_tiles=4000,
        min_tissue_fraction=0.2,
        batch_size=64,
        mpp=None,
        device="auto",
        precision="auto",
        n_jobs=1,
        num_workers=1,
        random_state=0,
        on_error="raise",
        cache_dir=None,
        verbose=0,
    ):
        self.encoder = encoder
        self.target_mpp = target_mpp
        self.tile_size = tile_size
        self.max_tiles = max_tiles
        self.min_tissue_fraction = min_tissue_fraction
        self.batch_size = batch_size
        self.mpp = mpp
        self.device = device
        self.precision = precision
        self.n_jobs = n_jobs
        self.num_workers = num_workers
        self.random_state = random_state
        self.on_error = on_error
        self.cache_dir = cache_dir
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the slide list; nothing is learned.

        Parameters
        ----------
        X : list of str, path-like or SlideRegion
            Slides.
        y : None
            Ignored.

        Returns
        -------
        self : WSIFeaturizer
        """
        _check_slides(X)
        return self

    def transform(self, X):
        """Encode the tiles of every slide.

        Parameters
        ----------
        X : list of str, path-like or SlideRegion
            Slides, in the order of their targets.

        Returns
        -------
        embeddings : list of TileEmbeddings
            One per slide, in input order. Under ``on_error="warn"`` or
            ``"skip"`` a failed slide keeps its position with zero tiles
            and its ``error`` set.
        """
        self._validate_params()
        sources = _check_slides(X)
        job = _SlideJob(self, self.encoder)
        n_jobs = min(joblib.effective_n_jobs(self.n_jobs), len(sources))

        if n_jobs <= 1:
            encoder, device, dtype = job.prepare()
            bar = progress(sources, verbose=self.verbose, desc="slides", unit="slide")
            output = [job.run(source, encoder, device, dtype) for source in bar]
        else:
            output = self._transform_parallel(job, sources, n_jobs)

        if self.on_error == "warn":
            for index, item in enumerate(output):
                if item.failed:
                    warnings.warn(
                        f"Slide {index} ({item.slide!r}) failed and has zero tiles in the "
                        f"output: {item.error}",
                        SlideReadWarning,
                        stacklevel=2,
                    )
        return output

    def _transform_parallel(self, job, sources, n_jobs):
        # NOTE: process-based backends (loky, Dask) do not forward warnings
        # raised inside workers, such as the reader's warning about single
        # unreadable tiles. Failed slides are still warned about by transform.
        chunks = np.array_split(np.arange(len(sources)), n_jobs)
        logger.info("Featurizing %d slides in %d parallel chunks", len(sources), len(chunks))
        results = joblib.Parallel(n_jobs=n_jobs, verbose=max(0, self.verbose - 1))(
            joblib.delayed(_run_chunk)(job, [sources[i] for i in chunk], chunk.tolist(), n_jobs)
            for chunk in chunks
            if len(chunk)
        )
        output = [None] * len(sources)
        for chunk_result in results:
            for position, embeddings in chunk_result:
                output[position] = embeddings
        return output

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        tags.non_deterministic = self.random_state is None
        return tags


def _check_slides(X):
    """Return the slides of X as a list, or raise for an invalid X."""
    if isinstance(X, (str, bytes, os.PathLike, SlideRegion)):
        raise ValueError(
            f"X must be a list of slides, got a single {type(X).__name__} {X!r}; wrap it "
            "in a list: [slide]."
        )
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.ndim != 1:
            raise ValueError(
                f"X must be a 1-D list of slide paths; got an array of shape {X.shape}."
            )
        X = X.tolist()
    try:
        sources = list(X)
    except TypeError as exc:
        raise ValueError(f"X must be a list of slide paths, got {type(X).__name__}.") from exc
    if not sources:
        raise ValueError("X is an empty list of slides; pass at least one slide path.")
    for index, source in enumerate(sources):
        if not isinstance(source, (str, os.PathLike, SlideRegion)):
            raise ValueError(
                f"X[{index}] must be a slide path or SlideRegion, got "
                f"{type(source).__name__} {source!r}."
            )
    return sources
