"""Micrometres per pixel of a slide, from an override or its metadata."""

import logging
import math

from ..exceptions import MissingResolutionError

logger = logging.getLogger(__name__)

# Microscopy scans span about 0.1 µm/px (100x oil) to 10 µm/px (1x). A value
# outside this range comes from a placeholder tag, such as the 72 dpi that
# image editors write, and is ignored rather than trusted.
MPP_PLAUSIBLE_RANGE = (0.05, 20.0)

# Micrometres per pixel of a 1x objective on a typical slide scanner, so that
# 20x gives 0.5 µm/px and 40x gives 0.25 µm/px. Scanners differ by a few
# percent, which is why metadata in µm/px is preferred over objective power.
MICRONS_AT_1X = 10.0

# Vendor properties in µm/px, as OpenSlide 4.0 reports them, tried after the
# standard openslide.mpp-x/y. Each entry: (x key, y key, factor to µm).
_VENDOR_MPP_KEYS = (
    ("aperio.MPP", "aperio.MPP", 1.0),
    (
        "mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_X",
        "mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_Y",
        1.0,
    ),
    ("ventana.ScanRes", "ventana.ScanRes", 1.0),
)

# Resolution tags: TIFF XResolution/YResolution in pixels per ResolutionUnit,
# and the dpi that Pillow reads from JPEG and PNG headers.
_RESOLUTION_UNIT_MICRONS = {
    "inch": 25400.0,
    "centimeter": 10000.0,
    "centimetre": 10000.0,
    "cm": 10000.0,
    "millimeter": 1000.0,
    "micrometer": 1.0,
}

_OBJECTIVE_POWER_KEYS = ("openslide.objective-power", "aperio.AppMag")


def _to_float(value):
    if value is None:
        return None
    try:
        number = float(str(value).strip().strip('"'))
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number


def _is_plausible(mpp):
    low, high = MPP_PLAUSIBLE_RANGE
    return low <= mpp <= high


def _combine_axes(mpp_x, mpp_y, source, path):
    """Return one µm/px value from the x and y values of one source."""
    if mpp_y is None:
        return mpp_x
    if abs(mpp_x - mpp_y) > 0.01 * max(mpp_x, mpp_y):
        logger.warning(
            "Slide %s has non-square pixels (%s: x=%.4g, y=%.4g µm/px); tiles use their mean.",
            path,
            source,
            mpp_x,
            mpp_y,
        )
    return 0.5 * (mpp_x + mpp_y)


def _philips_spacing(properties):
    # Philips stores "<row spacing> <column spacing>" in millimetres, quoted.
    raw = properties.get("philips.DICOM_PIXEL_SPACING")
    if raw is None:
        return None
    parts = [_to_float(part) for part in str(raw).replace('"', " ").split()]
    parts = [part for part in parts if part is not None]
    if not parts:
        return None
    return [1000.0 * part for part in parts]


def _tag_mpp(properties, prefix):
    x_res = _to_float(properties.get(f"{prefix}.XResolution"))
    if x_res is None:
        return None
    y_res = _to_float(properties.get(f"{prefix}.YResolution"))
    unit = str(properties.get(f"{prefix}.ResolutionUnit", "inch")).strip().lower()
    microns_per_unit = _RESOLUTION_UNIT_MICRONS.get(unit)
    if microns_per_unit is None:
        return None
    mpp_x = microns_per_unit / x_res
    mpp_y = None if y_res is None else microns_per_unit / y_res
    return mpp_x, mpp_y, unit


def objective_power_from_properties(properties):
    """Return the scan's objective power as a float, or None when not recorded."""
    for key in _OBJECTIVE_POWER_KEYS:
        power = _to_float(properties.get(key))
        if power is not None:
            return power
    return None


