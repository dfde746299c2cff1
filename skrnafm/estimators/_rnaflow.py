"""RNAFlowRegressor: the conditional flow-matching model as a scikit-learn regressor."""

import hashlib
import logging
import os
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import torch
from scipy.stats import norm
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, KFold, cross_val_predict
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..exceptions import CalibrationWarning
from ..flow import SOLVERS, ClassifierFreeGuidance, LinearPath, integrate
from ..pathways import GeneSetIndex, resolve_gene_sets
from ._base import BaseTorchRegressor, as_float_tensor

logger = logging.getLogger(__name__)

__all__ = ["RNAFlowRegressor"]

# Nominal coverage of the intervals used to check calibration.
_CHECK_COVERAGE = 0.9

# Observed coverage of the nominal 90% intervals outside this range counts
# as badly calibrated.
_COVERAGE_TOLERANCE = (0.75, 0.97)

# Validation rows needed to fit a per-gene spread scale.
_MIN_CALIBRATION_ROWS = 3

# Pseudo-observations that pull each gene's spread scale towards the scale
# shared by all genes, so that a small validation split gives stable scales.
_CALIBRATION_SHRINKAGE = 10.0

# Flow samples (slides x draws) per solver call, to bound memory.
_SAMPLE_ROWS = 256

# Maximum number of folds for the out-of-fold predictions of ``mean_estimator``.
_MEAN_ESTIMATOR_FOLDS = 5

# Offsets added to the fitted seed so that training, validation and
# prediction noise come from different streams.
_PREDICT_SEED_OFFSET = 2


