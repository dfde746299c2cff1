"""Tissue detection on a low-resolution picture of a slide."""

import logging

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

# Otsu thresholds are clamped into these ranges so that a slide without
# background (Otsu then splits pale from dark tissue) or without tissue (Otsu
# then splits the noise of the glass) still gets a sensible cut. Values are on
# the 0-255 scale. H&E tissue has saturation above about 40 and clean glass
# below 15.
_SATURATION_THRESHOLD_RANGE = (15.0, 40.0)
_BACKGROUND_THRESHOLD_RANGE = (200.0, 235.0)


def otsu_threshold(values, value_range=(0.0, 255.0), bins=256):
    """Return the Otsu threshold of a set of values.

    The threshold maximises the between-class variance of the histogram
    of ``values`` over ``value_range``. Pixels above it form one class.
    Constant input returns that constant.
    """
    values = np.asarray(values)
    if values.size == 0:
        return float(value_range[0])
    if values.dtype == np.uint8 and tuple(value_range) == (0.0, 255.0) and bins == 256:
        # Counting uint8 values needs no float copy of a large picture.
        counts = np.bincount(values.ravel(), minlength=256)
        edges = np.arange(257, dtype=np.float64) - 0.5
    else:
        counts, edges = np.histogram(values, bins=bins, range=value_range)
    centers = 0.5 * (edges[:-1] + edges[1:])

    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centers)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    if not np.any(between > 0):
        return float(values.mean(dtype=np.float64))
    return float(edges[np.argmax(between) + 1])


def _disk(radius):
    grid = np.arange(-radius, radius + 1)
    return grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2


def _close_then_open(mask, radius):
    if radius < 1:
        return mask
    # Pad so that the erosion step does not eat tissue touching the border.
    padded = np.pad(mask, radius + 1, mode="edge")
    padded = ndimage.binary_closing(padded, structure=_disk(radius))
    padded = ndimage.binary_opening(padded, structure=_disk(1))
    return padded[radius + 1 : -(radius + 1), radius + 1 : -(radius + 1)]


def detect_tissue(thumbnail, *, min_intensity=25, closing_radius=2):
    """Return a boolean tissue mask of a low-resolution RGB picture.

    A pixel is tissue when all of these hold:

    * its HSV saturation is above the Otsu threshold of the saturation
      histogram, clamped to 15-40 on a 0-255 scale. The clamp keeps faint
      glass noise out, and keeps pale tissue in when the slide has little
      background;
    * at least one RGB channel is below that channel's Otsu threshold
      (clamped to 200-235), so bright glass counts as background;
    * its mean intensity is at least ``min_intensity``, which removes black
      borders, pen marks and dust.

    The mask is then closed with a disk of ``closing_radius`` pixels, which
    fills small gaps, and opened with a 3 x 3 disk, which removes specks.

    Parameters
    ----------
    thumbnail : ndarray of shape (height, width, 3), dtype uint8
        RGB picture of the slide.
    min_intensity : float, default=25
        Darkest mean RGB value (0-255) still counted as tissue.
    closing_radius : int, default=2
        Radius in thumbnail pixels of the morphological closing; 0 skips
        the clean-up.

    Returns
    -------
    mask : ndarray of shape (height, width), dtype bool
    """
    thumbnail = np.asarray(thumbnail)
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3 or thumbnail.dtype != np.uint8:
        raise ValueError(
            "thumbnail must be a uint8 array of shape (height, width, 3), got "
            f"dtype {thumbnail.dtype} and shape {thumbnail.shape}."
        )
    if thumbnail.size == 0:
        return np.zeros(thumbnail.shape[:2], dtype=bool)

    # Integer arithmetic on uint8 and uint16 keeps large masks cheap, and
    # channel-wise maximum and minimum are much faster than reductions over
    # the last axis of length 3.
    red, green, blue = thumbnail[..., 0], thumbnail[..., 1], thumbnail[..., 2]
    brightest = np.maximum(np.maximum(red, green), blue)
    darkest = np.minimum(np.minimum(red, green), blue)
    spread = (brightest - darkest).astype(np.uint16) * 255
    saturation = (spread // np.maximum(brightest, 1)).astype(np.uint8)
    del spread

    saturation_threshold = np.clip(otsu_threshold(saturation), *_SATURATION_THRESHOLD_RANGE)
    mask = saturation > saturation_threshold
    del saturation

    not_background = np.zeros(mask.shape, dtype=bool)
    for channel in range(3):
        values = thumbnail[..., channel]
        threshold = np.clip(otsu_threshold(values), *_BACKGROUND_THRESHOLD_RANGE)
        not_background |= values < threshold
    mask &= not_background
    intensity_sum = red.astype(np.uint16) + green + blue
    mask &= intensity_sum >= 3 * min_intensity

    mask = _close_then_open(mask, int(closing_radius))
    logger.debug(
        "Tissue mask: saturation threshold %.1f, %.1f%% of %d pixels are tissue",
        saturation_threshold,
        100.0 * mask.mean(),
        mask.size,
    )
    return mask
