"""Metric tables and figures of the CLI and the demo report."""

import logging

import numpy as np

logger = logging.getLogger(__name__)

TOP_K = (20, 50, 100, 200, 500, 1000)
NOMINAL_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def metrics_report(Y_true, Y_pred, genes, *, lower=None, upper=None):
    """Per-gene metrics and their summary.

    Parameters
    ----------
    Y_true, Y_pred : ndarray of shape (n_slides, n_genes)
    genes : list of str
    lower, upper : ndarray of shape (n_slides, n_genes), default=None
        Interval bounds; all-NaN bounds count as absent.

    Returns
    -------
    gene_table : pandas.DataFrame
        One row per gene (see :func:`skrnafm.metrics.gene_metrics_table`),
        plus ``coverage`` when intervals are given.
    summary : pandas.DataFrame
        Columns ``metric`` and ``value``: mean r over all genes, over the
        top-k genes ranked by their r on these slides, and the mean
        interval coverage.
    """
    import pandas as pd

    from ..metrics import gene_metrics_table, top_k_summary

    gene_table = gene_metrics_table(Y_true, Y_pred, gene_names=list(genes))
    summary = top_k_summary(gene_table, k=[k for k in TOP_K if k <= len(genes)] or [len(genes)])
    summary = _summary_frame(summary)

    if lower is not None and upper is not None and not np.all(np.isnan(lower)):
        inside = (Y_true >= lower) & (Y_true <= upper)
        coverage = inside.mean(axis=0)
        gene_table = gene_table.copy()
        gene_table["coverage"] = coverage
        extra = pd.DataFrame({"metric": ["interval coverage"], "value": [float(coverage.mean())]})
        summary = pd.concat([summary, extra], ignore_index=True)
    return gene_table, summary


def _summary_frame(summary):
    """Bring a top-k summary into two columns: metric, value."""
    import pandas as pd

    if isinstance(summary, pd.DataFrame):
        if {"metric", "value"} <= set(summary.columns):
            return summary[["metric", "value"]].reset_index(drop=True)
        if len(summary) == 1:
            row = summary.iloc[0]
            return pd.DataFrame({"metric": [str(k) for k in row.index], "value": row.to_numpy()})
        return summary.reset_index()
    if isinstance(summary, pd.Series):
        return pd.DataFrame({"metric": [str(k) for k in summary.index], "value": summary.to_numpy()})
    items = dict(summary)
    return pd.DataFrame({"metric": [str(k) for k in items], "value": list(items.values())})


def print_summary(summary):
    """Print a summary frame as a two-column table."""
    from ._table import format_table

    rows = []
    for metric, value in zip(summary["metric"], summary["value"]):
        rows.append([metric, f"{value:.3f}" if isinstance(value, (float, np.floating)) else value])
    print(format_table(["metric", "value"], rows))


def coverage_curve(Y_true, draws, levels=NOMINAL_LEVELS):
    """Observed coverage of central intervals from posterior draws.

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
    observed = []
    for level in levels:
        alpha = (1.0 - level) / 2.0
        low = np.quantile(draws, alpha, axis=0)
        high = np.quantile(draws, 1.0 - alpha, axis=0)
        observed.append(float(((Y_true >= low) & (Y_true <= high)).mean()))
    return np.asarray(observed)


def pearson_columns(Y_true, Y_pred):
    """Pearson r of each column; constant columns give 0."""
    from ..metrics import pearson_per_gene

    return np.asarray(pearson_per_gene(Y_true, Y_pred), dtype=float)


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

    files = []
    per_gene = []
    r_by_model = {}
    for name, result in results.items():
        table, _ = metrics_report(Y, result["mean"], genes, lower=result["lower"], upper=result["upper"])
        table.insert(0, "model", name)
        per_gene.append(table)
        r_by_model[name] = pearson_columns(Y, result["mean"])
    pd.concat(per_gene, ignore_index=True).to_csv(out_dir / "metrics.csv", index=False)
    files.append("metrics.csv")

    header, rows, summary = _summary_rows(results, Y, r_by_model, genes)
    summary.to_csv(out_dir / "summary.csv", index=False)
    files.append("summary.csv")

    _write_oof_predictions(out_dir / "predictions.csv", results, Y, genes, bulk)
    files.append("predictions.csv")

    import matplotlib

    matplotlib.use("Agg")
    # The figures show RNA-FM, the model with predictive intervals.
    best_model = "RNA-FM" if "RNA-FM" in results else next(iter(results))
    best = results[best_model]
    order = np.argsort(-np.nan_to_num(r_by_model[best_model], nan=-1.0))

    plot_pred_vs_measured(out_dir / "pred_vs_measured.png", Y, best, genes, order[:6],
                          groups=np.asarray(bulk.groups), model=best_model,
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


def _summary_rows(results, Y, r_by_model, genes):
    """Build the printed table: one row per model.

    Two rankings of genes are reported. "top k expressed" takes the k genes
    with the highest mean expression, a choice that uses no prediction and
    so is honest. "top k by r" takes the k genes with the highest held-out
    r of the model itself, as papers in the field report it; it is
    optimistic, because the same samples choose and score the genes.
    """
    import pandas as pd

    ks = [k for k in (20, 100) if k < len(genes)]
    by_expression = np.argsort(-Y.mean(axis=0), kind="stable")
    header = ["model", f"mean r ({len(genes)} genes)"]
    header += [f"top{k} expressed r" for k in ks] + [f"top{k} by r" for k in ks]
    header += ["90% coverage", "CV seconds"]

    rows, records = [], []
    for name, r in r_by_model.items():
        result = results[name]
        r_clean = np.nan_to_num(r, nan=0.0)
        by_r = np.sort(r_clean)[::-1]
        record = {"model": name, "n_genes": len(genes), "mean_r": float(r_clean.mean())}
        for k in ks:
            record[f"top{k}_expressed_r"] = float(r_clean[by_expression[:k]].mean())
        for k in ks:
            record[f"top{k}_by_r"] = float(by_r[:k].mean())
        if np.all(np.isnan(result["lower"])):
            record["coverage"] = float("nan")
        else:
            inside = (Y >= result["lower"]) & (Y <= result["upper"])
            record["coverage"] = float(inside.mean())
        record["cv_seconds"] = float(result["seconds"])
        records.append(record)

        r_columns = ["mean_r"] + [f"top{k}_expressed_r" for k in ks] + [f"top{k}_by_r" for k in ks]
        cells = [name] + [f"{record[c]:.3f}" for c in r_columns]
        cells.append("-" if np.isnan(record["coverage"]) else f"{record['coverage']:.2f}")
        cells.append(f"{record['cv_seconds']:.0f}")
        rows.append(cells)
    return header, rows, pd.DataFrame.from_records(records)


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


def plot_pred_vs_measured(path, Y, result, genes, gene_indices, *, groups, model, level):
    """Predicted vs measured expression of a few genes, with interval bars."""
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
        r = np.corrcoef(Y[:, g], result["mean"][:, g])[0, 1]
        ax.set_title(f"{genes[g]}  (r = {r:.2f})")
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
    """Distribution of the per-gene Pearson r of each model."""
    import matplotlib.pyplot as plt

    names = list(r_by_model)
    data = [np.nan_to_num(r_by_model[n], nan=0.0) for n in names]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4.2))
    ax.violinplot(data, showmedians=True)
    ax.axhline(0.0, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("per-gene Pearson r (held-out samples)")
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
