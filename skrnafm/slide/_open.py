"""Open a slide file or region with the reader that fits it."""

import logging
import os
import struct
from pathlib import Path

import openslide

from ..exceptions import SlideError, UnsupportedSlideError
from ._base import BaseSlide
from ._image import ImageSlide, is_tiff
from ._openslide import OpenSlideSlide
from ._region import RegionSlide, SlideRegion
from ._resolution import validate_mpp

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "openslide", "image")

# Extensions of formats that only OpenSlide reads; a file with one of them
# that OpenSlide does not recognise is broken, not a plain image.
_SLIDE_EXTENSIONS = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The slide file does not exist.

    Both a :class:`~skrnafm.exceptions.SlideError`, so the featurizer's
    ``on_error`` policy applies to it, and a :class:`FileNotFoundError`.
    """


def _describe_start(path):
    """Return a short description of the file's first bytes, for error messages."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        return "the file is empty"
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return f"it starts with bytes {head[:8]!r}"
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        first_line = text.splitlines()[0] if text.splitlines() else text
        return f"it looks like a text file starting with {first_line[:40]!r}"
    return f"it starts with bytes {head[:8]!r}"


def _tiff_truncation(path):
    """Return a message if a TIFF's first directory lies beyond the end of the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(16)
    order = "<" if head[:2] == b"II" else ">"
    if head[2:4] in (b"*\x00", b"\x00*"):
        (offset,) = struct.unpack(order + "I", head[4:8])
    elif len(head) >= 16:
        (offset,) = struct.unpack(order + "Q", head[8:16])
    else:
        return f"its {size}-byte BigTIFF header is incomplete"
    if offset + 2 > size:
        return (
            f"its first image directory is at byte {offset:,} but the file has only "
            f"{size:,} bytes, so it is truncated"
        )
    return None


def _check_path(path):
    if not os.path.exists(path):
        raise SlideNotFoundError(
            f"Slide file not found: {path!r} (absolute path {os.path.abspath(path)!r}). "
            "Check the path, or the slide directory your table of slides is relative to."
        )
    if os.path.isdir(path):
        raise UnsupportedSlideError(
            f"{path!r} is a directory, not a slide file. Pass the slide file itself; for "
            "MIRAX pass the .mrxs file beside its data directory, for DICOM any .dcm file "
            "of the series."
        )


def _open_path(path, *, mpp, backend):
    _check_path(path)

    vendor = openslide.OpenSlide.detect_format(path) if backend != "image" else None
    if vendor is not None:
        logger.debug("Opening %s with OpenSlide (format %s)", path, vendor)
        return OpenSlideSlide(path, mpp=mpp)

    if backend == "openslide":
        raise UnsupportedSlideError(
            f"OpenSlide {openslide.__library_version__} does not recognise {path!r} as a "
            f"slide ({_describe_start(path)}). Use backend='auto' to read plain images "
            "with Pillow and tifffile."
        )

    extension = Path(path).suffix.lower()
    if is_tiff(path):
        truncation = _tiff_truncation(path)
        if truncation is not None:
            raise UnsupportedSlideError(
                f"Slide {path!r} cannot be opened: {truncation}. Copy it again from its "
                "source and compare its size or checksum."
            )
        if extension in _SLIDE_EXTENSIONS:
            # A vendor slide that OpenSlide rejects has lost a directory or a
            # vendor marker. Reading its first page as a plain TIFF would give
            # a wrong image, such as an SVS without its pyramid.
            raise UnsupportedSlideError(
                f"{path!r} is a TIFF with a slide extension ({extension}) that OpenSlide "
                f"{openslide.__library_version__} does not recognise: the file is "
                "truncated or corrupt. Copy it again from its source and compare its size "
                "or checksum."
            )
    elif extension in _SLIDE_EXTENSIONS:
        raise UnsupportedSlideError(
            f"{path!r} has a slide extension ({extension}) but is not a slide OpenSlide "
            f"recognises: {_describe_start(path)}. It may be a renamed file or a failed "
            "download; copy it again from its source."
        )

    logger.debug("Opening %s as a plain image", path)
    return ImageSlide(path, mpp=mpp)


def open_slide(path_or_region, *, mpp=None, backend="auto"):
    """Open a whole-slide image, a plain image, or a region of either.

    Pyramidal formats that OpenSlide recognises (SVS, NDPI, MRXS, SCN,
    tiled TIFF, DICOM, ...) open as :class:`OpenSlideSlide`. Other images
    (JPEG, PNG, single-image TIFF such as a TIFF OpenSlide rejects) open as
    :class:`ImageSlide`, which decodes or memory-maps the whole image.

    Parameters
    ----------
    path_or_region : str, os.PathLike or SlideRegion
        File to open, or a :class:`SlideRegion` of one.
    mpp : float, default=None
        Micrometres per level-0 pixel, overriding the file's metadata. Needed
        for slides that record no resolution. A ``SlideRegion`` with its own
        ``mpp`` takes precedence.
    backend : {"auto", "openslide", "image"}, default="auto"
        Reader to use. ``"auto"`` tries OpenSlide first and falls back to
        the plain-image reader for files OpenSlide does not recognise.

    Returns
    -------
    slide : BaseSlide
        Open slide; close it or use it in a ``with`` block.

    Raises
    ------
    SlideNotFoundError
        If the file does not exist.
    UnsupportedSlideError
        If the path is a directory, or the file is neither a slide nor an
        image that can be read, or is truncated.
    ValueError
        If ``mpp`` is not a positive number or ``backend`` is unknown.

    Examples
    --------
    >>> from skrnafm.slide import open_slide
    >>> with open_slide("slide.svs") as slide:  # doctest: +SKIP
    ...     print(slide.dimensions, slide.mpp)
    (2220, 2967) 0.499
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if mpp is not None:
        mpp = validate_mpp(mpp)
    if isinstance(path_or_region, BaseSlide):
        raise TypeError(
            f"open_slide expects a path or SlideRegion, got an open slide {path_or_region!r}."
        )

    if isinstance(path_or_region, SlideRegion):
        region = path_or_region
        parent_mpp = region.mpp if region.mpp is not None else mpp
        parent = _open_path(region.path, mpp=parent_mpp, backend=backend)
        return RegionSlide(region, parent)

    try:
        path = os.fspath(path_or_region)
    except TypeError:
        raise TypeError(
            "path_or_region must be a str, os.PathLike or SlideRegion, got "
            f"{type(path_or_region).__name__} {path_or_region!r}."
        ) from None
    return _open_path(path, mpp=mpp, backend=backend)


def _reopen(source, mpp, backend):
    """Reopen a slide when unpickling it."""
    return open_slide(source, mpp=mpp, backend=backend)
