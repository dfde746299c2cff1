"""Background tile reading, so that reading overlaps encoder inference."""

import dataclasses
import logging
import queue
import threading

import numpy as np
import torch

from ..exceptions import SlideError
from ..slide import iter_tile_batches

logger = logging.getLogger(__name__)

_DONE = object()
# Seconds between checks of the stop flag while a reader waits on a full queue.
_POLL = 0.1


def _worker_grid(grid, worker, n_workers, batch_size):
    """Return the sub-grid with batches ``worker, worker + n_workers, ...``."""
    n_batches = -(-grid.n_tiles // batch_size)
    parts = [
        grid.coords[start * batch_size : (start + 1) * batch_size]
        for start in range(worker, n_batches, n_workers)
    ]
    coords = np.concatenate(parts) if parts else grid.coords[:0]
    return dataclasses.replace(grid, coords=coords)


def _put(out, item, stop):
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL)
            return True
        except queue.Full:
            continue
    return False


def _read_worker(slide, grid, batch_size, transform, out, stop):
    # The thread count is per thread: the reader's torch ops (resizing in
    # the encoder transform) stay on one core, so they do not compete with
    # the encoder's OpenMP team, which stalls badly when cores are
    # oversubscribed.
    torch.set_num_threads(1)
    try:
        if grid.n_tiles:
            for tiles, coords in iter_tile_batches(slide, grid, batch_size=batch_size):
                if stop.is_set():
                    return
                if not _put(out, (transform(tiles), coords), stop):
                    return
    except SlideError as exc:
        # Every tile of this worker's share failed. The slide only fails
        # when no worker produced a tile, which the consumer checks.
        logger.debug("Loader share of %s unreadable: %s", slide.path, exc)
    except BaseException as exc:
        _put(out, exc, stop)
        return
    _put(out, _DONE, stop)


def iter_prepared_batches(slide, grid, *, batch_size, transform, num_workers=1, prefetch=2):
    """Yield ``(batch, coords)`` with tiles read and transformed in threads.

    Parameters
    ----------
    slide : BaseSlide
    grid : TileGrid
    batch_size : int
    transform : callable
        Maps uint8 tiles of shape (n, h, w, 3) to the encoder's input batch.
    num_workers : int, default=1
        Reader threads. 0 reads in the calling thread (no overlap). With
        several threads, thread w reads batches w, w + num_workers, ...,
        and batches come out in grid order.
    prefetch : int, default=2
        Batches each thread may read ahead; bounds memory to about
        ``num_workers * prefetch`` batches.

    Yields
    ------
    batch : object
        ``transform(tiles)``.
    coords : ndarray of shape (n, 2), dtype int64
    """
    if num_workers == 0:
        for tiles, coords in iter_tile_batches(slide, grid, batch_size=batch_size):
            yield transform(tiles), coords
        return

    n_workers = max(1, min(num_workers, -(-grid.n_tiles // batch_size)))
    stop = threading.Event()
    queues = [queue.Queue(maxsize=max(1, prefetch)) for _ in range(n_workers)]
    threads = [
        threading.Thread(
            target=_read_worker,
            args=(slide, _worker_grid(grid, w, n_workers, batch_size), batch_size, transform, queues[w], stop),
            name=f"skrnafm-tile-reader-{w}",
            daemon=True,
        )
        for w in range(n_workers)
    ]
    for thread in threads:
        thread.start()

    try:
        active = list(range(n_workers))
        while active:
            for w in list(active):
                item = queues[w].get()
                if item is _DONE:
                    active.remove(w)
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
