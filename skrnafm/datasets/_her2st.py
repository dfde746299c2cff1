"""HER2-positive breast cancer spatial transcriptomics (HER2ST) and pseudo-bulk samples.

The HER2ST sections (Andersson et al., Nature Communications 12, 2021) were
measured on the Spatial Transcriptomics platform: spots of 100 um diameter
on a 200 um grid. Each section comes as three files in ``<data_home>/her2st``:
``<S>.jpg`` (H&E image), ``<S>.tsv.gz`` (spot x gene raw counts, first column
the spot id ``<x>x<y>``) and ``<S>_selection.tsv`` (array ``x``, ``y``, the
spot centre ``pixel_x``, ``pixel_y`` in image pixels, and ``selected``).
"""

import logging
import math
import warnings

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ._base import _missing_files_error, get_data_home

logger = logging.getLogger(__name__)

HER2ST_SECTIONS = ("B4", "C2", "C3", "C4", "C5")
HER2ST_PATIENTS = {"B4": "B", "C2": "C", "C3": "C", "C4": "C", "C5": "C"}
HER2ST_HOME = "https://github.com/almaan/her2st (data on Zenodo, doi:10.5281/zenodo.4751624)"

# Centre-to-centre distance of neighbouring spots on the ST array.
SPOT_SPACING_UM = 200.0

_DESCR = """HER2ST spatial transcriptomics (Andersson et al., Nature Communications 12, 2021).

HER2-positive breast tumours on the Spatial Transcriptomics platform: spots
of 100 um on a 200 um grid, raw counts per spot, and the H&E image of each
section with every spot's centre in image pixels. Sections C2-C5 come from
patient C and B4 from patient B (lower counts, about 650 per spot).
Micrometres per pixel are estimated from the 200 um spot spacing, as the
images carry no resolution metadata. Licence not verified: use the data
for research and tests, and do not redistribute it.
"""


def _section_files(section):
    return (f"{section}.jpg", f"{section}.tsv.gz", f"{section}_selection.tsv")


def _check_sections(sections):
    if sections is None:
        return list(HER2ST_SECTIONS)
    if isinstance(sections, str):
        sections = [sections]
    sections = list(sections)
    unknown = [s for s in sections if s not in HER2ST_SECTIONS]
    if unknown or not sections:
        raise ValueError(
            f"sections must be a non-empty subset of {HER2ST_SECTIONS}, got {sections!r}."
        )
    if len(set(sections)) != len(sections):
        raise ValueError(f"sections must not repeat a section, got {sections!r}.")
    return sections


def estimate_spot_pitch(spots):
    """Estimate the distance in image pixels between neighbouring spots.

    Takes every pair of spots one step apart on the array grid (same ``y``
    and ``x`` differing by 1, or the reverse) and returns the median pixel
    distance between their centres. The median ignores the few spots whose
    centres were placed off the grid.

    Parameters
    ----------
    spots : DataFrame
        Spot table with integer array columns ``x``, ``y`` and the centre
        ``pixel_x``, ``pixel_y``.

    Returns
    -------
    pitch : float
        Median centre-to-centre distance in pixels.

    Raises
    ------
    ValueError
        If no two spots are neighbours on the grid.
    """
    position = {(int(x), int(y)): i for i, (x, y) in enumerate(zip(spots["x"], spots["y"]))}
    pixels = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=float)

    distances = []
    for (x, y), i in position.items():
        for neighbour in ((x + 1, y), (x, y + 1)):
            j = position.get(neighbour)
            if j is not None:
                distances.append(np.hypot(*(pixels[i] - pixels[j])))
    if not distances:
        raise ValueError("cannot estimate the spot pitch: no two spots are grid neighbours.")
    return float(np.median(distances))


