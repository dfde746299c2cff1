"""Model choices of the CLI and the demo, and predictive distributions."""

import logging
import warnings

import numpy as np

from ._errors import CLIError, check_parameters

logger = logging.getLogger(__name__)

MODEL_CHOICES = ("rnafm", "ridge", "he2rna", "trnasformer", "sequoia")
TORCH_MODELS = {
    "rnafm": "RNAFlowRegressor",
    "he2rna": "HE2RNARegressor",
    "trnasformer": "TRNAsformerRegressor",
    "sequoia": "SequoiaRegressor",
}
# Regressor parameter -> the option of 'skrnafm fit' that sets it, for error
# messages; other parameters come from --param NAME=VALUE.
REGRESSOR_OPTIONS = {
    "n_tokens": "--n-clusters",
    "pathways": "--pathways",
    "max_epochs": "--max-epochs",
    "batch_size": "--batch-size",
    "learning_rate": "--learning-rate",
    "alpha": "--alpha",
    "device": "--device",
    "random_state": "--random-state",
}


def parse_pathways(value):
    """Turn the ``--pathways`` option into the regressor's ``pathways`` value."""
    if value is None or value.lower() in {"none", "learned"}:
        return None
    return value


def check_pathways(value, genes):
    """Resolve ``--pathways`` against the target genes once, before any training.

    GeneSetWarnings (target genes in no set) are shown here, once; the
    caller silences the same warnings in the fits that follow.

    Parameters
    ----------
    value : str
        A bundled collection name or a .gmt or .json path.
    genes : list of str
        The target gene symbols.

    Raises
    ------
    CLIError
        When the file is missing or unreadable, or no set matches a gene.
    """
    from pathlib import Path

    from ..exceptions import GeneSetWarning
    from ..pathways import list_bundled_collections, resolve_gene_sets

    bundled = list_bundled_collections()
    fallback = "or pass --pathways none to learn gene groups from the training targets"
    if value not in bundled and not Path(value).expanduser().is_file():
        raise CLIError(
            f"--pathways {value!r} is neither a bundled collection ({', '.join(bundled)}) nor "
            f"an existing .gmt or .json file; check the path, {fallback}"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GeneSetWarning)
        try:
            index = resolve_gene_sets(value, list(genes), len(genes))
        except (OSError, ValueError) as exc:
            raise CLIError(f"--pathways {value!r} cannot be read: {exc}") from exc

    if index.n_sets == 0:
        raise CLIError(
            f"--pathways {value!r}: no gene set matched the {len(genes)} genes of --reference "
            f"(first: {', '.join(genes[:3])}); use the same gene symbols in both, {fallback}"
        )
    for item in caught:
        warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    return index


def parse_params(items):
    """Parse ``NAME=VALUE`` strings; values are read as Python literals when possible."""
    import ast

    params = {}
    for item in items or ():
        name, sep, raw = item.partition("=")
        if not sep or not name.isidentifier():
            raise CLIError(f"--param {item!r} must look like NAME=VALUE, for example hidden_dim=128")
        try:
            params[name] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[name] = raw
    return params


def build_pipeline(
    model,
    *,
    n_clusters,
    pathways="go_molecular_function",
    max_epochs=None,
    batch_size=None,
    learning_rate=None,
    alpha=1.0,
    device="auto",
    random_state=0,
    verbose=0,
    extra_params=None,
):
    """Build the pipeline ``SuperTilePooler -> regressor`` for a model name.

    Parameters
    ----------
    model : {'rnafm', 'ridge', 'he2rna', 'trnasformer', 'sequoia'}
        The regressor. 'ridge' standardizes the pooled features first.
    n_clusters : int
        Super-tiles per slide.
    pathways : str or None
        Gene sets for 'rnafm'; None learns gene groups from the targets.
    max_epochs, batch_size, learning_rate : int, int, float or None
        Training settings of the torch models; None keeps their defaults.
    alpha : float
        Ridge penalty.
    device : str
    random_state : int
    verbose : int
    extra_params : dict, default=None
        More constructor arguments of the regressor.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline

    Raises
    ------
    CLIError
        When a parameter value is invalid, naming the option that set it.
    """
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..features import SuperTilePooler

    if model not in MODEL_CHOICES:
        raise CLIError(f"model must be one of {', '.join(MODEL_CHOICES)}; got {model!r}")
    pooler = SuperTilePooler(n_clusters=n_clusters, random_state=random_state)
    check_parameters(pooler, {"n_clusters": "--n-clusters", "random_state": "--random-state"})
    extra_params = dict(extra_params or {})

    if model == "ridge":
        ridge = Ridge(alpha=alpha)
        _check_known_parameters(ridge, extra_params)
        ridge.set_params(**extra_params)
        check_parameters(ridge, REGRESSOR_OPTIONS)
        regressor = make_pipeline(StandardScaler(), ridge)
        return Pipeline([("pool", pooler), ("regressor", regressor)])

    from .. import estimators

    cls = getattr(estimators, TORCH_MODELS[model])
    params = {
        "n_tokens": n_clusters,
        "device": device,
        "random_state": random_state,
        "verbose": verbose,
    }
    for name, value in (
        ("max_epochs", max_epochs),
        ("batch_size", batch_size),
        ("learning_rate", learning_rate),
    ):
        if value is not None:
            params[name] = value
    if model == "rnafm":
        params["pathways"] = pathways
    params.update(extra_params)
    _check_known_parameters(cls(), params)
    regressor = cls(**params)
    check_parameters(regressor, REGRESSOR_OPTIONS)
    return Pipeline([("pool", pooler), ("regressor", regressor)])


