"""skrnafm: bulk RNA-seq expression from H&E whole-slide images.

The package predicts genome-wide expression from slide images with a
conditional flow-matching model (RNA-FM) and wraps every step as a
scikit-learn estimator:

* :mod:`skrnafm.slide` reads slides and cuts tissue tiles,
* :mod:`skrnafm.features` encodes tiles and pools them into super-tiles,
* :mod:`skrnafm.flow` contains the flow-matching maths (path, solvers, guidance),
* :mod:`skrnafm.nn` contains the torch networks,
* :mod:`skrnafm.estimators` contains the scikit-learn regressors,
* :mod:`skrnafm.metrics`, :mod:`skrnafm.pathways` and :mod:`skrnafm.datasets`
  score models, load gene sets and load data.

Names are imported lazily, so ``import skrnafm`` stays fast and does not
load torch until a model is used.
"""

import importlib

from ._version import __version__

# Public name -> module that defines it.
_PUBLIC = {
    "open_slide": "skrnafm.slide",
    "WSIFeaturizer": "skrnafm.features",
    "SuperTilePooler": "skrnafm.features",
    "RNAFlowRegressor": "skrnafm.estimators",
    "HE2RNARegressor": "skrnafm.estimators",
    "TRNAsformerRegressor": "skrnafm.estimators",
    "SequoiaRegressor": "skrnafm.estimators",
    "make_rnafm_pipeline": "skrnafm.estimators",
}

_SUBPACKAGES = (
    "slide",
    "features",
    "flow",
    "nn",
    "estimators",
    "metrics",
    "pathways",
    "datasets",
    "cli",
)

__all__ = ["__version__", *_PUBLIC, *_SUBPACKAGES]


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"skrnafm.{name}")
    raise AttributeError(f"module 'skrnafm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
