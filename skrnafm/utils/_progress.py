import logging

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def progress(iterable=None, *, verbose=0, desc=None, total=None, unit="it", leave=None):
    """Wrap ``iterable`` in a tqdm progress bar that is silent when ``verbose=0``.

    Parameters
    ----------
    iterable : iterable, default=None
        What to iterate over. When None, use the returned bar's ``update``.
    verbose : int, default=0
        Verbosity of the caller. The bar is shown when ``verbose >= 1``.
    desc : str, default=None
        Label printed before the bar.
    total : int, default=None
        Expected number of items, when ``iterable`` has no length.
    unit : str, default="it"
        Name of one item, for example ``"slide"`` or ``"tile"``.
    leave : bool, default=None
        Whether the bar stays on screen after it closes; by default only
        top-level bars (``verbose >= 2`` keeps nested bars too) stay.

    Returns
    -------
    bar : tqdm.tqdm
        Iterate over it as over ``iterable``.
    """
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        disable=not verbose,
        leave=leave,
        dynamic_ncols=True,
    )