def _check_known_parameters(estimator, params):
    """Raise a CLIError naming any entry of ``params`` that ``estimator`` does not take."""
    valid = estimator.get_params()
    unknown = set(params) - set(valid)
    if unknown:
        raise CLIError(f"{type(estimator).__name__} has no parameter {sorted(unknown)!r}; valid: {sorted(valid)!r}")


def predict_distribution(pipeline, X, *, n_samples=32, level=0.9, random_state=0):
    """Predict the mean and, when the model can sample, the predictive spread.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted ``SuperTilePooler -> regressor`` pipeline.
    X : list of TileEmbeddings
    n_samples : int
        Posterior draws per slide for models with ``sample_predict``.
    level : float
        Central interval probability, for example 0.9 for the 5%-95% interval.
    random_state : int

    Returns
    -------
    result : dict
        ``mean``, ``std``, ``lower``, ``upper``: float arrays of shape
        (n_slides, n_genes), NaN for ``std`` and the bounds when the model
        cannot sample; ``draws``: array of shape (n_samples, n_slides,
        n_genes) or None.
    """
    features = pipeline[:-1].transform(X)
    regressor = pipeline[-1]

    if not hasattr(regressor, "sample_predict"):
        mean = np.asarray(regressor.predict(features), dtype=np.float32)
        if mean.ndim == 1:
            mean = mean[:, None]
        nan = np.full_like(mean, np.nan)
        return {"mean": mean, "std": nan, "lower": nan, "upper": nan.copy(), "draws": None}

    draws = sample_draws(regressor, features, n_samples=n_samples, random_state=random_state)
    mean = draws.mean(axis=0)
    std = draws.std(axis=0, ddof=1) if n_samples > 1 else np.zeros_like(mean)
    lower, upper = normal_interval(mean, std, level)
    return {"mean": mean, "std": std, "lower": lower, "upper": upper, "draws": draws}


def normal_interval(mean, std, level):
    """Return ``mean -+ q * std`` with q the standard normal quantile of ``level``.

    This is how :meth:`RNAFlowRegressor.predict_interval` forms intervals from
    its calibrated draws; empirical quantiles of a few dozen draws would be
    noisier in the tails.
    """
    from scipy.stats import norm

    q = float(norm.ppf(0.5 + level / 2.0))
    return mean - q * std, mean + q * std


def fit_pipeline(pipeline, X, Y, genes, groups=None):
    """Fit a pipeline with targets as a DataFrame, so gene sets match by name.

    ``groups`` reaches the regressor's ``fit`` when it takes them, where the
    torch regressors carve their validation split by group.
    """
    import inspect

    import pandas as pd

    targets = pd.DataFrame(np.asarray(Y), columns=list(genes))
    params = {}
    regressor = pipeline[-1]
    if groups is not None and "groups" in inspect.signature(regressor.fit).parameters:
        params[f"{pipeline.steps[-1][0]}__groups"] = np.asarray(groups)
    return pipeline.fit(X, targets, **params)


def sample_draws(regressor, features, *, n_samples, random_state):
    """Return ``sample_predict`` draws as float32 (n_samples, n_slides, n_genes)."""
    draws = np.asarray(
        regressor.sample_predict(features, n_samples=n_samples, random_state=random_state),
        dtype=np.float32,
    )
    if draws.ndim == 2:
        draws = draws[:, :, None]
    return draws