def _read_section(folder, section):
    image_path = folder / f"{section}.jpg"
    counts = pd.read_csv(folder / f"{section}.tsv.gz", sep="\t", index_col=0)
    counts.index = counts.index.astype(str)
    counts.index.name = "spot"
    counts = counts.astype(np.int32)
    if not counts.columns.is_unique:
        # Keep the first column of a repeated gene symbol so that gene
        # matching across sections stays one-to-one.
        n_repeated = int(counts.columns.duplicated().sum())
        logger.info("%s: dropping %d repeated gene columns", section, n_repeated)
        counts = counts.loc[:, ~counts.columns.duplicated()]

    selection = pd.read_csv(folder / f"{section}_selection.tsv", sep="\t")
    missing_columns = {"x", "y", "pixel_x", "pixel_y"} - set(selection.columns)
    if missing_columns:
        raise ValueError(
            f"{folder / f'{section}_selection.tsv'} lacks the columns "
            f"{sorted(missing_columns)!r}; expected x, y, pixel_x, pixel_y and selected."
        )
    selection.index = pd.Index(
        selection["x"].astype(int).astype(str) + "x" + selection["y"].astype(int).astype(str),
        name="spot",
    )
    if "selected" not in selection.columns:
        selection["selected"] = 1

    # Spots under tissue without counts, or counts without a centre, have
    # no usable pair; keep the spots present in both files.
    shared = counts.index.intersection(selection.index, sort=False)
    n_dropped = len(counts) + len(selection) - 2 * len(shared)
    if n_dropped:
        logger.info("%s: %d spots appear in only one of counts and spot table", section, n_dropped)
    counts = counts.loc[shared]
    spots = selection.loc[shared].copy()

    pitch = estimate_spot_pitch(spots)
    return Bunch(
        name=section,
        patient=HER2ST_PATIENTS[section],
        image_path=str(image_path),
        counts=counts,
        spots=spots,
        spot_pitch_px=pitch,
        mpp=SPOT_SPACING_UM / pitch,
    )


def fetch_her2st(*, data_home=None, download_if_missing=True, sections=None):
    """Load the HER2ST spatial transcriptomics sections (images, counts, spots).

    Reads ``<data_home>/her2st/<S>.jpg``, ``<S>.tsv.gz`` and
    ``<S>_selection.tsv`` for each section ``S``. Only spots present in both
    the count file and the spot table are kept, in count-file order.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Data folder; see :func:`get_data_home`. The files are expected in its
        ``her2st/`` subfolder.
    download_if_missing : bool, default=True
        Only changes the advice in the error when files are missing,
        because automatic download is not implemented yet.
    sections : list of str, default=None
        Sections to load, a subset of ``("B4", "C2", "C3", "C4", "C5")``.
        ``None`` loads all five.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        ``sections`` is a dict from section name to a Bunch. Its keys are ``name``,
        ``patient`` ("B" for B4, "C" for C2-C5), ``image_path`` (str),
        ``counts`` (int32 DataFrame of shape (n_spots, n_genes) indexed by
        spot id ``<x>x<y>``, columns are gene symbols), ``spots``
        (DataFrame indexed like ``counts`` with array ``x``, ``y``, pixel
        centre ``pixel_x``, ``pixel_y`` and ``selected``), ``spot_pitch_px``
        (median neighbour distance in pixels, see
        :func:`estimate_spot_pitch`) and ``mpp`` (200 um divided by that
        pitch, about 0.69 um per pixel). Also ``section_names`` (list),
        ``data_dir`` (str) and ``DESCR``.

    Raises
    ------
    FileNotFoundError
        If a section's files are missing. The message lists them, the
        folder searched and how to point at an existing copy.
    ValueError
        If ``sections`` names an unknown section.

    Examples
    --------
    >>> from skrnafm.datasets import fetch_her2st
    >>> her2st = fetch_her2st(sections=["C2"])  # doctest: +SKIP
    >>> her2st.sections["C2"].counts.shape  # doctest: +SKIP
    (187, 15706)
    """
    sections = _check_sections(sections)
    folder = get_data_home(data_home) / "her2st"

    missing = [name for s in sections for name in _section_files(s) if not (folder / name).is_file()]
    if missing:
        if download_if_missing:
            # NOTE: no download is attempted, because the file layout of the
            # public release was not checked against the one read here.
            reason = (
                f"Automatic download is not implemented; get the files from "
                f"{HER2ST_HOME} and place them as <section>.jpg, "
                "<section>.tsv.gz and <section>_selection.tsv."
            )
        else:
            reason = "download_if_missing=False, so nothing was downloaded."
        raise _missing_files_error("HER2ST", folder, missing, data_home, reason)

    loaded = {}
    for section in sections:
        loaded[section] = _read_section(folder, section)
        logger.info(
            "loaded HER2ST %s: %d spots x %d genes, %.3f um/px",
            section,
            *loaded[section].counts.shape,
            loaded[section].mpp,
        )
    return Bunch(sections=loaded, section_names=sections, data_dir=str(folder), DESCR=_DESCR)


