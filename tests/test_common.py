"""scikit-learn's estimator checks over every public estimator of skrnafm.

Every estimator class exported by ``skrnafm`` must have an entry in
``CHECK_CONFIGS``: small constructor arguments that keep the checks fast,
and each expected failure with the reason it is expected. A new public
estimator without an entry fails ``test_every_estimator_has_config``.
"""

import inspect

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import skrnafm

# class name -> {"params": constructor arguments, "expected_failed_checks": {check: reason}}
CHECK_CONFIGS = {
    # WSIFeaturizer reads slide files, not numeric arrays; its two_d_array
    # tag is False, so scikit-learn runs only the cloning check on it.
    # tests/test_features_featurizer.py covers clone, pickle and params.
    "WSIFeaturizer": {"params": {"max_tiles": 4}, "expected_failed_checks": {}},
    "SuperTilePooler": {
        "params": {"n_clusters": 2},
        "expected_failed_checks": {
            "check_transformer_n_iter": (
                "k-means runs per slide inside transform; fit runs no iterative "
                "solver, so there is no n_iter_ to report"
            ),
        },
    },
    "RNAFlowRegressor": {
        "params": {"hidden_dim": 8, "depth": 1, "n_heads": 2, "max_epochs": 2, "n_samples": 2},
        "expected_failed_checks": {
            "check_regressors_train": (
                "two epochs of a flow model on the check's 200 rows give R^2 below the "
                "check's 0.5; test_rnaflow_gaussian.py checks what a trained model learns"
            ),
        },
    },
    "HE2RNARegressor": {
        "params": {"hidden_dim": 8, "max_epochs": 2, "random_state": 0, "device": "cpu", "precision": "fp32"},
        "expected_failed_checks": {
            "check_regressors_train": (
                "needs R^2 > 0.5 on the check data; two training epochs are too few, "
                "learning is tested in tests/test_baselines.py"
            ),
        },
    },
    "TRNAsformerRegressor": {
        "params": {"hidden_dim": 8, "depth": 1, "n_heads": 2, "max_epochs": 2, "random_state": 0, "device": "cpu", "precision": "fp32"},
        "expected_failed_checks": {
            "check_regressors_train": (
                "needs R^2 > 0.5 on the check data; two training epochs are too few, "
                "learning is tested in tests/test_baselines.py"
            ),
        },
    },
    "SequoiaRegressor": {
        "params": {"hidden_dim": 8, "depth": 1, "n_heads": 2, "max_epochs": 2, "random_state": 0, "device": "cpu", "precision": "fp32"},
        "expected_failed_checks": {
            "check_regressors_train": (
                "needs R^2 > 0.5 on the check data; two training epochs are too few, "
                "learning is tested in tests/test_baselines.py"
            ),
        },
    },
}


def _public_estimator_classes():
    classes = []
    for name in skrnafm.__all__:
        try:
            obj = getattr(skrnafm, name)
        except (ImportError, AttributeError):
            continue
        if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
            classes.append(obj)
    return classes


ESTIMATOR_CLASSES = _public_estimator_classes()


def test_every_estimator_has_config():
    missing = [cls.__name__ for cls in ESTIMATOR_CLASSES if cls.__name__ not in CHECK_CONFIGS]
    assert missing == []


def _expected_failed_checks(estimator):
    return CHECK_CONFIGS[type(estimator).__name__]["expected_failed_checks"]


@parametrize_with_checks(
    [cls(**CHECK_CONFIGS[cls.__name__]["params"]) for cls in ESTIMATOR_CLASSES if cls.__name__ in CHECK_CONFIGS],
    expected_failed_checks=_expected_failed_checks,
)
# The checks pass plain 2-D arrays, which SuperTilePooler reads as one-tile slides and warns about.
@pytest.mark.filterwarnings("ignore:SuperTilePooler got a 2-D array:skrnafm.exceptions.SkrnafmWarning")
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
