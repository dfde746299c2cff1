"""Metric tables and figures of the CLI and the demo report."""

import logging

import numpy as np

logger = logging.getLogger(__name__)

TOP_K = (20, 50, 100, 200, 500, 1000)
NOMINAL_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def metrics_report(
    Y_true, Y_pred, genes, *, std=None, lower=None, upper=None, level=0.9, ranking_scores=None
):
    """Per-gene metrics and their top-k summary.

    Parameters
    ----------
    Y_true, Y_pred : ndarray of shape (n_slides, n_genes)
    genes : list of str
    std : ndarray of shape (n_slides, n_genes), default=None
        Predictive standard deviation; all-NaN counts as absent.
    lower, upper : ndarray of shape (n_slides, n_genes), default=None
        Interval bounds. When given, their coverage is reported instead of
        that of ``Y_pred -+ q * std``.
    level : float, default=0.9
        Nominal level of the interval, for the column name and for the
        interval built from ``std``.
    ranking_scores : ndarray of shape (n_genes,), default=None
        Training-only gene scores for the honest top-k ranking.

    Returns
    -------
    gene_table : pandas.DataFrame
        One row per gene: ``gene`` and the columns of
        :func:`skrnafm.metrics.gene_metrics_table`.
    summary : pandas.DataFrame
        ``genes`` ("all", "top20", ...) and the columns of
        :func:`skrnafm.metrics.top_k_summary`, plus ``coverage`` (mean over
        genes) when ``std`` is given.
    """
    from ..metrics import gene_metrics_table, top_k_summary

    from ..metrics import interval_coverage

    def absent(array):
        return array is None or np.all(np.isnan(array))

    has_bounds = not absent(lower) and not absent(upper)
    if absent(std) or has_bounds:
        std = None
    gene_table = gene_metrics_table(
        Y_true, Y_pred, gene_names=list(genes), Y_std=std, interval_level=level
    )
    if has_bounds:
        coverage, width = interval_coverage(Y_true, lower, upper, multioutput="raw_values")
        gene_table["coverage"] = coverage
        gene_table["interval_width"] = width
    summary = top_k_summary(gene_table, ranking_scores=ranking_scores)
    if "coverage" in gene_table.columns:
        summary["coverage"] = float(gene_table["coverage"].mean())
    summary = summary.rename_axis("genes").reset_index()
    return gene_table.reset_index(), summary


def print_summary(summary):
    """Print a summary frame as an aligned table."""
    from ._table import format_table

    rows = []
    for record in summary.itertuples(index=False):
        rows.append([f"{v:.3f}" if isinstance(v, (float, np.floating)) else v for v in record])
    print(format_table(list(summary.columns), rows))


def training_gene_scores(pipeline, Y_train):
    """Return per-gene scores a fitted pipeline computed on training data only.

    The torch regressors store ``gene_validation_score_`` (Pearson r on their
    validation split). For ``RidgeCV`` with ``store_cv_results=True`` the
    score is the leave-one-out R^2 at the chosen penalty, computed with the
    variance of ``Y_train`` (the targets the pipeline was fitted on). Other
    models give None.
    """
    regressor = pipeline[-1]
    scores = getattr(regressor, "gene_validation_score_", None)
    if scores is not None:
        return np.asarray(scores, dtype=float)

    final = regressor[-1] if hasattr(regressor, "steps") else regressor
    cv_results = getattr(final, "cv_results_", None)
    if cv_results is None or getattr(final, "scoring", None) is not None:
        return None
    alphas = np.atleast_1d(final.alphas)
    best = int(np.flatnonzero(np.isclose(alphas, final.alpha_))[0])
    # cv_results_ contains squared leave-one-out errors: (n_samples, n_genes, n_alphas)
    # on the targets as given to fit.
    errors = np.asarray(cv_results)[..., best]
    if errors.ndim == 1:
        errors = errors[:, None]
    target_var = np.asarray(Y_train, dtype=float).var(axis=0)
    return 1.0 - errors.mean(axis=0) / np.maximum(target_var, 1e-12)


def coverage_curve(Y_true, draws, levels=NOMINAL_LEVELS):
    """Observed coverage of central intervals ``mean -+ q * std`` of posterior draws.

    Parameters
    ----------
    Y_true : ndarray of shape (n_slides, n_genes)
    draws : ndarray of shape (n_draws, n_slides, n_genes)
    levels : sequence of float
        Nominal probabilities of the central intervals.

    Returns
    -------
    observed : ndarray of shape (len(levels),)
        Fraction of (slide, gene) values inside each interval.
    """
    from ._models import normal_interval

    mean = draws.mean(axis=0)
    std = draws.std(axis=0, ddof=1)
    observed = []
    for level in levels:
        low, high = normal_interval(mean, std, level)
        observed.append(float(((Y_true >= low) & (Y_true <= high)).mean()))
    return np.asarray(observed)


# ---------------------------------------------------------------- demo report


