"""Plain (non-pyramidal) images: JPEG, PNG and single-image TIFF."""

import logging
import os
import threading
from collections import OrderedDict

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from ..exceptions import SlideError, UnsupportedSlideError
from ._base import (
    WHITE,
    BaseSlide,
    _as_size_pair,
    _validate_location,
    flatten_rgba,
    paste_into_background,
)

logger = logging.getLogger(__name__)

# Largest plain image decoded into memory: 2**30 px is 3 GiB as RGB. Pillow's
# own limit (about 89 M px) guards against decompression bombs from untrusted
# files. A section photographed at 0.7 µm/px (9,300 x 9,900 px for the HER2ST
# sections) already exceeds it. Larger images should be converted to
# a pyramidal TIFF, which OpenSlide reads tile by tile.
MAX_DECODED_PIXELS = 2**30

# Pillow's limit is a module global, so lifting it is serialised.
_PIL_LIMIT_LOCK = threading.Lock()


def _open_without_pixel_limit(path):
    """Open an image with Pillow's decompression-bomb limit lifted; the caller checks size.

    Pillow checks the limit only while :func:`PIL.Image.open` parses the
    header, so the limit is lifted for that call alone.
    """
    # NOTE: during that call, Image.open in other threads of the process also
    # skips Pillow's check, because the limit is a module global.
    with _PIL_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit

# Number of decoded images kept after their slides close. Regions of one
# image (pseudo-bulk blocks of a spatial transcriptomics section, for
# example) are opened one after another, and each open would otherwise
# decode the whole JPEG again.
DECODED_CACHE_SIZE = 1
_decoded_cache = OrderedDict()
_decoded_cache_lock = threading.Lock()


def _cache_key(path):
    status = os.stat(path)
    return (os.path.realpath(path), status.st_mtime_ns, status.st_size)


def _cache_get(key):
    with _decoded_cache_lock:
        pixels = _decoded_cache.get(key)
        if pixels is not None:
            _decoded_cache.move_to_end(key)
        return pixels


def _cache_put(key, pixels):
    with _decoded_cache_lock:
        _decoded_cache[key] = pixels
        _decoded_cache.move_to_end(key)
        while len(_decoded_cache) > DECODED_CACHE_SIZE:
            _decoded_cache.popitem(last=False)


def clear_decoded_cache():
    """Drop the decoded plain images that :class:`ImageSlide` keeps between opens."""
    with _decoded_cache_lock:
        _decoded_cache.clear()

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff(path):
    """Return whether the file starts with a TIFF or BigTIFF header."""
    with open(path, "rb") as handle:
        return handle.read(4) in _TIFF_MAGIC


def _too_large_error(path, width, height):
    return UnsupportedSlideError(
        f"Image {path!r} is {width} x {height} px, more than the {MAX_DECODED_PIXELS:,} px "
        "that skrnafm decodes into memory for a non-pyramidal image. Convert it to a "
        "tiled pyramidal TIFF (for example with libvips: vips tiffsave in.jpg out.tif "
        "--tile --pyramid --compression jpeg), which is read tile by tile."
    )


def _to_rgb_uint8(array, path):
    """Return an (height, width, 3) uint8 view or copy of a decoded image array."""
    if array.dtype != np.uint8:
        if array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        else:
            raise UnsupportedSlideError(
                f"Image {path!r} has {array.dtype} pixels; skrnafm reads 8-bit and 16-bit "
                "images. Convert it to 8-bit RGB."
            )
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return array
    raise UnsupportedSlideError(
        f"Image {path!r} has array shape {array.shape}; expected (height, width), "
        "(height, width, 3) or (height, width, 4)."
    )


