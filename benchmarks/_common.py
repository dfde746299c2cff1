"""Shared pieces of the accuracy benchmarks: models, fold metrics, report pages.

Every benchmark fits each model on the training groups of a fold and
scores it on the held-out group only. Nothing is tuned on held-out data:
Ridge picks its penalty by internal cross-validation on the training rows,
and the torch models use their own validation split carved from the
training rows.
"""

import datetime
import inspect
import os
import platform
import time

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GroupKFold, cross_val_predict

from skrnafm.metrics import (
    crps_ensemble,
    crps_gaussian,
    gaussian_interval,
    interval_coverage,
    pearson_per_gene,
    rmse_per_gene,
    top_k_summary,
)

RIDGE_ALPHAS = np.logspace(-2, 5, 15)
INTERVAL_LEVEL = 0.9

# Metric key -> column header of the report tables.
COLUMNS = {
    "mean_r_all": "mean r (all genes)",
    "mean_r_top1000_expressed": "mean r (1,000 most expressed)",
    "top100_test_ranked": "top-100 r, test-ranked",
    "top100_honest": "top-100 r, honest",
    "top1000_test_ranked": "top-1000 r, test-ranked",
    "top1000_honest": "top-1000 r, honest",
    "rmse": "RMSE",
    "coverage90": "90% coverage",
    "crps": "CRPS",
    "fit_seconds": "fit s",
    "predict_seconds": "predict s",
}


class RidgeWithSpread:
    """Ridge regression with a Gaussian predictive spread per gene.

    The penalty is chosen by efficient leave-one-out cross-validation on
    the training rows. The spread of gene g is the root-mean-square error
    of out-of-fold predictions on the training rows (grouped folds), so it
    is an honest estimate of the test error rather than the smaller
    in-sample residual.
    """

    def __init__(self, n_inner_folds=5):
        self.n_inner_folds = n_inner_folds

    def fit(self, X, Y, groups):
        self.model_ = RidgeCV(alphas=RIDGE_ALPHAS).fit(X, Y)
        n_folds = min(self.n_inner_folds, len(np.unique(groups)))
        inner = RidgeCV(alphas=RIDGE_ALPHAS)
        out_of_fold = cross_val_predict(inner, X, Y, groups=groups, cv=GroupKFold(n_folds))
        self.spread_ = np.sqrt(np.mean((Y - out_of_fold) ** 2, axis=0))
        self.gene_validation_score_ = pearson_per_gene(Y, out_of_fold)
        return self

    def predict(self, X, return_std=False):
        mean = self.model_.predict(X)
        if not return_std:
            return mean
        return mean, np.broadcast_to(self.spread_, mean.shape).copy()


FLOW_NAMES = ("RNAFlowRegressor", "RNAFlowRegressor + Ridge mean")


# RNAFlowRegressor settings of both accuracy benchmarks, described by settings_lines.
# Gene groups are learned from the training targets, because the 380 overlapping
# GO sets make each CPU step several times slower.
FLOW_SETTINGS = {
    "pathways": None,
    "hidden_dim": 32,
    "depth": 2,
    "n_heads": 4,
    "learning_rate": 1e-3,
    "solver": "midpoint",
    "n_steps": 4,
}


def flow_variants(names, **params):
    """Return the RNAFlowRegressor rows in ``names``, plain and with a Ridge mean.

    ``params`` are added to :data:`FLOW_SETTINGS`.
    """
    from skrnafm.estimators import RNAFlowRegressor

    params = {**FLOW_SETTINGS, **params}
    models = {}
    if "rnaflow" in names:
        models[FLOW_NAMES[0]] = RNAFlowRegressor(**params)
    if "rnaflow_ridge" in names:
        models[FLOW_NAMES[1]] = RNAFlowRegressor(mean_estimator=RidgeCV(alphas=RIDGE_ALPHAS), **params)
    return models


def fit_predict(model, X_train, Y_train, groups_train, X_test, *, n_draws):
    """Fit ``model`` and return its test prediction and timings.

    Returns a dict with ``mean`` (n_test, n_genes), ``ranking_scores``
    (training-only per-gene r, or None), ``fit_seconds`` and
    ``predict_seconds``. A model with ``sample_predict`` adds ``draws``
    (n_draws, n_test, n_genes). A model whose ``predict`` accepts
    ``return_std`` adds ``std`` instead.
    """
    start = time.perf_counter()
    if "groups" in inspect.signature(model.fit).parameters:
        model.fit(X_train, Y_train, groups=groups_train)
    else:
        model.fit(X_train, Y_train)
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = {}
    if hasattr(model, "sample_predict"):
        draws = np.asarray(model.sample_predict(X_test, n_samples=n_draws), dtype=np.float64)
        result["draws"] = draws
        result["mean"] = draws.mean(axis=0)
    elif "return_std" in inspect.signature(model.predict).parameters:
        mean, std = model.predict(X_test, return_std=True)
        result["mean"] = np.asarray(mean, dtype=np.float64)
        result["std"] = np.asarray(std, dtype=np.float64)
    else:
        result["mean"] = np.asarray(model.predict(X_test), dtype=np.float64)
    result["predict_seconds"] = time.perf_counter() - start
    result["fit_seconds"] = fit_seconds

    ranking = getattr(model, "gene_validation_score_", None)
    result["ranking_scores"] = None if ranking is None else np.asarray(ranking, dtype=np.float64)
    return result