def write_demo_report(out_dir, *, results, Y, genes, bulk, her2st, settings):
    """Write the demo's tables and figures and return the summary table rows.

    Returns
    -------
    report : dict
        ``header`` and ``rows`` of the printed summary table and ``files``,
        the names written into ``out_dir``.
    """
    import pandas as pd

    from ..metrics import top_k_summary

    files = []
    per_gene, summaries = [], []
    r_by_model = {}
    groups = np.asarray(bulk.groups)
    for name, result in results.items():
        table = fold_averaged_metrics(Y, result, genes, groups, level=settings["interval"])
        summary = top_k_summary(table, ranking_scores=result.get("ranking"))
        if "coverage" in table.columns:
            summary["coverage"] = float(table["coverage"].mean())
        summary = summary.rename_axis("genes").reset_index()
        table.insert(0, "model", name)
        summary.insert(0, "model", name)
        summary["cv_seconds"] = round(float(result["seconds"]), 1)
        per_gene.append(table)
        summaries.append(summary)
        r_by_model[name] = table["pearson_r"].to_numpy(dtype=float)
    pd.concat(per_gene, ignore_index=True).to_csv(out_dir / "metrics.csv", index=False)
    files.append("metrics.csv")
    summary = pd.concat(summaries, ignore_index=True)
    summary.to_csv(out_dir / "summary.csv", index=False)
    files.append("summary.csv")
    header, rows = summary_rows(summary, len(genes))

    _write_oof_predictions(out_dir / "predictions.csv", results, Y, genes, bulk)
    files.append("predictions.csv")

    import matplotlib

    matplotlib.use("Agg")
    # The figures show RNA-FM, the model with predictive intervals.
    best_model = "RNA-FM" if "RNA-FM" in results else next(iter(results))
    best = results[best_model]
    order = np.argsort(-np.nan_to_num(r_by_model[best_model], nan=-1.0), kind="stable")

    plot_pred_vs_measured(out_dir / "pred_vs_measured.png", Y, best, genes, order[:6],
                          groups=groups, r=r_by_model[best_model], model=best_model,
                          level=settings["interval"])
    files.append("pred_vs_measured.png")

    if best["draws"] is not None:
        observed = coverage_curve(Y, best["draws"])
        plot_calibration(out_dir / "calibration.png", NOMINAL_LEVELS, observed, model=best_model)
        files.append("calibration.png")

    plot_r_distribution(out_dir / "r_distribution.png", r_by_model)
    files.append("r_distribution.png")

    gene_index = int(order[0])
    plot_gene_map(out_dir / "gene_map.png", bulk=bulk, her2st=her2st, Y=Y, predicted=best["mean"],
                  gene_index=gene_index, gene=genes[gene_index], model=best_model)
    files.append("gene_map.png")
    return {"header": header, "rows": rows, "files": files}


def fold_averaged_metrics(Y, result, genes, groups, *, level):
    """Per-gene metrics within each held-out section, averaged over sections.

    Pooling the held-out predictions of all sections before computing r
    mixes in differences between sections. A model trained on the other
    sections predicts their average level, which runs against the held-out
    section's own shift, so pooled r comes out negative even for useful
    models. Each section's r across its own samples avoids that.

    Returns
    -------
    table : pandas.DataFrame
        One row per gene: ``gene``, the mean over sections of every numeric
        column of :func:`metrics_report`'s table, and ``n_sections``.
    """
    import pandas as pd

    tables = []
    for section in dict.fromkeys(groups):
        rows = groups == section
        table, _ = metrics_report(
            Y[rows], result["mean"][rows], genes, lower=result["lower"][rows],
            upper=result["upper"][rows], level=level,
        )
        tables.append(table.assign(section=section))
    stacked = pd.concat(tables, ignore_index=True)
    # p-values and FDR of separate sections do not average into a p-value.
    skip = {"gene", "section", "constant", "p_value", "q_value"}
    numeric = [c for c in stacked.columns
               if c not in skip and pd.api.types.is_numeric_dtype(stacked[c])]
    averaged = stacked.groupby("gene", sort=False)[numeric].mean().reset_index()
    averaged["n_sections"] = len(tables)
    return averaged


def summary_rows(summary, n_genes):
    """Turn the per-model summary frame into the rows of the printed table.

    "test-ranked" means the top-k genes by their own held-out r, as the
    field reports it, which is optimistic. "honest" ranks genes by a score
    the model computed on its training folds only.
    """
    ks = [k for k in (20, 100) if k < n_genes]
    header = ["model", f"mean r ({n_genes} genes)"]
    header += [f"top{k} r test-ranked" for k in ks] + [f"top{k} r honest" for k in ks]
    header += ["90% coverage", "CV seconds"]

    def cell(value):
        return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"

    rows = []
    for model, part in summary.groupby("model", sort=False):
        part = part.set_index("genes")
        row = [model, cell(part.loc["all", "mean_r_test_ranked"])]
        row += [cell(part.loc[f"top{k}", "mean_r_test_ranked"]) for k in ks]
        honest = "mean_r_honest" in part.columns
        row += [cell(part.loc[f"top{k}", "mean_r_honest"]) if honest else "-" for k in ks]
        coverage = part["coverage"].iloc[0] if "coverage" in part.columns else None
        row += [cell(coverage), f"{part['cv_seconds'].iloc[0]:.0f}"]
        rows.append(row)
    return header, rows