class ImageSlide(BaseSlide):
    """A plain image (JPEG, PNG, single-image TIFF) behind the slide contract.

    The image has a single level. Use :func:`open_slide` rather than this
    class directly: it picks the reader for the file.

    A JPEG or PNG cannot be read in parts, so the image is decoded once, on
    the first pixel access, and kept. It costs ``3 * width * height`` bytes
    (about 280 MB for a 9,300 x 9,900 px section), and Pillow's decode
    briefly needs about as much again. The most recently decoded
    image also stays in a process-wide cache of ``DECODED_CACHE_SIZE``
    images after :meth:`close`, so that opening several regions of one image
    decodes it once; :func:`clear_decoded_cache` frees it. An uncompressed
    TIFF is memory-mapped instead, so only the pages the tiles touch are
    loaded; a compressed TIFF is decoded once like a JPEG.

    Parameters
    ----------
    path : str or os.PathLike
        Image file.
    mpp : float, default=None
        Micrometres per pixel, overriding any resolution tags. Plain images
        rarely record a usable resolution, so this is usually needed.
    """

    _backend_name = "image"

    def __init__(self, path, *, mpp=None):
        super().__init__(path, mpp=mpp)
        self._pixels = None
        self._pixels_lock = threading.Lock()
        self._properties = {}
        if is_tiff(self.path):
            self._open_tiff()
        else:
            self._open_pillow()
        width, height = self._size
        if width * height > MAX_DECODED_PIXELS and not self._memmappable:
            raise _too_large_error(self.path, width, height)

    # --- opening --------------------------------------------------------
    def _open_tiff(self):
        self._format = "TIFF"
        try:
            with tifffile.TiffFile(self.path) as tiff:
                series = tiff.series[0]
                page = series.pages[0] if series.pages else tiff.pages[0]
                axes = series.axes
                shape = series.shape
                self._read_tiff_tags(page)
        except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
            raise UnsupportedSlideError(
                f"Could not read the TIFF structure of {self.path!r}: {exc}. The file is "
                "truncated or corrupt; copy it again from its source."
            ) from exc

        if axes.startswith("S") and len(shape) == 3 and shape[0] in (1, 3, 4):
            self._planar = True
            height, width = shape[1], shape[2]
        elif axes[:2] == "YX":
            self._planar = False
            height, width = shape[0], shape[1]
        else:
            raise UnsupportedSlideError(
                f"TIFF {self.path!r} has axes {axes!r} and shape {shape}; skrnafm reads a "
                "single 2-D RGB or grayscale image. Save one plane as RGB, or a pyramid "
                "that OpenSlide reads."
            )
        self._size = (int(width), int(height))

        # Uncompressed contiguous 8-bit RGB(A) can be memory-mapped; anything
        # else (compressed, grayscale, 16-bit) is decoded and converted once.
        try:
            memmap = tifffile.memmap(self.path, series=0, mode="r")
        except (ValueError, OSError):
            memmap = None
        channels = None
        if memmap is not None and memmap.ndim == 3:
            channels = memmap.shape[0] if self._planar else memmap.shape[2]
        if memmap is not None and memmap.dtype == np.uint8 and channels in (3, 4):
            self._memmap = memmap
            self._memmappable = True
        else:
            self._memmap = None
            self._memmappable = False

    def _read_tiff_tags(self, page):
        tags = page.tags
        unit_names = {1: "none", 2: "inch", 3: "centimeter"}
        for name in ("XResolution", "YResolution"):
            tag = tags.get(name)
            if tag is None:
                continue
            numerator, denominator = tag.value
            if denominator:
                self._properties[f"tiff.{name}"] = repr(numerator / denominator)
        unit = tags.get("ResolutionUnit")
        if unit is not None:
            self._properties["tiff.ResolutionUnit"] = unit_names.get(int(unit.value), "none")
        description = tags.get("ImageDescription")
        if description is not None:
            self._properties["tiff.ImageDescription"] = str(description.value)

    def _open_pillow(self):
        self._memmap = None
        self._memmappable = False
        self._planar = False
        try:
            with _open_without_pixel_limit(self.path) as image:
                self._size = image.size
                self._format = image.format
                dpi = image.info.get("dpi")
        except UnidentifiedImageError as exc:
            raise UnsupportedSlideError(
                f"{self.path!r} is neither a slide OpenSlide "
                "recognises nor an image Pillow can read. Pass a slide (SVS, NDPI, MRXS, "
                "SCN, pyramidal TIFF, ...) or an image (JPEG, PNG, TIFF)."
            ) from exc
        except OSError as exc:
            raise UnsupportedSlideError(
                f"Could not read the image header of {self.path!r}: {exc}. The file is "
                "truncated or corrupt; copy it again from its source."
            ) from exc
        if dpi:
            self._properties["image.XResolution"] = repr(float(dpi[0]))
            self._properties["image.YResolution"] = repr(float(dpi[-1]))
            self._properties["image.ResolutionUnit"] = "inch"

    # --- decoding -------------------------------------------------------
    def _decode(self):
        if self._format == "TIFF":
            try:
                with tifffile.TiffFile(self.path) as tiff:
                    array = tiff.series[0].asarray()
            except (KeyError, ValueError) as exc:
                # tifffile needs the optional imagecodecs package for JPEG and
                # most other codecs; Pillow decodes them through libtiff.
                logger.debug("tifffile could not decode %s (%s); trying Pillow", self.path, exc)
                return self._decode_pillow()
            if self._planar:
                array = np.moveaxis(array, 0, -1)
            return array
        return self._decode_pillow()

    def _decode_pillow(self):
        with _open_without_pixel_limit(self.path) as image:
            image.load()
            if image.mode in ("RGB", "RGBA", "L") or image.mode.startswith("I;16"):
                return np.asarray(image)
            if "A" in image.getbands() or image.mode == "P":
                return np.asarray(image.convert("RGBA"))
            return np.asarray(image.convert("RGB"))

    def _get_pixels(self):
        """Return the decoded image, (height, width, 3 or 4), decoding it once."""
        self._check_open()
        if self._memmap is not None:
            if self._planar:
                return np.moveaxis(self._memmap, 0, -1)
            return self._memmap

        if self._pixels is None:
            with self._pixels_lock:
                if self._pixels is None:
                    key = _cache_key(self.path)
                    self._pixels = _cache_get(key)
                if self._pixels is None:
                    logger.debug("Decoding %s (%d x %d px) into memory", self.path, *self._size)
                    try:
                        array = self._decode()
                    except (OSError, SyntaxError, ValueError, tifffile.TiffFileError) as exc:
                        raise SlideError(
                            f"Failed to decode image {self.path!r}: {exc}. The file is "
                            "truncated or corrupt, or uses a compression neither Pillow "
                            "nor tifffile decodes; copy it again from its source, or "
                            "convert it to an uncompressed or JPEG TIFF."
                        ) from exc
                    pixels = _to_rgb_uint8(array, self.path)
                    # The cache shares this array between slides, so it is read-only.
                    pixels.flags.writeable = False
                    _cache_put(key, pixels)
                    self._pixels = pixels
        return self._pixels

    # --- contract -------------------------------------------------------
    @property
    def level_dimensions(self):
        return (self._size,)

    @property
    def level_downsamples(self):
        return (1.0,)

    @property
    def properties(self):
        return dict(self._properties)

    @property
    def image_format(self):
        """File format as Pillow names it (``"JPEG"``, ``"PNG"``, ``"TIFF"``, ...)."""
        return self._format

    def read_region(self, location, level, size):
        self._check_open()
        x, y = _validate_location(location)
        level = self._check_level(level)
        width, height = _as_size_pair(size, "size")
        pixels = self._get_pixels()
        image_width, image_height = self._size

        left, top = max(x, 0), max(y, 0)
        right, bottom = min(x + width, image_width), min(y + height, image_height)
        if right <= left or bottom <= top:
            empty = np.empty((0, 0, 3), dtype=np.uint8)
            return paste_into_background((height, width, 3), WHITE, empty, (0, 0))

        region = pixels[top:bottom, left:right]
        if region.shape[2] == 4:
            region = flatten_rgba(region)
        if (left, top, right, bottom) == (x, y, x + width, y + height):
            return np.array(region, dtype=np.uint8, order="C")
        return paste_into_background((height, width, 3), WHITE, region, (left - x, top - y))

    def _read_bounds_resized(self, out_size):
        # The pixels are in memory, so a strided view first drops most of
        # them without a copy; the box filter then averages what is left.
        # Strides stay at or below half the scale, so each output pixel
        # still averages at least 2 x 2 samples.
        out_width, out_height = _as_size_pair(out_size, "out_size")
        width, height = self._size
        pixels = self._get_pixels()
        step = max(1, int(min(width / out_width, height / out_height) // 2))
        sampled = np.ascontiguousarray(pixels[::step, ::step])
        if sampled.shape[2] == 4:
            sampled = flatten_rgba(sampled)
        image = Image.fromarray(sampled).resize((out_width, out_height), Image.Resampling.BOX)
        return np.asarray(image)

    def close(self):
        self._pixels = None
        self._memmap = None
        super().close()