def predictive_interval(prediction, level=INTERVAL_LEVEL):
    """Return the central interval of a prediction, or None without a spread.

    A model with draws gets ``mean +- q * std`` of its draws, the interval
    ``RNAFlowRegressor.predict_interval`` returns. Empirical quantiles of a
    handful of draws would be too narrow: the 5% and 95% quantiles of 10
    draws hold only about 75% of the draws' own distribution.
    """
    if "std" in prediction:
        return gaussian_interval(prediction["mean"], prediction["std"], level)
    if "draws" in prediction:
        draws = prediction["draws"]
        return gaussian_interval(draws.mean(axis=0), draws.std(axis=0, ddof=1), level)
    return None


def score_fold(Y_test, prediction, *, expressed_order):
    """Score one fold's prediction on its held-out rows.

    ``expressed_order`` lists gene indices from most to least expressed on
    the training rows; its first 1,000 genes make the "most expressed" set.
    """
    mean = prediction["mean"]
    r = pearson_per_gene(Y_test, mean)
    row = {
        "mean_r_all": float(np.mean(r)),
        "mean_r_top1000_expressed": float(np.mean(r[expressed_order[:1000]])),
        "rmse": float(np.mean(rmse_per_gene(Y_test, mean))),
    }

    sizes = [k for k in (100, 1000) if k <= r.size]
    summary = top_k_summary(r, ranking_scores=prediction["ranking_scores"], k=sizes)
    for k in sizes:
        row[f"top{k}_test_ranked"] = float(summary.loc[f"top{k}", "mean_r_test_ranked"])
        if "mean_r_honest" in summary.columns:
            row[f"top{k}_honest"] = float(summary.loc[f"top{k}", "mean_r_honest"])

    interval = predictive_interval(prediction)
    if interval is not None:
        row["coverage90"] = float(interval_coverage(Y_test, *interval)[0])
    if "draws" in prediction:
        row["crps"] = float(crps_ensemble(Y_test, prediction["draws"]))
    elif "std" in prediction:
        row["crps"] = float(crps_gaussian(Y_test, mean, np.maximum(prediction["std"], 1e-12)))
    row["fit_seconds"] = prediction["fit_seconds"]
    row["predict_seconds"] = prediction["predict_seconds"]
    return row


def summary_table(rows, columns=COLUMNS):
    """Average fold rows per model into a DataFrame (models x metrics)."""
    frame = pd.DataFrame(rows)
    table = frame.groupby("model", sort=False).mean(numeric_only=True)
    present = [c for c in columns if c in table.columns]
    return table[present]


def to_markdown(table, columns=COLUMNS, index_name="model"):
    """Render a DataFrame as a GitHub markdown table; NaN shows as a dash."""
    headers = [index_name] + [columns.get(c, c) for c in table.columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, values in table.iterrows():
        cells = [str(name)]
        for column, value in values.items():
            if pd.isna(value):
                cells.append("–")
            elif column.endswith("seconds"):
                cells.append(f"{value:.0f}")
            else:
                cells.append(f"{value:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def limit_threads(n_threads):
    """Cap torch and BLAS/OpenMP threads; None keeps the libraries' defaults.

    On a CPU shared with other jobs, one thread per process avoids the
    busy-waiting of oversubscribed OpenMP pools, which slowed small torch
    operations about 30-fold in the runs recorded here.
    """
    if n_threads is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n_threads)
    threadpool_limits(n_threads)


def environment():
    """Describe the run: UTC date, machine, and package versions."""
    import sklearn
    import torch

    import skrnafm

    return {
        "load_before": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, no GPU used, Linux {platform.release()}",
        "python": platform.python_version(),
        "versions": (
            f"skrnafm {skrnafm.__version__}, torch {torch.__version__}, scikit-learn "
            f"{sklearn.__version__}, numpy {np.__version__}, pandas {pd.__version__}"
        ),
    }


def environment_lines(env, command, wall_seconds):
    """Describe the run for a page: command, machine and load, date, versions."""
    load_before, load_after = env["load_before"], os.getloadavg()[0]
    load = f"load average {load_before:.1f} before and {load_after:.1f} after"
    if max(load_before, load_after) >= 1.5:
        load += ": other jobs shared the cores, so times are upper bounds"
    return [
        f"* Command: `{command}`",
        f"* Machine: {env['machine']}; {load}.",
        f"* Date: {env['date']}; wall time {wall_seconds / 60:.1f} min.",
        f"* Versions: Python {env['python']}, {env['versions']}.",
    ]


def settings_lines(batch_size, max_epochs, n_draws):
    """Describe the model settings both accuracy benchmarks share, for their pages."""
    return [
        "Model settings were fixed before any benchmark run and are the same for every fold. All torch models "
        f"train with AdamW at learning rate 1e-3, batches of {batch_size}, at most {max_epochs} epochs "
        "with early stopping on their own validation split of the training groups. RNAFlowRegressor: "
        "gene groups learned from the training targets (pathways=None), hidden width 32, depth 2, "
        "4 heads, 4 midpoint steps with guidance weight 2, "
        f"{n_draws} draws per prediction. RNAFlowRegressor + Ridge mean: the same flow model with "
        "mean_estimator=RidgeCV (the Ridge row's penalty grid), so the flow learns the residuals of "
        "Ridge's out-of-fold predictions. HE2RNARegressor: defaults. TRNAsformerRegressor and "
        "SequoiaRegressor: width 64, depth 2, 4 heads. Ridge: penalty by leave-one-out CV on the "
        "training rows. These are CPU-sized settings, not the research configuration (GO sets, width "
        "256, depth 7). At that configuration a training step of 32 slides takes about 5 s in fp32 "
        "on this machine (flow section), so 60 epochs of 200 slides would take over 30 minutes per "
        "fold and model.",
    ]
