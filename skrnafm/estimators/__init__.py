"""scikit-learn regressors: RNA-FM and the baselines it is compared with."""

import importlib

_PUBLIC = {
    "BaseTorchRegressor": "skrnafm.estimators._base",
    "RNAFlowRegressor": "skrnafm.estimators._rnaflow",
    "make_rnafm_pipeline": "skrnafm.estimators._pipeline",
    "load_model": "skrnafm.estimators._persistence",
    "HE2RNARegressor": "skrnafm.estimators._baselines",
    "TRNAsformerRegressor": "skrnafm.estimators._baselines",
    "SequoiaRegressor": "skrnafm.estimators._baselines",
}

__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'skrnafm.estimators' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