class RNAFlowRegressor(BaseTorchRegressor):
    """Conditional flow-matching regressor from super-tile features to gene expression.

    The model of RNA-FM: a velocity network over gene-set tokens, conditioned
    on the super-tile matrix of a slide, is trained with flow matching on
    the straight path between Gaussian noise and the standardized expression
    profile. Integrating the learned velocity from noise gives draws from the
    predictive distribution of the slide's expression. ``predict`` returns
    the mean of ``n_samples`` draws, and their standard deviation when
    asked. Classifier-free guidance (``cfg_scale``) sharpens the condition.

    The condition (the encoded super-tiles) is computed once per slide and
    the null condition once per sampling call, not at every solver step.

    Parameters
    ----------
    pathways : None, str, path-like or dict, default=None
        Gene sets that group genes into tokens. None learns groups from the
        training targets (k-means on gene expression profiles), which works
        for any gene panel, even a single gene. A bundled collection name
        (``"go_molecular_function"``), a GMT or JSON path, or a dict from
        set name to gene names or column indices is matched to the target
        genes through :func:`skrnafm.pathways.resolve_gene_sets`. Genes in no
        set form a background token, with a ``GeneSetWarning`` counting them.
        Matching by name needs ``y`` as a DataFrame.
    hidden_dim : int, default=256
        Width H of the gene-set tokens and of the condition.
    depth : int, default=7
        Number of adaLN-Zero transformer blocks over the gene-set tokens.
    n_heads : int, default=8
        Attention heads in every attention layer. Must divide ``hidden_dim``.
    condition_dim : int or None, default=None
        Width of the condition transformer over the super-tiles. None uses the
        token width D when ``n_heads`` divides it, else ``hidden_dim``. A
        width below D adds a linear projection and makes the condition
        branch cheaper.
    max_epochs : int, default=100
        Maximum number of passes over the training slides.
    batch_size : int, default=32
        Slides per optimizer step.
    learning_rate : float, default=1e-4
        AdamW learning rate.
    weight_decay : float, default=0.01
        AdamW weight decay.
    solver : {"euler", "midpoint", "heun", "rk4", "dopri5"}, default="rk4"
        ODE solver for sampling. The default, 2 RK4 steps (8 velocity
        evaluations), was closer to a fine RK4 reference than the 20 Euler
        steps of the original method in ``benchmarks/bench_flow.py`` (relative
        error 0.024 against 0.059); ``solver="euler", n_steps=20`` restores
        the original.
    n_steps : int, default=2
        Steps of a fixed-step solver (``"dopri5"`` chooses its own).
    cfg_scale : float, default=2.0
        Classifier-free guidance weight w in ``v_null + w (v_cond - v_null)``.
        1 is plain conditional sampling, 0 ignores the slide.
    cond_drop_prob : float, default=0.1
        Probability that a training slide's condition is replaced by the
        learned null condition, which guidance needs.
    n_samples : int, default=10
        Posterior draws averaged by ``predict`` and used for its standard
        deviation and for ``predict_interval``. The draws start from
        antithetic noise pairs ``z, -z``, which lowers the sampling noise
        of their mean.
    mean_estimator : regressor or None, default=None
        None is the RNA-FM model: the flow learns the whole expression
        profile. A scikit-learn regressor (for example ``RidgeCV()``) makes
        the flow learn what that regressor leaves unexplained: the regressor's
        out-of-fold predictions on the training rows (by group when
        ``groups`` are given) are subtracted from the targets, the flow is
        fitted to these residuals, and every draw is the regressor's
        prediction plus a residual draw. Point accuracy then starts from the
        regressor's, and the flow supplies the spread and its non-Gaussian
        shape (see Notes). The regressor gets the features as a 2-D array
        of shape (n_slides, n_tokens * token_dim), even when ``X`` is 3-D.
        Models with a mean estimator are saved with ``joblib``;
        :meth:`save` rejects them.
    calibrate : {"auto", "none"}, default="auto"
        ``"auto"`` fits a per-gene spread scale on the validation split so
        that the draws' spread matches the validation errors (see Notes).
        ``"none"`` keeps the raw spread and raises a ``CalibrationWarning``
        when the validation coverage of 90% intervals is outside 75%-97%.
    validation_fraction : float, default=0.1
        Fraction of the training slides held out (by group when ``groups``
        are given) for early stopping, ``gene_validation_score_`` and
        calibration.
    early_stopping : bool, default=True
        Whether to stop when the validation flow-matching loss stops
        improving and keep the best epoch's weights.
    patience : int, default=10
        Epochs without improvement before stopping.
    n_tokens : "auto" or int, default="auto"
        Super-tiles K per slide; see :class:`BaseTorchRegressor`. Set it to
        the pooler's ``n_clusters`` for a plain (n_slides, K * D) array.
    ema_decay : float or None, default=0.999
        Final decay of the weight average used for sampling.
    ema_warmup_steps : int, default=10000
        Steps over which the EMA decay rises from 0.85 to ``ema_decay``.
    device : str or torch.device, default="auto"
        Device to train and sample on.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        bf16 autocast for forward passes; ``"auto"`` uses it on CUDA and on
        CPUs with native bf16 support.
    random_state : int, RandomState instance or None, default=None
        Seeds initialization, training noise and sampling noise; with an int,
        ``fit`` and ``predict`` are reproducible on one device.
    verbose : int, default=0
        1 shows a progress bar over epochs.

    Attributes
    ----------
    gene_sets_ : GeneSetIndex
        The resolved gene sets, with ``set_names``, ``members`` and
        ``background`` as column indices of ``y``.
    spread_scale_ : ndarray of shape (n_genes_,)
        Per-gene factor applied to the spread of the draws around their mean
        (ones without calibration).
    validation_coverage_ : float
        Fraction of validation (slide, gene) pairs inside the 90% interval
        before recalibration; NaN without a validation split or with
        ``n_samples=1``.
    calibrated_coverage_ : float
        The same after recalibration, measured on the same split, hence
        optimistic.
    gene_validation_score_ : ndarray of shape (n_genes_,)
        Per-gene Pearson r of ``predict`` on the validation split. With a
        ``mean_estimator``, its out-of-fold predictions stand in for its
        prediction on the validation rows.
    mean_estimator_ : regressor or None
        The ``mean_estimator`` refitted on all rows passed to ``fit``, or
        None.
    n_features_in_, feature_names_in_, n_tokens_, token_dim_, n_genes_, \
gene_names_, target_mean_, target_scale_, constant_genes_, network_, \
history_, fit_notes_, n_epochs_, best_epoch_, validation_indices_
        See :class:`BaseTorchRegressor`.

    Notes
    -----
    Calibration: for each validation slide the draws give a mean ``m`` and a
    standard deviation ``s`` per gene, and ``z = (y - m) / s``. A gene's
    relative scale is ``sqrt(mean(z ** 2))`` over the validation slides,
    shrunk towards the mean over all genes with the weight of 10 slides and
    divided by it. One factor shared by all genes then makes the nominal 90%
    intervals cover 90% of the validation values. Intervals are
    ``m +- q * s * scale`` with ``q`` the normal quantile of the coverage,
    so coverages other than 90% are only approximately calibrated.

    A ``mean_estimator`` follows the residual design of CARD (Han, Zheng and
    Zhou, "CARD: Classification and Regression Diffusion Models", NeurIPS
    2022), which conditions a diffusion model on a pretrained regressor's
    mean. Out-of-fold residuals keep the flow from learning the small
    in-sample residuals of a regressor that has seen the rows.

    Examples
    --------
    >>> import numpy as np
    >>> from skrnafm.estimators import RNAFlowRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 8))
    >>> Y = X[:, :3] + 0.1 * rng.normal(size=(40, 3))
    >>> model = RNAFlowRegressor(hidden_dim=16, depth=1, n_heads=2, max_epochs=2,
    ...                          random_state=0).fit(X, Y)
    >>> mean, std = model.predict(X[:2], return_std=True)
    >>> mean.shape, std.shape
    ((2, 3), (2, 3))
    """

    _parameter_constraints = {
        **BaseTorchRegressor._parameter_constraints,
        "pathways": [None, str, os.PathLike, Mapping, GeneSetIndex],
        "hidden_dim": [Interval(Integral, 1, None, closed="left")],
        "depth": [Interval(Integral, 0, None, closed="left")],
        "n_heads": [Interval(Integral, 1, None, closed="left")],
        "condition_dim": [Interval(Integral, 1, None, closed="left"), None],
        "solver": [StrOptions(set(SOLVERS))],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "cfg_scale": [Interval(Real, 0, None, closed="left")],
        "cond_drop_prob": [Interval(Real, 0, 1, closed="both")],
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "calibrate": [StrOptions({"auto", "none"})],
        "mean_estimator": [None, HasMethods(["fit", "predict"])],
    }

    def __init__(
        self,
        *,
        pathways=None,
        hidden_dim=256,
        depth=7,
        n_heads=8,
        condition_dim=None,
        max_epochs=100,
        batch_size=32,
        learning_rate=1e-4,
        weight_decay=0.01,
        solver="rk4",
        n_steps=2,
        cfg_scale=2.0,
        cond_drop_prob=0.1,
        n_samples=10,
        mean_estimator=None,
        calibrate="auto",
        validation_fraction=0.1,
        early_stopping=True,
        patience=10,
        n_tokens="auto",
        ema_decay=0.999,
        ema_warmup_steps=10_000,
        device="auto",
        precision="auto",
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            max_epochs=max_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            validation_fraction=validation_fraction,
            early_stopping=early_stopping,
            patience=patience,
            n_tokens=n_tokens,
            ema_decay=ema_decay,
            ema_warmup_steps=ema_warmup_steps,
            device=device,
            precision=precision,
            random_state=random_state,
            verbose=verbose,
        )
        self.pathways = pathways
        self.hidden_dim = hidden_dim
        self.depth = depth
        self.n_heads = n_heads
        self.condition_dim = condition_dim
        self.solver = solver
        self.n_steps = n_steps
        self.cfg_scale = cfg_scale
        self.cond_drop_prob = cond_drop_prob
        self.n_samples = n_samples
        self.mean_estimator = mean_estimator
        self.calibrate = calibrate

    # ------------------------------------------------------------------
    # Hooks of BaseTorchRegressor
    # ------------------------------------------------------------------

    def _prepare_targets(self, X_2d, targets, groups):
        self.mean_estimator_ = None
        self._oof_mean = None
        if self.mean_estimator is None:
            return targets

        if isinstance(self.mean_estimator, type):
            raise InvalidParameterError(
                f"mean_estimator must be an estimator instance, got the class "
                f"{self.mean_estimator.__name__}. Pass {self.mean_estimator.__name__}() instead."
            )

        n_samples = X_2d.shape[0]
        y_fit = targets[:, 0] if targets.shape[1] == 1 else targets
        n_groups = 0 if groups is None else np.unique(groups).size
        if n_groups >= 2:
            cv = GroupKFold(n_splits=min(_MEAN_ESTIMATOR_FOLDS, n_groups))
        else:
            cv = KFold(n_splits=min(_MEAN_ESTIMATOR_FOLDS, n_samples), shuffle=True, random_state=self._random_seed)

        # The folds are listed here rather than passing groups on, because scikit-learn
        # rejects a groups argument to cross_val_predict while metadata routing is on.
        folds = list(cv.split(X_2d, y_fit, groups))

        try:
            oof = cross_val_predict(clone(self.mean_estimator), X_2d, y_fit, cv=folds)
            self.mean_estimator_ = clone(self.mean_estimator).fit(X_2d, y_fit)
        except Exception as exc:  # any regressor may fail, so the error names it and its data
            reason = str(exc).rstrip(".")
            raise ValueError(
                f"mean_estimator={self.mean_estimator!r} failed on {n_samples} training slides "
                f"({len(folds)} out-of-fold fits, then one on all slides): {type(exc).__name__}: "
                f"{reason}. Fix its settings for this data or set mean_estimator=None."
            ) from exc

        self._oof_mean = np.asarray(oof, dtype=np.float64).reshape(targets.shape)
        return targets - self._oof_mean

    def _mean_prediction(self, tokens):
        """Return the mean estimator's prediction (n_slides, n_genes), or 0 without one."""
        if getattr(self, "mean_estimator_", None) is None:
            return 0.0
        prediction = self.mean_estimator_.predict(tokens.reshape(tokens.shape[0], -1))
        return np.asarray(prediction, dtype=np.float64).reshape(tokens.shape[0], self.n_genes_)

    def _validation_offset(self):
        """Return the out-of-fold mean of the validation rows, or 0 without a mean estimator."""
        return 0.0 if self._oof_mean is None else self._oof_mean[self.validation_indices_]

    def _gene_validation_score(self, tokens_valid, targets_valid):
        # Score the full prediction, not the residual: ``_predict_validation`` adds the
        # same out-of-fold mean to the residual prediction.
        return super()._gene_validation_score(tokens_valid, targets_valid + self._validation_offset())

    def _setup_fit(self, targets, targets_std):
        if self.hidden_dim % self.n_heads:
            raise ValueError(
                f"hidden_dim={self.hidden_dim!r} must be a multiple of n_heads={self.n_heads!r}."
            )
        if self.condition_dim is not None and self.condition_dim % self.n_heads:
            raise ValueError(
                f"condition_dim={self.condition_dim!r} must be a multiple of n_heads={self.n_heads!r}."
            )
        gene_names = None if self.gene_names_ is None else list(self.gene_names_)
        try:
            self.gene_sets_ = resolve_gene_sets(
                self.pathways,
                gene_names,
                self.n_genes_,
                Y=targets_std,
                random_state=self._random_seed,
            )
        except ValueError as exc:
            if gene_names is not None:
                raise
            raise ValueError(
                f"{exc}. {type(self).__name__} takes gene names from the columns of y, "
                "so pass y as a pandas DataFrame with gene symbols as column names."
            ) from exc
        if self.pathways is not None and self.gene_sets_.n_sets == 0:
            raise ValueError(
                f"No gene of pathways={self.pathways!r} matched the {self.n_genes_} target genes "
                f"(first targets: {gene_names[:3] if gene_names else 'unnamed columns'}). Use the "
                "same gene identifiers in y and in the gene sets, or pass pathways=None to learn "
                "gene groups from the targets."
            )
        self.spread_scale_ = np.ones(self.n_genes_)
        self.validation_coverage_ = np.nan
        self.calibrated_coverage_ = np.nan

    def _build_network(self, n_tokens, token_dim, n_genes):
        from ..nn import VelocityNet

        return VelocityNet(
            self.gene_sets_,
            n_tokens=n_tokens,
            token_dim=token_dim,
            hidden_dim=self.hidden_dim,
            depth=self.depth,
            n_heads=self.n_heads,
            condition_dim=self._condition_width(token_dim),
        )

    def _condition_width(self, token_dim):
        if self.condition_dim is not None:
            return self.condition_dim
        if token_dim % self.n_heads == 0:
            return None
        return self.hidden_dim

    def _training_loss(self, network, tokens, targets_std, generator):
        batch = LinearPath().sample(targets_std, generator=generator)
        drop = torch.rand(tokens.shape[0], generator=generator, device=tokens.device) < self.cond_drop_prob
        cond = network.encode_condition(tokens, drop_mask=drop)
        velocity = network(batch.x_t, batch.t, cond)
        return torch.mean((velocity.float() - batch.u) ** 2)

    def _validation_loss(self, network, tokens, targets_std, generator):
        # Validation measures the conditional fit, so no condition is dropped.
        batch = LinearPath().sample(targets_std, generator=generator)
        velocity = network(batch.x_t, batch.t, network.encode_condition(tokens))
        return torch.mean((velocity.float() - batch.u) ** 2)

    def _predict_standardized(self, network, tokens):
        seed = self._random_seed + _PREDICT_SEED_OFFSET
        return self._sample_standardized(network, tokens.cpu(), self.n_samples, seed).mean(dim=0).to(tokens.device)

    def _after_fit(self, tokens_valid, targets_valid):
        self._validation_prediction = None
        if tokens_valid.shape[0] == 0:
            return
        draws = self._draw(tokens_valid, self.n_samples, seed=None, calibrated=False)
        self._validation_prediction = draws.mean(axis=0)
        self._fit_calibration(draws, targets_valid)

    def _predict_validation(self, tokens):
        prediction, self._validation_prediction = self._validation_prediction, None
        if prediction is None or prediction.shape[0] != tokens.shape[0]:
            prediction = self._draw(tokens, self.n_samples, seed=None).mean(axis=0)
        return prediction + self._validation_offset()

    def _fitted_arrays(self):
        arrays = super()._fitted_arrays()
        members = self.gene_sets_.members
        arrays["gene_set_members"] = (
            np.concatenate(members).astype(np.int64) if members else np.zeros(0, np.int64)
        )
        arrays["gene_set_offsets"] = np.cumsum([0] + [len(m) for m in members]).astype(np.int64)
        arrays["gene_set_background"] = np.asarray(self.gene_sets_.background, dtype=np.int64)
        arrays["spread_scale_"] = self.spread_scale_
        return arrays

    def _fitted_metadata(self):
        metadata = super()._fitted_metadata()
        metadata["gene_sets"] = {
            "set_names": [str(name) for name in self.gene_sets_.set_names],
            "unmatched": _jsonable(self.gene_sets_.unmatched),
            "source": str(self.gene_sets_.source),
        }
        metadata["validation_coverage_"] = float(self.validation_coverage_)
        metadata["calibrated_coverage_"] = float(self.calibrated_coverage_)
        return metadata

    def _restore_fitted(self, arrays, metadata):
        super()._restore_fitted(arrays, metadata)
        self.mean_estimator_ = None
        offsets = arrays["gene_set_offsets"]
        flat = arrays["gene_set_members"]
        members = [flat[offsets[i] : offsets[i + 1]].astype(np.int64) for i in range(len(offsets) - 1)]
        info = metadata["gene_sets"]
        self.gene_sets_ = GeneSetIndex(
            set_names=info["set_names"],
            members=members,
            background=arrays["gene_set_background"].astype(np.int64),
            n_genes=self.n_genes_,
            unmatched=info["unmatched"],
            source=info["source"],
        )
        self.spread_scale_ = np.asarray(arrays["spread_scale_"], dtype=np.float64)
        self.validation_coverage_ = metadata["validation_coverage_"]
        self.calibrated_coverage_ = metadata["calibrated_coverage_"]

    # ------------------------------------------------------------------
    # Public prediction API
    # ------------------------------------------------------------------

    def fit(self, X, y, groups=None):
        """Fit the flow-matching model.

        Parameters
        ----------
        X : array-like of shape (n_slides, n_tokens * token_dim) or (n_slides, n_tokens, token_dim)
            Super-tile features, for example from ``SuperTilePooler``.
        y : array-like of shape (n_slides, n_genes) or (n_slides,)
            Expression targets such as log2(TPM + 1). A DataFrame keeps its
            column names in ``gene_names_`` and lets ``pathways`` match genes
            by name.
        groups : array-like of shape (n_slides,), default=None
            Group labels such as patient ids; neither the validation split
            nor the folds of a ``mean_estimator`` separate a group.

        Returns
        -------
        self : object
            The fitted regressor.
        """
        try:
            return super().fit(X, y, groups=groups)
        finally:
            # The out-of-fold means are needed only while fitting.
            self._oof_mean = None

    def predict(self, X, return_std=False):
        """Predict expression as the mean of ``n_samples`` posterior draws.

        Parameters
        ----------
        X : array-like of shape (n_slides, n_tokens * token_dim) or (n_slides, n_tokens, token_dim)
            Super-tile features.
        return_std : bool, default=False
            Also return the per-gene standard deviation of the draws, after
            the calibration scale.

        Returns
        -------
        y_mean : ndarray of shape (n_slides, n_genes) or (n_slides,)
            Mean of the draws. The same ``X`` and ``random_state`` give the
            same result.
        y_std : ndarray of the same shape
            Standard deviation of the draws (zeros with ``n_samples=1``).
            Only when ``return_std`` is True.
        """
        draws = self.sample_predict(X)
        mean = draws.mean(axis=0)
        if not return_std:
            return mean
        std = draws.std(axis=0, ddof=1) if draws.shape[0] > 1 else np.zeros_like(mean)
        return mean, std

    def sample_predict(self, X, n_samples=None, random_state=None):
        """Draw expression profiles from the predictive distribution.

        Parameters
        ----------
        X : array-like of shape (n_slides, n_tokens * token_dim) or (n_slides, n_tokens, token_dim)
            Super-tile features.
        n_samples : int, default=None
            Draws per slide; None uses the ``n_samples`` parameter.
        random_state : int, RandomState instance or None, default=None
            Seed of the sampling noise. None uses a seed fixed at ``fit``,
            so repeated calls return the same draws.

        Returns
        -------
        draws : ndarray of shape (n_samples, n_slides, n_genes) or (n_samples, n_slides)
            Draws on the scale of the training targets, with the calibrated
            spread around their mean.
        """
        tokens = self._validate_tokens(X)
        n_samples = self.n_samples if n_samples is None else n_samples
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}.")
        seed = None
        if random_state is not None:
            seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
        draws = self._draw(tokens, int(n_samples), seed=seed) + self._mean_prediction(tokens)
        return self._format_output(draws)

    def predict_interval(self, X, coverage=0.9, n_samples=None, random_state=None):
        """Return a central predictive interval per slide and gene.

        The interval is ``mean +- q * std`` of the calibrated draws, with
        ``q`` the standard normal quantile for ``coverage``.

        Parameters
        ----------
        X : array-like of shape (n_slides, n_tokens * token_dim) or (n_slides, n_tokens, token_dim)
            Super-tile features.
        coverage : float, default=0.9
            Nominal probability that the interval contains the true value, in (0, 1).
        n_samples : int, default=None
            Draws per slide; None uses the ``n_samples`` parameter (at least 2
            are needed for a spread).
        random_state : int, RandomState instance or None, default=None
            Seed of the sampling noise, as in :meth:`sample_predict`.

        Returns
        -------
        lower, upper : ndarray of shape (n_slides, n_genes) or (n_slides,)
            Interval bounds.
        """
        if not (isinstance(coverage, Real) and 0 < coverage < 1):
            raise ValueError(f"coverage must be a float in (0, 1), got {coverage!r}.")
        draws = self.sample_predict(X, n_samples=n_samples, random_state=random_state)
        if draws.shape[0] < 2:
            raise ValueError(
                "predict_interval needs at least 2 draws per slide to measure a spread; "
                f"got n_samples={draws.shape[0]}. Pass n_samples >= 2."
            )
        mean = draws.mean(axis=0)
        half_width = norm.ppf(0.5 + coverage / 2) * draws.std(axis=0, ddof=1)
        return mean - half_width, mean + half_width

    # ------------------------------------------------------------------
    # Sampling and calibration
    # ------------------------------------------------------------------

    def _draw(self, tokens, n_samples, *, seed, calibrated=True):
        """Return raw-scale draws (n_samples, n_slides, n_genes) for float32 tokens."""
        check_is_fitted(self, "network_")
        if seed is None:
            seed = self._random_seed + _PREDICT_SEED_OFFSET
        device = self._network_device()
        network = self.network_.eval()

        with torch.no_grad(), self._autocast(device):
            tokens_t = as_float_tensor(tokens)
            draws = self._sample_standardized(network, tokens_t, n_samples, seed)
        draws = draws.numpy().astype(np.float64)

        if calibrated:
            mean = draws.mean(axis=0, keepdims=True)
            draws = mean + (draws - mean) * self.spread_scale_
        return self._unstandardize(draws)

    def _sample_standardized(self, network, tokens, n_samples, seed):
        """Integrate the guided flow from noise; return CPU float32 (n_samples, n, G).

        Each slide's noise is drawn on the CPU from a generator seeded with
        ``seed`` and a hash of the slide's features. A slide's draws thus do
        not depend on the device, the other slides in the batch or their
        order.
        """
        device = next(network.parameters()).device
        n_slides = tokens.shape[0]
        out = torch.empty(n_slides, n_samples, self.n_genes_)
        slides_per_call = max(1, _SAMPLE_ROWS // n_samples)
        null = network.null_condition(1)

        for start in range(0, n_slides, slides_per_call):
            chunk = tokens[start : start + slides_per_call]
            n_chunk = chunk.shape[0]
            noise = torch.stack([_slide_noise(row, seed, n_samples, self.n_genes_) for row in chunk])

            # The slide condition is encoded once and reused at every solver step.
            cond = network.encode_condition(chunk.to(device)).repeat_interleave(n_samples, dim=0)
            field = ClassifierFreeGuidance(network, cond, null, scale=self.cfg_scale)
            x0 = noise.reshape(n_chunk * n_samples, self.n_genes_).to(device)
            x1 = integrate(field, x0, method=self.solver, n_steps=self.n_steps)
            out[start : start + n_chunk] = x1.float().reshape(n_chunk, n_samples, -1).cpu()
        return out.transpose(0, 1)

    def _fit_calibration(self, draws, targets_valid):
        """Measure validation coverage and fit ``spread_scale_`` when asked."""
        n_valid = targets_valid.shape[0]
        if draws.shape[0] < 2:
            self.fit_notes_.append("no calibration: n_samples=1 gives no spread")
            return

        mean_std = (draws.mean(axis=0) - self.target_mean_) / self.target_scale_
        spread_std = draws.std(axis=0, ddof=1) / self.target_scale_
        truth_std = (targets_valid - self.target_mean_) / self.target_scale_
        varying = ~self.constant_genes_
        quantile = norm.ppf(0.5 + _CHECK_COVERAGE / 2)

        errors = np.abs(truth_std - mean_std)[:, varying]
        spread = np.maximum(spread_std[:, varying], 1e-12)
        self.validation_coverage_ = float(np.mean(errors <= quantile * spread))

        if self.calibrate == "none":
            low, high = _COVERAGE_TOLERANCE
            if not low <= self.validation_coverage_ <= high:
                warnings.warn(
                    f"Nominal 90% intervals of {type(self).__name__} cover "
                    f"{self.validation_coverage_:.0%} of the validation values. "
                    "Set calibrate='auto' to rescale the spread per gene.",
                    CalibrationWarning,
                    stacklevel=4,
                )
            return
        if n_valid < _MIN_CALIBRATION_ROWS:
            self.fit_notes_.append(
                f"no calibration: {n_valid} validation rows, fewer than {_MIN_CALIBRATION_ROWS}"
            )
            return

        # Genes differ by their ratio of squared error to spread (shrunk to the
        # mean over genes). One shared factor then sets the 90% coverage,
        # because z from a few draws is heavier-tailed than a normal and
        # matching the variance alone would give too wide intervals.
        squared_z = (errors / spread) ** 2
        overall = np.mean(squared_z)
        per_gene = (squared_z.sum(axis=0) + _CALIBRATION_SHRINKAGE * overall) / (n_valid + _CALIBRATION_SHRINKAGE)
        relative = np.sqrt(per_gene / overall)
        shared = np.quantile(errors / (spread * relative), _CHECK_COVERAGE) / quantile
        scale = np.ones(self.n_genes_)
        scale[varying] = shared * relative
        self.spread_scale_ = scale
        self.calibrated_coverage_ = float(np.mean(errors <= quantile * spread * scale[varying]))
        logger.info(
            "calibration: validation coverage of 90%% intervals %.3f before, %.3f after",
            self.validation_coverage_,
            self.calibrated_coverage_,
        )


def _slide_noise(tokens, seed, n_samples, n_genes):
    """Draw N(0, I) noise (n_samples, n_genes) from a seed tied to one slide's features.

    The rows come in antithetic pairs ``z, -z`` (one row is unpaired when
    ``n_samples`` is odd). Each row is still standard normal, so every draw
    is a draw from the predictive distribution. Where the flow map is close
    to affine, the two draws of a pair err in opposite directions, so their
    mean has far less sampling noise than the mean of independent draws.
    """
    digest = hashlib.blake2b(tokens.numpy().tobytes(), digest_size=8, key=str(seed).encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
    half = torch.randn((n_samples + 1) // 2, n_genes, generator=generator)
    return torch.cat([half, -half])[:n_samples]


def _jsonable(value):
    """Return ``value`` with numpy scalars and arrays turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
