"""Tissue masks, tile grids, batched tile reading and the QC picture."""

import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from skrnafm.exceptions import MissingResolutionError, NoTissueError, SlideError, SlideReadWarning
from skrnafm.slide import (
    OpenSlideSlide,
    SlideRegion,
    TileGrid,
    choose_read_geometry,
    detect_tissue,
    iter_tile_batches,
    open_slide,
    otsu_threshold,
    render_tiling_qc,
    save_tiling_qc,
    tile_slide,
)


def make_tissue_image(height, width, *, seed=0):
    """Return a white RGB image with a smooth pink-purple textured block in its middle."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 245, dtype=np.uint8)
    top, left = height // 5, width // 5
    bottom, right = height - height // 5, width - width // 5
    rows, columns = np.mgrid[top:bottom, left:right]
    wave = 40 * np.sin(rows / 9.0) * np.cos(columns / 13.0)
    noise = rng.normal(0, 6, wave.shape)
    image[top:bottom, left:right, 0] = np.clip(200 + wave + noise, 0, 255)
    image[top:bottom, left:right, 1] = np.clip(90 + wave + noise, 0, 255)
    image[top:bottom, left:right, 2] = np.clip(160 + wave + noise, 0, 255)
    return image


def write_pyramid_tiff(path, image, *, mpp, downsamples):
    """Write a tiled, deflate-compressed pyramidal TIFF that OpenSlide reads as generic-tiff."""
    base = Image.fromarray(image)
    with tifffile.TiffWriter(path) as writer:
        for index, downsample in enumerate(downsamples):
            level = base if downsample == 1 else base.reduce(downsample)
            pixels_per_cm = 1e4 / (mpp * downsample)
            writer.write(
                np.asarray(level),
                tile=(256, 256),
                compression="zlib",
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return path


@pytest.fixture(scope="module")
def her2st_b4(her2st_dir):
    """HER2ST section B4, decoded once for the module (about 280 MB)."""
    with open_slide(her2st_dir / "B4.jpg", mpp=0.69) as slide:
        yield slide


# --- real slides -----------------------------------------------------------


def test_tile_slide_cmu(cmu_slide):
    with open_slide(cmu_slide) as slide:
        grid = tile_slide(slide)
    assert isinstance(grid, TileGrid)
    assert grid.n_tiles > 20
    assert grid.coords.dtype == np.int64
    assert grid.coords.shape == (grid.n_tiles, 2)
    assert (grid.coords >= 0).all()
    assert (grid.coords[:, 0] < 2220).all()
    assert (grid.coords[:, 1] < 2967).all()
    assert grid.level == 0
    assert grid.read_size == 256
    assert grid.effective_mpp == pytest.approx(0.499)
    assert grid.tissue_mask.dtype == bool
    assert (grid.tissue_fraction >= 0.2).all()


def test_iter_tile_batches_cmu(cmu_slide):
    with open_slide(cmu_slide) as slide:
        grid = tile_slide(slide, max_tiles=40)
        batches = list(iter_tile_batches(slide, grid, batch_size=16))
        first_tile = slide.read_region(tuple(grid.coords[0]), 0, (256, 256))
    assert [len(tiles) for tiles, _ in batches] == [16, 16, 8]
    tiles, coords = batches[0]
    assert tiles.shape == (16, 256, 256, 3)
    assert tiles.dtype == np.uint8
    assert coords.dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([c for _, c in batches]), grid.coords)
    np.testing.assert_array_equal(tiles[0], first_tile)


def test_tile_cap_reproducible(cmu_slide):
    with open_slide(cmu_slide) as slide:
        full = tile_slide(slide, max_tiles=None)
        first = tile_slide(slide, max_tiles=10, random_state=0)
        again = tile_slide(slide, max_tiles=10, random_state=0)
        other = tile_slide(slide, max_tiles=10, random_state=1)
    assert first.n_tiles == 10
    assert first.n_candidates == full.n_tiles
    np.testing.assert_array_equal(first.coords, again.coords)
    assert not np.array_equal(first.coords, other.coords)
    full_set = {tuple(c) for c in full.coords}
    assert {tuple(c) for c in first.coords} <= full_set
    order = np.lexsort((first.coords[:, 0], first.coords[:, 1]))
    np.testing.assert_array_equal(order, np.arange(10))


def test_tcga_without_mpp_raises(tcga_slide):
    with open_slide(tcga_slide) as slide:
        with pytest.raises(MissingResolutionError, match="mpp="):
            tile_slide(slide)


def test_tcga_reads_drifting_level(tcga_slide):
    # Level 1 has downsample 2.0005, close enough to the requested 2.
    with open_slide(tcga_slide, mpp=0.25) as slide:
        grid = tile_slide(slide, max_tiles=8)
        tiles, coords = next(iter_tile_batches(slide, grid))
    assert grid.level == 1
    assert grid.read_size == 256
    assert grid.stride == 512
    assert (grid.coords[:, 0] < 4443).all()
    assert (grid.coords[:, 1] < 3567).all()
    assert tiles.shape == (8, 256, 256, 3)


def test_kidney_tiny_biopsy(kidney_tiff):
    with open_slide(kidney_tiff, mpp=0.5) as slide:
        grid = tile_slide(slide, tile_size=64)
        assert grid.n_tiles >= 1
        assert 0 < grid.tissue_mask.mean() < 0.02
        with pytest.raises(NoTissueError, match=r"kidney-48-5.*lower min_tissue_fraction"):
            tile_slide(slide, tile_size=256)


def test_her2st_upsamples_to_target(her2st_b4):
    grid = tile_slide(her2st_b4, max_tiles=20)
    tiles, coords = next(iter_tile_batches(her2st_b4, grid, batch_size=20))
    assert grid.read_size == 186
    assert grid.stride == 186
    assert grid.effective_mpp == pytest.approx(0.69 * 186 / 256)
    assert tiles.shape == (20, 256, 256, 3)


def test_region_tiles_in_parent_frame(cmu_slide):
    region = SlideRegion(cmu_slide, bbox=(700, 1500, 1200, 1000))
    with open_slide(region) as view:
        grid = tile_slide(view)
        tiles = np.concatenate([t for t, _ in iter_tile_batches(view, grid)])
    assert grid.n_tiles > 0
    assert grid.bounds == (700, 1500, 1200, 1000)
    assert (grid.coords[:, 0] >= 700).all()
    assert (grid.coords[:, 0] < 1900).all()
    assert (grid.coords[:, 1] >= 1500).all()
    assert (grid.coords[:, 1] < 2500).all()
    assert grid.slide_name == "cmu-1-small-region_x700_y1500_w1200_h1000"
    # The last column overhangs the bbox by 80 px, which read as background.
    overhang = grid.coords[:, 0] == 700 + 4 * 256
    assert (tiles[overhang][:, :, 176:] == 255).all()


def test_her2st_region_reuses_decoded_image(her2st_b4, her2st_dir):
    region = SlideRegion(her2st_dir / "B4.jpg", bbox=(3000, 3000, 1500, 1500), mpp=0.69)
    with open_slide(region) as view:
        grid = tile_slide(view)
        assert view.parent._get_pixels() is her2st_b4._get_pixels()
    assert grid.n_tiles > 0
    assert (grid.coords >= 3000).all()


# --- generated pyramids ----------------------------------------------------


@pytest.fixture(scope="module")
def pyramid_40x(tmp_path_factory):
    """A 40x (0.25 µm/px) tiled TIFF with levels 1 and 4, and its level-0 pixels."""
    image = make_tissue_image(1536, 2048)
    path = tmp_path_factory.mktemp("pyramid") / "scan40x.tif"
    return write_pyramid_tiff(path, image, mpp=0.25, downsamples=(1, 4)), image


def test_40x_reads_512_and_resizes(pyramid_40x):
    path, image = pyramid_40x
    with open_slide(path) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.mpp == pytest.approx(0.25)
        grid = tile_slide(slide)
        tiles, coords = next(iter_tile_batches(slide, grid, batch_size=4))
    assert grid.level == 0
    assert grid.read_size == 512
    assert grid.stride == 512
    assert (grid.coords % 512 == 0).all()
    assert tiles.shape == (4, 256, 256, 3)

    # A 2 x 2 block mean of the source is a close, independent estimate.
    x, y = coords[0]
    source = image[y : y + 512, x : x + 512].astype(np.float32)
    block_mean = source.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(tiles[0].astype(np.float32) - block_mean).mean() < 3.0


def test_40x_with_20x_level_skips_resize(tmp_path):
    image = make_tissue_image(1536, 2048)
    path = write_pyramid_tiff(tmp_path / "scan.tif", image, mpp=0.25, downsamples=(1, 2, 4))
    with open_slide(path) as slide:
        grid = tile_slide(slide, max_tiles=3)
        tiles, coords = next(iter_tile_batches(slide, grid))
        x, y = coords[0]
        expected = slide.read_region((int(x), int(y)), 1, (256, 256))
    assert grid.level == 1
    assert grid.read_size == 256
    np.testing.assert_array_equal(tiles[0], expected)


def corrupt_tiff_tiles(path, tile_indices):
    """Overwrite the given level-0 tiles of a TIFF with bytes no codec accepts."""
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        spans = [(page.dataoffsets[i], page.databytecounts[i]) for i in tile_indices]
    with open(path, "r+b") as handle:
        for offset, count in spans:
            handle.seek(offset)
            handle.write(b"\xff" * count)


def test_corrupt_block_skipped_with_warning(tmp_path):
    image = make_tissue_image(1024, 1024)
    path = write_pyramid_tiff(tmp_path / "corrupt.tif", image, mpp=0.5, downsamples=(1, 4))
    with open_slide(path) as slide:
        grid = tile_slide(slide)
    assert [256, 256] in grid.coords.tolist()

    # TIFF tile 5 is row 1, column 1 of the 4 x 4 grid of 256 px tiles.
    corrupt_tiff_tiles(path, [5])
    with open_slide(path) as slide:
        with pytest.warns(SlideReadWarning, match=r"Skipped 1 of \d+ tiles of slide .*corrupt\.tif"):
            batches = list(iter_tile_batches(slide, grid, batch_size=3))
    coords = np.concatenate([c for _, c in batches])
    assert len(coords) == grid.n_tiles - 1
    assert [256, 256] not in coords.tolist()
    assert sum(len(t) for t, _ in batches) == len(coords)


def test_unreadable_slide_raises(tmp_path):
    image = make_tissue_image(512, 512)
    path = write_pyramid_tiff(tmp_path / "broken.tif", image, mpp=0.5, downsamples=(1, 4))
    with open_slide(path) as slide:
        grid = tile_slide(slide, tile_size=128)

    corrupt_tiff_tiles(path, range(4))
    with open_slide(path) as slide:
        with pytest.raises(SlideError, match=r"None of the \d+ tiles of slide .*broken\.tif"):
            list(iter_tile_batches(slide, grid))


def test_corrupt_block_blank_in_mask(tmp_path):
    image = make_tissue_image(1024, 1024)
    path = write_pyramid_tiff(tmp_path / "patchy.tif", image, mpp=0.5, downsamples=(1, 4))
    corrupt_tiff_tiles(path, [5])
    with open_slide(path) as slide:
        with pytest.warns(SlideReadWarning, match=r"1 of 4 parts .*patchy\.tif.* left blank"):
            grid = tile_slide(slide)
    assert grid.n_tiles > 0
    assert [256, 256] not in grid.coords.tolist()


# --- bad input -------------------------------------------------------------


def test_all_white_image(tmp_path):
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(248, 3, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "blank.png"
    Image.fromarray(pixels).save(path)
    with open_slide(path, mpp=0.5) as slide:
        with pytest.raises(NoTissueError, match=r"blank\.png.*save_tiling_qc"):
            tile_slide(slide)


def test_image_smaller_than_tile(tmp_path):
    path = tmp_path / "thumb.png"
    Image.fromarray(make_tissue_image(100, 120)).save(path)
    with open_slide(path, mpp=0.5) as slide:
        with pytest.raises(SlideError, match=r"thumb\.png.*120 x 100 px.*smaller than one tile"):
            tile_slide(slide)


def test_tile_size_larger_than_slide(cmu_slide):
    with open_slide(cmu_slide) as slide:
        with pytest.raises(SlideError, match=r"cmu-1-small-region.*Use a smaller tile_size"):
            tile_slide(slide, tile_size=4096)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"tile_size": 0}, "tile_size must be an int >= 1"),
        ({"tile_size": 25.5}, "tile_size must be an int"),
        ({"target_mpp": -0.5}, "target_mpp must be a number"),
        ({"min_tissue_fraction": 1.5}, r"min_tissue_fraction must be a number >= 0.0 and <= 1.0"),
        ({"max_tiles": 0}, "max_tiles must be an int >= 1 or None"),
        ({"min_contrast": float("nan")}, "min_contrast must be a number"),
    ],
)
def test_tile_slide_invalid_params(cmu_slide, params, message):
    with open_slide(cmu_slide) as slide:
        with pytest.raises(ValueError, match=message):
            tile_slide(slide, **params)


def test_tile_slide_rejects_path(cmu_slide):
    with pytest.raises(TypeError, match=r"open_slide\(\.\.\.\)"):
        tile_slide(cmu_slide)


def test_edge_tiles_padded(tmp_path):
    image = make_tissue_image(500, 600)
    image[:] = np.where(image == 245, 150, image).astype(np.uint8)
    image[..., 0] = 210
    path = tmp_path / "edges.png"
    Image.fromarray(image).save(path)
    with open_slide(path, mpp=0.5) as slide:
        grid = tile_slide(slide, min_contrast=0.0)
        tiles = np.concatenate([t for t, _ in iter_tile_batches(slide, grid)])
    edge = grid.coords[:, 0] == 512
    assert edge.any()
    assert (tiles[edge][:, :, 88:] == 255).all()
    assert (tiles[edge][:, :, :88] != 255).any()


# --- geometry, mask and QC -------------------------------------------------


@pytest.mark.parametrize(
    "slide_mpp, downsamples, expected",
    [
        (0.499, (1.0,), (0, 256, 256)),
        (0.25, (1.0, 4.0), (0, 512, 512)),
        (0.25, (1.0, 2.0005, 4.001), (1, 256, 512)),
        (10 / 22.6, (1.0, 4.0), (0, 289, 289)),
        (0.69, (1.0,), (0, 186, 186)),
        (0.125, (1.0, 4.0, 16.0), (1, 256, 1024)),
    ],
)
def test_choose_read_geometry(slide_mpp, downsamples, expected):
    assert choose_read_geometry(slide_mpp, downsamples, target_mpp=0.5, tile_size=256) == expected


def test_otsu_threshold_bimodal():
    values = np.concatenate([np.full(100, 50.0), np.full(300, 200.0)])
    threshold = otsu_threshold(values)
    assert 50 < threshold <= 200


def test_detect_tissue_synthetic():
    image = make_tissue_image(200, 300)
    mask = detect_tissue(image)
    assert mask[100, 150]
    assert not mask[5, 5]
    assert mask[40:160, 60:240].mean() > 0.95
    assert mask.mean() < 0.4


def test_detect_tissue_ignores_black_border():
    image = make_tissue_image(200, 300)
    image[:, :20] = 0
    mask = detect_tissue(image)
    assert not mask[:, :20].any()


def test_detect_tissue_blank_glass():
    # Scanner noise on glass is mostly brightness, with a little colour.
    rng = np.random.default_rng(1)
    brightness = rng.normal(238, 4, (100, 100, 1))
    colour = rng.normal(0, 1.5, (100, 100, 3))
    glass = np.clip(brightness + colour, 0, 255).astype(np.uint8)
    assert not detect_tissue(glass).any()


def test_detect_tissue_rejects_bad_array():
    with pytest.raises(ValueError, match=r"uint8 array of shape \(height, width, 3\)"):
        detect_tissue(np.zeros((10, 10), dtype=np.uint8))


def test_save_tiling_qc(cmu_slide, tmp_path):
    with open_slide(cmu_slide) as slide:
        grid = tile_slide(slide)
        written = save_tiling_qc(slide, grid, tmp_path / "qc.png")
        picture = render_tiling_qc(slide, grid)
    with Image.open(written) as image:
        assert image.format == "PNG"
        assert image.size == grid.tissue_mask.shape[::-1]
    outline = (picture == (20, 60, 220)).all(axis=2)
    assert outline.any()


def test_no_warning_on_clean_read(cmu_slide):
    with open_slide(cmu_slide) as slide:
        grid = tile_slide(slide, max_tiles=4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            list(iter_tile_batches(slide, grid))


def test_corrupt_block_with_reader_threads(tmp_path):
    import dataclasses
    import threading

    image = make_tissue_image(1024, 1024)
    path = write_pyramid_tiff(tmp_path / "shared.tif", image, mpp=0.5, downsamples=(1, 4))
    with open_slide(path) as slide:
        grid = tile_slide(slide, tile_size=128)
    corrupt_tiff_tiles(path, [5, 6])

    counts, errors = [], []

    def read_share(slide, share):
        try:
            counts.append(sum(len(t) for t, _ in iter_tile_batches(slide, share, batch_size=4)))
        except Exception as exc:  # any error here is the failure under test
            errors.append(exc)

    # Warning filters are process-wide, so they are set once around the threads.
    with open_slide(path) as slide, warnings.catch_warnings():
        warnings.simplefilter("ignore", SlideReadWarning)
        shares = [dataclasses.replace(grid, coords=grid.coords[i::2]) for i in range(2)]
        threads = [threading.Thread(target=read_share, args=(slide, s)) for s in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert 0 < sum(counts) < grid.n_tiles
