"""Torch networks: the pathway-aware velocity network and the baselines.

These modules know nothing about scikit-learn; the estimators in
:mod:`skrnafm.estimators` build and train them.
"""

import importlib

_PUBLIC = {
    "VelocityNet": "skrnafm.nn._velocity",
    "HE2RNANet": "skrnafm.nn._baselines",
    "TRNAsformerNet": "skrnafm.nn._baselines",
    "SequoiaNet": "skrnafm.nn._baselines",
}

__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'skrnafm.nn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