def validate_mpp(mpp, *, name="mpp"):
    """Return ``mpp`` as a float, or raise ValueError naming the parameter."""
    if isinstance(mpp, bool):
        number = None
    else:
        try:
            number = float(mpp)
        except (TypeError, ValueError):
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise ValueError(
            f"{name} must be a positive number of micrometres per pixel, got {mpp!r}. "
            "A 20x scan is about 0.5 and a 40x scan about 0.25."
        )
    return number


def resolve_mpp(properties, *, path, mpp=None):
    """Find a slide's micrometres per pixel.

    The sources are tried in this order: the ``mpp`` override, the standard
    ``openslide.mpp-x``/``openslide.mpp-y`` properties, vendor properties
    (Aperio, Philips, MIRAX, Ventana), TIFF or image resolution tags, and the
    objective power (``MICRONS_AT_1X / power``, so 20x gives 0.5). Values
    outside ``MPP_PLAUSIBLE_RANGE`` are skipped. No value is rounded to a
    standard magnification: a 22.6x scan gives 0.4425 µm/px.

    Parameters
    ----------
    properties : mapping of str to str
        Slide metadata with OpenSlide property names.
    path : str
        File name, used in messages.
    mpp : float, default=None
        User override, used as given when not None.

    Returns
    -------
    mpp : float
        Micrometres per level-0 pixel.
    source : str
        Where ``mpp`` came from, for logs and reports.

    Raises
    ------
    MissingResolutionError
        If no source gives a plausible value.
    """
    if mpp is not None:
        return validate_mpp(mpp), "mpp= override"

    skipped = []

    def accept(value, source):
        if value is None:
            return False
        if _is_plausible(value):
            return True
        skipped.append(f"{source} gives {value:.4g} µm/px")
        return False

    mpp_x = _to_float(properties.get("openslide.mpp-x"))
    if mpp_x is not None:
        mpp_y = _to_float(properties.get("openslide.mpp-y"))
        value = _combine_axes(mpp_x, mpp_y, "openslide.mpp-x/y", path)
        if accept(value, "openslide.mpp-x/y"):
            return value, "openslide.mpp-x/y"

    for x_key, y_key, factor in _VENDOR_MPP_KEYS:
        mpp_x = _to_float(properties.get(x_key))
        if mpp_x is None:
            continue
        mpp_y = _to_float(properties.get(y_key))
        value = _combine_axes(
            factor * mpp_x, None if mpp_y is None else factor * mpp_y, x_key, path
        )
        if accept(value, x_key):
            return value, x_key

    spacing = _philips_spacing(properties)
    if spacing:
        value = _combine_axes(spacing[-1], spacing[0], "philips.DICOM_PIXEL_SPACING", path)
        if accept(value, "philips.DICOM_PIXEL_SPACING"):
            return value, "philips.DICOM_PIXEL_SPACING"

    for prefix in ("tiff", "image"):
        tag = _tag_mpp(properties, prefix)
        if tag is None:
            continue
        mpp_x, mpp_y, unit = tag
        source = f"{prefix}.XResolution ({unit})"
        value = _combine_axes(mpp_x, mpp_y, source, path)
        if accept(value, source):
            return value, source

    power = objective_power_from_properties(properties)
    if power is not None:
        value = MICRONS_AT_1X / power
        source = f"objective power {power:g}x, assuming {MICRONS_AT_1X:g} µm / power"
        if accept(value, source):
            return value, source

    detail = ""
    if skipped:
        low, high = MPP_PLAUSIBLE_RANGE
        detail = (
            f" Metadata outside the plausible {low:g}-{high:g} µm/px range was ignored: "
            + "; ".join(skipped)
            + "."
        )
    raise MissingResolutionError(
        f"No resolution found for slide {path!r}: it has no µm-per-pixel, "
        f"resolution-tag or objective-power metadata.{detail} Pass the scan "
        "resolution explicitly, for example open_slide(path, mpp=0.5) or "
        "WSIFeaturizer(mpp=0.5) for a 20x scan (0.25 for 40x)."
    )