def make_her2st_pseudobulk(
    data=None,
    *,
    block_size=3,
    min_spots=None,
    min_counts=100,
    data_home=None,
    sections=None,
):
    """Build pseudo-bulk samples from blocks of neighbouring HER2ST spots.

    The array grid of each section is cut into non-overlapping blocks of
    ``block_size`` x ``block_size`` spots, starting at the section's
    smallest array ``x`` and ``y``. Each block becomes one sample: its
    spots' raw counts are summed and normalised to log2(CPM + 1), and it is
    paired with the image region that covers its spots.

    Choices made here:

    * Low-count spots: spots with fewer than ``min_counts`` total counts
      (over all genes of their section) are left out before blocks are
      formed. A section left without spots is skipped with a warning in
      the log.
    * Partial blocks: blocks at the tissue edge hold fewer spots. A block
      is kept when at least ``min_spots`` of its spots remain, so every
      sample averages over a comparable area.
    * Gene panel: the genes measured in every used section, in
      alphabetical order. CPM is computed over this panel.
    * Image region: the bounding box of the block's spot centres, padded by
      half the spot spacing (100 um) on each side and clipped to the image,
      so regions of neighbouring blocks meet without gaps.

    Parameters
    ----------
    data : Bunch or None, default=None
        Output of :func:`fetch_her2st`. ``None`` loads it with
        ``data_home`` and ``sections``.
    block_size : int, default=3
        Block side in spots (3 spots are about 0.6 mm).
    min_spots : int, default=None
        Minimum number of kept spots per block. ``None`` means more than
        half a full block, ``block_size ** 2 // 2 + 1`` (5 for 3 x 3).
    min_counts : int, default=100
        Minimum total counts for a spot to be used.
    data_home : str or path-like, default=None
        Data folder, used only when ``data`` is None.
    sections : list of str, default=None
        Sections to use. ``None`` uses every section in ``data``.

    Returns
    -------
    pseudobulk : :class:`~sklearn.utils.Bunch`
        ``regions``: list of :class:`skrnafm.slide.SlideRegion`, one per
        sample, readable by :class:`skrnafm.features.WSIFeaturizer`.
        ``Y``: float32 DataFrame of shape (n_samples, n_genes), log2(CPM + 1)
        of the summed counts, indexed by sample name ``<section>_<bx>_<by>``.
        ``counts``: int64 DataFrame of the summed counts, same shape.
        ``groups``: ndarray of str of shape (n_samples,), the section of
        each sample (use it for leave-one-section-out CV). ``patients``:
        ndarray of str, the patient of each sample. ``sections``: the
        section names used. ``blocks``: int64 ndarray of shape
        (n_samples, 2), block column and row on the array grid. ``n_spots``:
        int64 ndarray, the spots summed into each sample. ``bboxes``: int64
        ndarray of shape (n_samples, 4), (x, y, width, height) in image
        pixels. ``mpp``: float ndarray, micrometres per pixel of each
        sample's image. ``gene_names``: ndarray of str.

    Raises
    ------
    ValueError
        If ``block_size``, ``min_spots`` or ``min_counts`` is invalid, or no
        block is left.

    Examples
    --------
    >>> from skrnafm.datasets import make_her2st_pseudobulk
    >>> bulk = make_her2st_pseudobulk(sections=["C2", "C3"])  # doctest: +SKIP
    >>> bulk.Y.shape[0] == len(bulk.regions)  # doctest: +SKIP
    True
    """
    from skrnafm.slide import SlideRegion

    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    block_size = int(block_size)
    if min_spots is None:
        min_spots = block_size**2 // 2 + 1
    if (
        isinstance(min_spots, bool)
        or not isinstance(min_spots, (int, np.integer))
        or not 1 <= min_spots <= block_size**2
    ):
        raise ValueError(
            f"min_spots must be an integer from 1 to block_size ** 2 = {block_size**2}, got {min_spots!r}."
        )
    if not isinstance(min_counts, (int, float, np.number)) or isinstance(min_counts, bool) or min_counts < 0:
        raise ValueError(f"min_counts must be a non-negative number, got {min_counts!r}.")

    if data is None:
        data = fetch_her2st(data_home=data_home, sections=sections)
        sections = data.section_names
    elif sections is None:
        sections = list(data.section_names)
    else:
        sections = _check_sections(sections)
        absent = [s for s in sections if s not in data.sections]
        if absent:
            raise ValueError(f"sections {absent!r} are not in data, which contains {list(data.sections)!r}.")

    panel = None
    for section in sections:
        genes = data.sections[section].counts.columns
        panel = genes if panel is None else panel.intersection(genes)
    panel = panel.sort_values()
    logger.info("HER2ST gene panel: %d genes shared by %s", len(panel), sections)

    names, regions, groups, patients, blocks, n_spots, bboxes, mpps = [], [], [], [], [], [], [], []
    summed = []
    for section in sections:
        part = data.sections[section]
        image_width, image_height = _image_size(part.image_path)

        totals = part.counts.sum(axis=1).to_numpy()
        keep = totals >= min_counts
        if not keep.all():
            logger.info("%s: %d spots below %s counts left out", section, int((~keep).sum()), min_counts)
        if not keep.any():
            logger.warning("%s: no spot has %s counts or more; section skipped", section, min_counts)
            continue
        spots = part.spots.loc[keep]
        counts = part.counts.loc[keep, panel].to_numpy(dtype=np.int64)

        x = spots["x"].to_numpy(dtype=int)
        y = spots["y"].to_numpy(dtype=int)
        block_x = (x - x.min()) // block_size
        block_y = (y - y.min()) // block_size
        pad = 0.5 * part.spot_pitch_px

        for bx, by in sorted(set(zip(block_x.tolist(), block_y.tolist())), key=lambda b: (b[1], b[0])):
            members = np.flatnonzero((block_x == bx) & (block_y == by))
            if len(members) < min_spots:
                continue
            centres = spots[["pixel_x", "pixel_y"]].to_numpy(dtype=float)[members]
            left = max(0, math.floor(centres[:, 0].min() - pad))
            top = max(0, math.floor(centres[:, 1].min() - pad))
            right = min(image_width, math.ceil(centres[:, 0].max() + pad))
            bottom = min(image_height, math.ceil(centres[:, 1].max() + pad))
            bbox = (left, top, right - left, bottom - top)

            name = f"{section}_{bx}_{by}"
            names.append(name)
            regions.append(SlideRegion(part.image_path, bbox=bbox, mpp=part.mpp, name=name))
            groups.append(section)
            patients.append(part.patient)
            blocks.append((bx, by))
            n_spots.append(len(members))
            bboxes.append(bbox)
            mpps.append(part.mpp)
            summed.append(counts[members].sum(axis=0))

    if not names:
        raise ValueError(
            f"no block has at least min_spots={min_spots} spots with min_counts={min_counts}; "
            "lower min_spots or min_counts."
        )

    counts = pd.DataFrame(np.vstack(summed), index=pd.Index(names, name="sample"), columns=panel)
    library_size = counts.sum(axis=1).to_numpy(dtype=float)[:, None]
    cpm = counts.to_numpy(dtype=float) / np.maximum(library_size, 1.0) * 1e6
    Y = pd.DataFrame(np.log2(cpm + 1.0).astype(np.float32), index=counts.index, columns=panel)

    return Bunch(
        regions=regions,
        Y=Y,
        counts=counts,
        groups=np.asarray(groups),
        patients=np.asarray(patients),
        sections=list(sections),
        blocks=np.asarray(blocks, dtype=np.int64),
        n_spots=np.asarray(n_spots, dtype=np.int64),
        bboxes=np.asarray(bboxes, dtype=np.int64),
        mpp=np.asarray(mpps, dtype=float),
        gene_names=panel.to_numpy(dtype=str),
    )


def _image_size(path):
    from PIL import Image

    # The HER2ST images are a little above Pillow's decompression-bomb
    # warning limit. Only the header is read here, so the warning is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return image.size
