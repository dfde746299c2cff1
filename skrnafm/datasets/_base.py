"""Where skrnafm looks for its data, and the error raised when files are missing."""

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DATA_HOME_ENV = "SKRNAFM_DATA"
DEFAULT_DATA_HOME = "~/skrnafm_data"


def get_data_home(data_home=None):
    """Return the folder that contains the skrnafm datasets.

    The folder is chosen in this order: the ``data_home`` argument, the
    ``SKRNAFM_DATA`` environment variable, then ``~/skrnafm_data``. Each
    dataset lives in its own subfolder (``her2st/``, ``tcga/``,
    ``pathways/``). The folder is not created and need not exist.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder to use. ``None`` falls back to ``SKRNAFM_DATA``, then to
        ``~/skrnafm_data``.

    Returns
    -------
    data_home : pathlib.Path
        Absolute path of the data folder, with ``~`` expanded.

    Examples
    --------
    >>> from skrnafm.datasets import get_data_home
    >>> str(get_data_home("/data/skrnafm"))
    '/data/skrnafm'
    """
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV) or DEFAULT_DATA_HOME
    return Path(data_home).expanduser().resolve()


def _data_home_source(data_home):
    if data_home is not None:
        return "the data_home argument"
    if os.environ.get(DATA_HOME_ENV):
        return f"the {DATA_HOME_ENV} environment variable"
    return f"the default {DEFAULT_DATA_HOME} ({DATA_HOME_ENV} is not set)"


def _missing_files_error(dataset, folder, missing, data_home, reason):
    """Build the error for dataset files that are not on disk.

    The message lists the files, the folder searched and how that folder
    was chosen, so the user can point skrnafm at an existing copy.
    """
    shown = ", ".join(sorted(missing)[:12])
    if len(missing) > 12:
        shown += f", ... ({len(missing)} files in all)"
    return FileNotFoundError(
        f"{dataset} data not found: missing {shown} in {folder} (the folder "
        f"was chosen by {_data_home_source(data_home)}). {reason} Pass "
        f"data_home=<folder that contains {Path(folder).name}/> or set "
        f"{DATA_HOME_ENV} to that folder."
    )