def _write_oof_predictions(path, results, Y, genes, bulk):
    import pandas as pd

    frames = []
    names = list(bulk.Y.index)
    for model, result in results.items():
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "sample": np.repeat(names, len(genes)),
                    "section": np.repeat(np.asarray(bulk.groups), len(genes)),
                    "gene": np.tile(genes, len(names)),
                    "measured": Y.ravel(),
                    "mean": result["mean"].ravel(),
                    "std": result["std"].ravel(),
                    "lower": result["lower"].ravel(),
                    "upper": result["upper"].ravel(),
                }
            )
        )
    pd.concat(frames, ignore_index=True).to_csv(path, index=False, float_format="%.5g")


# ---------------------------------------------------------------- figures


def plot_pred_vs_measured(path, Y, result, genes, gene_indices, *, groups, r, model, level):
    """Predicted vs measured expression of a few genes, with interval bars.

    ``r`` contains each gene's r within held-out sections, averaged over them,
    as in the summary table.
    """
    import matplotlib.pyplot as plt

    n = len(gene_indices)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    sections = sorted(set(groups))
    colors = plt.get_cmap("tab10")
    for ax, g in zip(axes.ravel(), gene_indices):
        for s_index, section in enumerate(sections):
            mask = groups == section
            y = Y[mask, g]
            m = result["mean"][mask, g]
            if not np.all(np.isnan(result["lower"][mask, g])):
                err = np.vstack([m - result["lower"][mask, g], result["upper"][mask, g] - m])
                err = np.clip(err, 0, None)
            else:
                err = None
            ax.errorbar(y, m, yerr=err, fmt="o", ms=3, lw=0.6, alpha=0.7,
                        color=colors(s_index % 10), label=section)
        low = np.nanmin([Y[:, g].min(), np.nanmin(result["mean"][:, g])])
        high = np.nanmax([Y[:, g].max(), np.nanmax(result["mean"][:, g])])
        ax.plot([low, high], [low, high], color="0.5", lw=0.8, ls="--")
        ax.set_title(f"{genes[g]}  (r = {r[g]:.2f})")
        ax.set_xlabel("measured log2(CPM + 1)")
        ax.set_ylabel("predicted")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes.ravel()[0].legend(title="held-out section", fontsize=7, title_fontsize=7)
    fig.suptitle(f"{model}: best genes, held-out predictions with {int(level * 100)}% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(path, nominal, observed, *, model):
    """Nominal vs observed coverage of the central predictive intervals."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=0.8, label="perfect calibration")
    ax.plot(nominal, observed, "o-", label=model)
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("observed coverage (held-out samples x genes)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title("Calibration of the predictive intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_r_distribution(path, r_by_model):
    """Distribution of the per-gene Pearson r of each model (a violin per model)."""
    import matplotlib.pyplot as plt

    names = list(r_by_model)
    data = [np.nan_to_num(r_by_model[n], nan=0.0) for n in names]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4.2))
    ax.violinplot(data, showmedians=True)
    ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("per-gene Pearson r\n(within held-out sections, averaged)")
    ax.set_title("Per-gene r by model")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gene_map(path, *, bulk, her2st, Y, predicted, gene_index, gene, model):
    """Measured and predicted expression of one gene over one section's H&E."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    from ..slide import open_slide

    groups = np.asarray(bulk.groups)
    # The section with the most samples gives the fullest map.
    sections, counts = np.unique(groups, return_counts=True)
    section = str(sections[np.argmax(counts)])
    mask = groups == section
    part = her2st.sections[section]

    with open_slide(part.image_path, mpp=part.mpp) as slide:
        thumb = slide.get_thumbnail(1200)
        width, height = slide.dimensions
    scale = thumb.shape[1] / width

    measured = Y[mask, gene_index]
    pred = predicted[mask, gene_index]
    norm = Normalize(vmin=float(np.nanmin([measured.min(), pred.min()])),
                     vmax=float(np.nanmax([measured.max(), pred.max()])))
    cmap = plt.get_cmap("magma")
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    for ax, values, title in ((axes[0], measured, "measured"),
                              (axes[1], pred, f"predicted by {model} (held out)")):
        ax.imshow(thumb)
        for (x, y, w, h), value in zip(bulk.bboxes[mask], values):
            ax.add_patch(Rectangle((x * scale, y * scale), w * scale, h * scale,
                                   facecolor=cmap(norm(value)), alpha=0.6, edgecolor="none"))
        ax.set_title(f"{gene} in section {section}: {title}")
        ax.axis("off")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.7,
                 label="log2(CPM + 1)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
