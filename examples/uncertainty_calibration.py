"""Predictive uncertainty of RNA-FM: draws, intervals and a calibration check.

``RNAFlowRegressor`` is generative: every noise draw integrated through the
learned velocity field is one sample of a slide's expression profile.
``sample_predict`` returns the draws, ``predict(return_std=True)`` their mean
and standard deviation and ``predict_interval`` central intervals. An
interval is useful only when it is calibrated: a 90% interval should hold
the measured value about 90% of the time on held-out slides.

The cohort is semi-synthetic (``make_synthetic_cohort``): real TCGA-BRCA
per-gene statistics, heteroscedastic noise and bimodal genes, and its true
predictive distribution is known, so the model's coverage can be set
against the coverage of the true distribution's own intervals.

Run:  python examples/uncertainty_calibration.py [--quick]
Writes uncertainty_calibration.png into --out.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.model_selection import GroupShuffleSplit  # noqa: E402

from _common import parse_args  # noqa: E402
from skrnafm.datasets import SyntheticTruth, make_synthetic_cohort  # noqa: E402
from skrnafm.estimators import RNAFlowRegressor  # noqa: E402
from skrnafm.metrics import crps_ensemble, gaussian_interval, interval_coverage  # noqa: E402

args = parse_args(__doc__.splitlines()[0], default_out="skrnafm_reports/examples")
n_patients, n_genes, epochs = (40, 50, 5) if args.quick else (200, 300, 60)

cohort = make_synthetic_cohort(n_patients, n_genes=n_genes, data_home=args.data_home,
                               random_state=0)
train, test = next(GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0)
                   .split(cohort.X, groups=cohort.groups))
Y_train, Y_test = cohort.Y.iloc[train], cohort.Y.to_numpy()[test]

# Quick mode learns gene groups from the targets: a much smaller network
# than the 380 GO gene sets. fp32, because bf16 autocast (what
# precision="auto" picks on CPUs with native bf16) is slower for a network
# this small.
model = RNAFlowRegressor(pathways=None if args.quick else "go_molecular_function",
                         n_tokens=cohort.n_tokens, hidden_dim=32, depth=2, n_heads=4,
                         max_epochs=epochs, learning_rate=1e-3, n_samples=32, precision="fp32",
                         random_state=0)
model.fit(cohort.X[train], Y_train, groups=cohort.groups[train])
print(f"trained {model.n_epochs_} epochs; validation coverage of 90% intervals "
      f"{model.validation_coverage_:.2f} before and {model.calibrated_coverage_:.2f} after "
      "recalibration")

draws = model.sample_predict(cohort.X[test], n_samples=32, random_state=1)
mean, std = draws.mean(axis=0), draws.std(axis=0, ddof=1)
print(f"draws: {draws.shape} (n_samples, n_slides, n_genes); "
      f"CRPS {crps_ensemble(Y_test, draws):.3f}")

# Coverage two ways: the fraction of held-out values inside the intervals
# (what a user can measure), and the probability mass of the true
# distribution inside them (known only for synthetic data, and less noisy).
truth = cohort.truth
test_truth = SyntheticTruth(truth.base_mean[test], truth.noise_std[test], truth.subtype_shift,
                            truth.subtype_probability[test])
levels = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
observed, expected = [], []
for level in levels:
    lower, upper = gaussian_interval(mean, std, level=level)
    observed.append(interval_coverage(Y_test, lower, upper)[0])
    expected.append(float(test_truth.interval_coverage(lower, upper).mean()))
print("nominal             " + " ".join(f"{v:5.2f}" for v in levels))
print("observed            " + " ".join(f"{v:5.2f}" for v in observed))
print("true-distribution   " + " ".join(f"{v:5.2f}" for v in expected))

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.3))
left.plot([0, 1], [0, 1], "--", color="0.5", lw=0.8, label="perfect calibration")
left.plot(levels, observed, "o-", label="RNA-FM, held-out values inside")
left.plot(levels, expected, "s:", label="RNA-FM, true probability inside")
left.set_xlabel("nominal coverage")
left.set_ylabel("observed coverage on held-out slides")
left.legend()

gene = int(np.argmax(Y_test.std(axis=0)))
order = np.argsort(Y_test[:, gene])
lower, upper = gaussian_interval(mean[:, gene], std[:, gene], level=0.9)
right.errorbar(np.arange(len(order)), mean[order, gene],
               yerr=[mean[order, gene] - lower[order], upper[order] - mean[order, gene]],
               fmt="o", ms=3, lw=0.7, label="prediction, 90% interval")
right.plot(np.arange(len(order)), Y_test[order, gene], "k.", label="measured")
right.set_xlabel("held-out slides, sorted by measured value")
right.set_ylabel(f"{cohort.gene_names[gene]} log2(FPKM-UQ + 1)")
right.legend()
fig.tight_layout()
out = args.out / "uncertainty_calibration.png"
fig.savefig(out, dpi=110)
print(f"figure written to {out}")
