"""Opening slides and images, resolution lookup, regions and bad input."""

import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from skrnafm.exceptions import MissingResolutionError, SlideError, UnsupportedSlideError
from skrnafm.slide import (
    ImageSlide,
    OpenSlideSlide,
    RegionSlide,
    SlideNotFoundError,
    SlideRegion,
    open_slide,
    resolve_mpp,
)
from skrnafm.slide._base import flatten_rgba

# --- real slides -----------------------------------------------------------


def test_open_slide_cmu_metadata(cmu_slide):
    with open_slide(cmu_slide) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 1
        assert slide.level_downsamples == (1.0,)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.mpp_source == "openslide.mpp-x/y"
        assert slide.objective_power == 20.0
        assert slide.name == "cmu-1-small-region"
        assert slide.path == str(cmu_slide)


def test_read_region_shape_and_dtype(cmu_slide):
    with open_slide(cmu_slide) as slide:
        region = slide.read_region((1000, 1200), 0, (64, 32))
    assert region.shape == (32, 64, 3)
    assert region.dtype == np.uint8
    assert region.flags["C_CONTIGUOUS"]


def test_read_region_outside_is_background(cmu_slide):
    with open_slide(cmu_slide) as slide:
        region = slide.read_region((-50, -50), 0, (100, 100))
        inside = slide.read_region((0, 0), 0, (50, 50))
    assert (region[:50, :50] == 255).all()
    np.testing.assert_array_equal(region[50:, 50:], inside)


def test_get_thumbnail_keeps_aspect(cmu_slide):
    with open_slide(cmu_slide) as slide:
        thumbnail = slide.get_thumbnail(300)
    assert thumbnail.shape == (300, 224, 3)
    assert thumbnail.dtype == np.uint8


def test_get_thumbnail_never_upscales(cmu_slide):
    with open_slide(cmu_slide) as slide:
        thumbnail = slide.get_thumbnail((10_000, 10_000))
    assert thumbnail.shape == (2967, 2220, 3)


def test_closed_slide_raises(cmu_slide):
    with open_slide(cmu_slide) as slide:
        pass
    assert slide.closed
    with pytest.raises(ValueError, match="is closed"):
        slide.read_region((0, 0), 0, (8, 8))


def test_read_region_level_out_of_range(cmu_slide):
    with open_slide(cmu_slide) as slide:
        with pytest.raises(ValueError, match=r"level=3 is out of range .* 1 level"):
            slide.read_region((0, 0), 3, (8, 8))


def test_slide_pickle_reopens(cmu_slide):
    with open_slide(cmu_slide, mpp=0.45) as slide:
        copy = pickle.loads(pickle.dumps(slide))
        expected = slide.read_region((500, 500), 0, (16, 16))
    with copy:
        assert copy.mpp == 0.45
        np.testing.assert_array_equal(copy.read_region((500, 500), 0, (16, 16)), expected)


def test_tcga_missing_resolution(tcga_slide):
    with open_slide(tcga_slide) as slide:
        assert slide.level_count == 2
        with pytest.raises(MissingResolutionError, match=r"tcga-cr-7395.*mpp=0\.5"):
            slide.mpp


def test_tcga_mpp_override(tcga_slide):
    with open_slide(tcga_slide, mpp=0.25) as slide:
        assert slide.mpp == 0.25
        assert slide.mpp_source == "mpp= override"
        assert slide.objective_power is None


def test_kidney_plain_image_path(kidney_tiff):
    with open_slide(kidney_tiff, mpp=0.5) as slide:
        assert isinstance(slide, ImageSlide)
        assert slide.image_format == "TIFF"
        assert slide.dimensions == (1493, 901)
        assert slide.read_region((0, 0), 0, (16, 16)).shape == (16, 16, 3)


def test_kidney_without_mpp_raises(kidney_tiff):
    with open_slide(kidney_tiff) as slide:
        with pytest.raises(MissingResolutionError, match="kidney-48-5"):
            slide.mpp


def test_her2st_jpeg_ignores_72_dpi(her2st_dir):
    with open_slide(her2st_dir / "B4.jpg") as slide:
        assert isinstance(slide, ImageSlide)
        assert slide.dimensions == (9272, 9923)
        with pytest.raises(MissingResolutionError, match=r"image\.XResolution.*352\.8 µm/px"):
            slide.mpp


