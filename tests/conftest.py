"""Fixtures shared by the whole test suite.

The real data lives outside the repository. ``SKRNAFM_DATA`` points at it;
without that variable the tests look for ``../shared/data`` beside the
project root. Tests that need the data skip with the path they tried, so a
missing data folder is visible in the pytest summary and never silent.
"""

import os
from pathlib import Path

# The suite fits many tiny networks. On a 2-core machine one intra-op thread
# per process was several times faster than two contending threads, and
# `make test` runs two pytest workers. Subprocesses (examples, CLI) inherit
# the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _data_root():
    env = os.environ.get("SKRNAFM_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (PROJECT_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir():
    """Return the folder with the real test data, or skip with the reason."""
    root = _data_root()
    if not root.is_dir():
        pytest.skip(
            f"real data folder not found at {root}; set SKRNAFM_DATA to the "
            "folder that holds slides/, her2st/, tcga/ and pathways/"
        )
    return root


def _data_file(data_dir, *parts):
    path = data_dir.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"data file not found: {path}")
    return path


@pytest.fixture(scope="session")
def cmu_slide(data_dir):
    """Aperio SVS at 20x with resolution metadata (OpenSlide's CC0 test slide)."""
    return _data_file(data_dir, "slides", "cmu-1-small-region.svs")


@pytest.fixture(scope="session")
def tcga_slide(data_dir):
    """TCGA frozen section without any resolution metadata."""
    return _data_file(data_dir, "slides", "tcga-cr-7395-01a-01-ts1.svs")


@pytest.fixture(scope="session")
def kidney_tiff(data_dir):
    """Plain single-page TIFF that OpenSlide refuses."""
    return _data_file(data_dir, "slides", "kidney-48-5.tif")


@pytest.fixture(scope="session")
def her2st_dir(data_dir):
    """HER2ST spatial transcriptomics sections (images, counts, spot tables)."""
    return _data_file(data_dir, "her2st")


@pytest.fixture(scope="session")
def tcga_dir(data_dir):
    """TCGA/CPTAC per-gene statistics, gene list and reference CSV."""
    return _data_file(data_dir, "tcga")


@pytest.fixture(scope="session")
def go_mf_json(data_dir):
    """GO molecular-function gene sets as indices into the TCGA gene list."""
    return _data_file(data_dir, "pathways", "go_molecular_function_gene_indices.json")