def test_jpeg_read_matches_pillow(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as image:
        expected = np.asarray(image.crop((100, 200, 200, 250)))
    limit = Image.MAX_IMAGE_PIXELS
    with open_slide(path, mpp=0.69) as slide:
        region = slide.read_region((100, 200), 0, (100, 50))
    np.testing.assert_array_equal(region, expected)
    assert Image.MAX_IMAGE_PIXELS == limit


def test_jpeg_decoded_once_across_opens(tmp_path):
    path = tmp_path / "shared.jpg"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(path)
    with open_slide(path, mpp=0.5) as first:
        pixels = first._get_pixels()
    with open_slide(SlideRegion(path, bbox=(0, 0, 32, 32), mpp=0.5)) as second:
        assert second.parent._get_pixels() is pixels
    assert not pixels.flags.writeable


# --- bad input -------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "absent.svs"
    with pytest.raises(SlideNotFoundError, match="absent.svs") as info:
        open_slide(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, SlideError)


def test_directory_rejected(tmp_path):
    with pytest.raises(UnsupportedSlideError, match="is a directory.*slide file itself"):
        open_slide(tmp_path)


def test_text_renamed_svs(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("patient 7, block B\n")
    with pytest.raises(UnsupportedSlideError, match=r"notes\.svs.*text file.*'patient 7"):
        open_slide(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.svs"
    path.write_bytes(b"")
    with pytest.raises(UnsupportedSlideError, match="empty"):
        open_slide(path)


def test_truncated_svs(cmu_slide, tmp_path):
    path = tmp_path / "truncated.svs"
    data = cmu_slide.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedSlideError, match=r"truncated\.svs.*truncated.*Copy it again"):
        open_slide(path)


def test_truncated_jpeg(tmp_path):
    source = tmp_path / "whole.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(source)
    path = tmp_path / "cut.jpg"
    path.write_bytes(source.read_bytes()[:4000])
    with open_slide(path, mpp=0.5) as slide:
        with pytest.raises(SlideError, match=r"cut\.jpg.*truncated or corrupt"):
            slide.read_region((0, 0), 0, (10, 10))


def test_openslide_backend_rejects_jpeg(tmp_path):
    path = tmp_path / "plain.jpg"
    Image.new("RGB", (64, 64), "white").save(path)
    with pytest.raises(UnsupportedSlideError, match="does not recognise.*backend='auto'"):
        open_slide(path, backend="openslide")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        open_slide("x.svs", backend="vips")


def test_open_slide_rejects_open_slide(cmu_slide):
    with open_slide(cmu_slide) as slide:
        with pytest.raises(TypeError, match="path or SlideRegion"):
            open_slide(slide)


@pytest.mark.parametrize("mpp", [-1, 0, "fast", float("inf"), True])
def test_invalid_mpp_override(cmu_slide, mpp):
    with pytest.raises(ValueError, match="mpp must be a positive number"):
        open_slide(cmu_slide, mpp=mpp)


# --- plain images ----------------------------------------------------------


def test_rgba_png_flattened_on_white(tmp_path):
    pixels = np.zeros((20, 30, 4), dtype=np.uint8)
    pixels[..., 0] = 200
    pixels[:, 15:, 3] = 255
    path = tmp_path / "alpha.png"
    Image.fromarray(pixels, mode="RGBA").save(path)
    with open_slide(path, mpp=0.5) as slide:
        region = slide.read_region((0, 0), 0, (30, 20))
    assert (region[:, :15] == 255).all()
    assert (region[:, 15:] == (200, 0, 0)).all()


def test_grayscale_png_has_three_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((10, 12), 90, dtype=np.uint8)).save(path)
    with open_slide(path, mpp=0.5) as slide:
        region = slide.read_region((0, 0), 0, (12, 10))
    assert region.shape == (10, 12, 3)
    assert (region == 90).all()


def test_read_region_past_image_edge(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (40, 30), (10, 20, 30)).save(path)
    with open_slide(path, mpp=0.5) as slide:
        region = slide.read_region((30, 20), 0, (20, 20))
    assert (region[:10, :10] == (10, 20, 30)).all()
    assert (region[10:, :] == 255).all()
    assert (region[:, 10:] == 255).all()


def test_plain_tiff_resolution_tag(tmp_path):
    import tifffile

    path = tmp_path / "tagged.tif"
    pixels = np.full((32, 32, 3), 128, dtype=np.uint8)
    tifffile.imwrite(path, pixels, resolution=(20000, 20000), resolutionunit="CENTIMETER")
    with open_slide(path, backend="image") as slide:
        assert slide.mpp == pytest.approx(0.5)
        assert slide.mpp_source == "tiff.XResolution (centimeter)"


def test_flatten_rgba_blends_background():
    rgba = np.array([[[0, 0, 0, 128]]], dtype=np.uint8)
    flat = flatten_rgba(rgba, (255, 255, 255))
    assert flat.shape == (1, 1, 3)
    assert (flat == 127).all()


# --- resolution lookup -----------------------------------------------------


@pytest.mark.parametrize(
    "properties, expected, source",
    [
        ({"openslide.mpp-x": "0.2527", "openslide.mpp-y": "0.2527"}, 0.2527, "openslide.mpp-x/y"),
        ({"aperio.MPP": "0.4990"}, 0.499, "aperio.MPP"),
        ({"philips.DICOM_PIXEL_SPACING": '"0.000243" "0.000243"'}, 0.243, "philips.DICOM_PIXEL_SPACING"),
        (
            {"tiff.XResolution": "40000", "tiff.YResolution": "40000", "tiff.ResolutionUnit": "centimeter"},
            0.25,
            "tiff.XResolution (centimeter)",
        ),
        ({"openslide.objective-power": "40"}, 0.25, "objective power 40x"),
        ({"aperio.AppMag": "22.6"}, 10 / 22.6, "objective power 22.6x"),
    ],
)
def test_resolve_mpp_sources(properties, expected, source):
    mpp, found = resolve_mpp(properties, path="s.svs")
    assert mpp == pytest.approx(expected)
    assert found.startswith(source)


def test_resolve_mpp_order():
    properties = {"openslide.mpp-x": "0.25", "aperio.MPP": "0.3", "openslide.objective-power": "20"}
    assert resolve_mpp(properties, path="s.svs")[0] == 0.25
    assert resolve_mpp(properties, path="s.svs", mpp=0.7) == (0.7, "mpp= override")


def test_resolve_mpp_skips_implausible_tag():
    properties = {"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch", "aperio.AppMag": "20"}
    mpp, source = resolve_mpp(properties, path="s.tif")
    assert mpp == pytest.approx(0.5)
    assert source.startswith("objective power 20x")


def test_resolve_mpp_error_names_file_and_fix():
    with pytest.raises(MissingResolutionError, match=r"'scan\.svs'.*open_slide\(path, mpp=0\.5\)"):
        resolve_mpp({"tiff.ResolutionUnit": "inch"}, path="scan.svs")


# --- regions ---------------------------------------------------------------


def test_slide_region_defaults():
    region = SlideRegion("dir/section.jpg", bbox=(10, 20, 300, 400))
    assert region.name == "section_x10_y20_w300_h400"
    assert region.bbox == (10, 20, 300, 400)
    assert region.mpp is None
    assert hash(region) == hash(SlideRegion("dir/section.jpg", bbox=[10, 20, 300, 400]))
    assert pickle.loads(pickle.dumps(region)) == region


@pytest.mark.parametrize("bbox", [(0, 0, 0, 10), (0, 0, 10), (0.5, 0, 10, 10), "abcd"])
def test_slide_region_invalid_bbox(bbox):
    with pytest.raises(ValueError, match="bbox must be"):
        SlideRegion("a.jpg", bbox=bbox)


def test_slide_region_is_frozen():
    region = SlideRegion("a.jpg", bbox=(0, 0, 10, 10))
    with pytest.raises(AttributeError):
        region.bbox = (1, 1, 1, 1)


def test_region_view_reads_parent_frame(cmu_slide):
    region = SlideRegion(cmu_slide, bbox=(500, 600, 300, 200))
    with open_slide(region) as view, open_slide(cmu_slide) as slide:
        assert isinstance(view, RegionSlide)
        assert view.dimensions == (300, 200)
        assert view.bounds == (500, 600, 300, 200)
        assert view.mpp == pytest.approx(0.499)
        np.testing.assert_array_equal(
            view.read_region((550, 650), 0, (40, 40)), slide.read_region((550, 650), 0, (40, 40))
        )
        outside = view.read_region((480, 600), 0, (40, 10))
    assert (outside[:, :20] == 255).all()


def test_region_thumbnail_covers_bbox(cmu_slide):
    region = SlideRegion(cmu_slide, bbox=(500, 600, 400, 200))
    with open_slide(region) as view:
        assert view.get_thumbnail(100).shape == (50, 100, 3)


def test_region_mpp_takes_precedence(tcga_slide):
    region = SlideRegion(tcga_slide, bbox=(0, 0, 512, 512), mpp=0.3)
    with open_slide(region, mpp=0.9) as view:
        assert view.mpp == 0.3
    with open_slide(SlideRegion(tcga_slide, bbox=(0, 0, 512, 512)), mpp=0.9) as view:
        assert view.mpp == 0.9


def test_region_without_overlap(cmu_slide):
    region = SlideRegion(cmu_slide, bbox=(5000, 5000, 100, 100))
    with pytest.raises(SlideError, match=r"does not overlap.*level-0 pixels"):
        open_slide(region)


def test_region_pickle_reopens(cmu_slide):
    region = SlideRegion(cmu_slide, bbox=(500, 600, 300, 200), name="patch")
    with open_slide(region) as view:
        copy = pickle.loads(pickle.dumps(view))
    with copy:
        assert copy.name == "patch"
        assert copy.bounds == (500, 600, 300, 200)


def test_region_of_copied_slide_keeps_path(cmu_slide, tmp_path):
    path = tmp_path / "copy.svs"
    shutil.copy(cmu_slide, path)
    with open_slide(SlideRegion(path, bbox=(0, 0, 64, 64))) as view:
        assert view.path == str(path)


def test_16bit_png_scaled_to_8bit(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16)).save(path)
    with open_slide(path, mpp=0.5) as slide:
        region = slide.read_region((0, 0), 0, (8, 8))
    assert region.dtype == np.uint8
    assert (region == 40_000 >> 8).all()
