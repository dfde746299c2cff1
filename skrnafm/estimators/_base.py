"""Shared scikit-learn machinery for the torch regressors of skrnafm.

:class:`BaseTorchRegressor` turns a torch network into a scikit-learn
regressor. It owns everything that is not specific to one model. That is
parameter validation, parsing X into super-tile tokens, per-gene target
standardization and the validation split. It also runs the AdamW training
loop with gradient clipping, early stopping and an exponential moving
average (EMA) of the weights, and provides per-gene validation scores,
CPU-safe pickling and the safe ``save`` format read by
:func:`skrnafm.estimators.load_model`.

A subclass implements three hooks:

* ``_build_network(n_tokens, token_dim, n_genes)`` returns the network;
* ``_training_loss(network, tokens, targets_std, generator)`` returns the
  scalar loss of one batch;
* ``_predict_standardized(network, tokens)`` returns predictions in
  standardized gene space.

and may extend ``_setup_fit``, ``_after_fit``, ``_validation_loss``,
``_fitted_arrays``, ``_fitted_metadata`` and ``_restore_fitted``.
"""

import contextlib
import copy
import logging
import math
import re
import time
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ..exceptions import SkrnafmWarning
from ..utils import progress, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["BaseTorchRegressor"]

# Column names written by SuperTilePooler: cluster k, embedding dimension d.
_POOLER_COLUMN = re.compile(r"^st(\d+)_f(\d+)$")

# Smallest training split that still leaves a validation split worth having.
_MIN_ROWS_FOR_SPLIT = 4

# A gene whose training standard deviation is below this (relative to its
# mean's magnitude) is treated as constant.
_CONSTANT_TOLERANCE = 1e-8

# EMA decay at the first optimizer step; it rises linearly to ``ema_decay``.
_EMA_START_DECAY = 0.85

# Rows per forward pass at prediction time.
_PREDICT_CHUNK = 256


class BaseTorchRegressor(RegressorMixin, BaseEstimator):
    """Base class of the torch regressors that map super-tile features to genes.

    Not used directly: subclasses such as
    :class:`~skrnafm.estimators.RNAFlowRegressor` add a network. The base
    parses ``X`` into ``K`` tokens of width ``D``, standardizes each gene on
    the training rows and carves a validation split out of them. It trains
    with AdamW, gradient clipping at 1.0, early stopping on the validation
    loss and an EMA of the weights, and predicts with the EMA weights.

    Parameters
    ----------
    max_epochs : int, default=100
        Maximum number of passes over the training rows.
    batch_size : int, default=32
        Slides per optimizer step.
    learning_rate : float, default=1e-4
        AdamW learning rate.
    weight_decay : float, default=0.01
        AdamW weight decay (decoupled).
    validation_fraction : float, default=0.1
        Fraction of the training rows held out as the validation split. The
        split drives early stopping and gives ``gene_validation_score_``.
        Rows are split by group when ``groups`` are passed to ``fit``. With
        0, or with fewer than 4 rows, there is no split and
        ``fit_notes_`` records it.
    early_stopping : bool, default=True
        Whether to stop when the validation loss has not improved for
        ``patience`` epochs and keep the weights of the best epoch. Without a
        validation split, training runs for ``max_epochs``.
    patience : int, default=10
        Epochs without improvement of the validation loss before stopping.
    n_tokens : "auto" or int, default="auto"
        Number ``K`` of tokens (super-tiles) per row. ``"auto"``: a 3-D ``X``
        gives ``K = X.shape[1]``; a DataFrame with ``SuperTilePooler`` column
        names ``st{k}_f{d}`` gives the number of clusters; otherwise ``K=1``
        and the whole row is one token. An int must divide the number of
        features; column ``k * D + d`` is token ``k``, dimension ``d``.
    ema_decay : float or None, default=0.999
        Final decay of the exponential moving average of the weights used
        for prediction. None or 0 disables the average.
    ema_warmup_steps : int, default=10000
        Optimizer steps over which the EMA decay rises linearly from 0.85 to
        ``ema_decay``.
    device : str or torch.device, default="auto"
        Device to train and predict on; ``"auto"`` picks CUDA, then MPS,
        then the CPU.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        Numeric precision of the forward passes. ``"bf16"`` runs them under
        bfloat16 autocast; ``"auto"`` uses bf16 on CUDA devices with bf16
        support and fp32 elsewhere. On a 2-core CPU with native bf16, small
        networks fitted about 5 times slower under bf16 autocast, while a
        training step of the paper-size flow network ran about 1.6 times
        faster (``benchmarks/bench_flow.py``). So ``"bf16"`` on the CPU is
        opt-in, worth it for large models. Weights and optimizer state stay
        in fp32.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialization, batch order, the validation split and
        the noise of training and prediction. An int makes ``fit`` and
        ``predict`` reproducible on a given device.
    verbose : int, default=0
        0 is silent; 1 shows a progress bar over epochs with the losses.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen in ``fit`` (``K * D``).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names of ``X``, when ``X`` was a DataFrame with string names.
    n_tokens_ : int
        Number ``K`` of tokens per row.
    token_dim_ : int
        Width ``D`` of each token.
    n_genes_ : int
        Number of target genes.
    gene_names_ : ndarray of shape (n_genes_,) or None
        Target column names when ``Y`` was a DataFrame, else None.
    target_mean_ : ndarray of shape (n_genes_,)
        Per-gene mean of the training rows.
    target_scale_ : ndarray of shape (n_genes_,)
        Per-gene standard deviation of the training rows, 1 for constant
        genes.
    constant_genes_ : ndarray of shape (n_genes_,), dtype=bool
        Genes constant on the training rows. They are predicted as that
        constant.
    network_ : torch.nn.Module
        The trained network with the EMA weights, in eval mode.
    history_ : list of dict
        One entry per epoch: ``epoch``, ``train_loss``, ``valid_loss``
        (None without a validation split), ``ema_decay``, ``seconds``.
    fit_notes_ : list of str
        Remarks about the fit, such as a skipped validation split.
    n_epochs_ : int
        Epochs run.
    best_epoch_ : int
        Epoch whose weights were kept.
    validation_indices_ : ndarray of shape (n_valid,)
        Rows of the training data held out for validation (empty without a
        split).
    gene_validation_score_ : ndarray of shape (n_genes_,)
        Per-gene Pearson r between prediction and target on the validation
        split (0 for genes constant there, NaN without a split). Rank genes
        by it to pick top-k genes without looking at test data.
    """

    _parameter_constraints = {
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": ["boolean"],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "n_tokens": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "ema_decay": [Interval(Real, 0, 1, closed="left"), None],
        "ema_warmup_steps": [Interval(Integral, 0, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions({"auto", "fp32", "bf16"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        max_epochs=100,
        batch_size=32,
        learning_rate=1e-4,
        weight_decay=0.01,
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
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.patience = patience
        self.n_tokens = n_tokens
        self.ema_decay = ema_decay
        self.ema_warmup_steps = ema_warmup_steps
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------
    # Hooks for subclasses
    # ------------------------------------------------------------------

    def _build_network(self, n_tokens, token_dim, n_genes):
        """Build the untrained network (called inside ``fit`` and on load).

        Fitted attributes set by ``_setup_fit`` (for example gene-set
        indices) are available. The returned module is moved to the device
        by the caller. Weight initialization draws from torch's global RNG,
        which the caller has seeded from ``random_state``.

        Parameters
        ----------
        n_tokens : int
            Tokens ``K`` per slide.
        token_dim : int
            Token width ``D``.
        n_genes : int
            Number of target genes.

        Returns
        -------
        network : torch.nn.Module
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _build_network")

    def _training_loss(self, network, tokens, targets_std, generator):
        """Return the scalar training loss of one batch.

        Parameters
        ----------
        network : torch.nn.Module
            The network in train mode, on the training device.
        tokens : torch.Tensor of shape (batch, n_tokens, token_dim)
            float32 super-tile tokens on the device.
        targets_std : torch.Tensor of shape (batch, n_genes)
            float32 standardized targets on the device.
        generator : torch.Generator
            Generator on the device for any noise the loss draws (noise,
            times, condition dropout), so that ``random_state`` controls it.

        Returns
        -------
        loss : torch.Tensor
            0-d tensor to minimize. Runs under the autocast context chosen
            by ``precision``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _training_loss")

    def _predict_standardized(self, network, tokens):
        """Return predictions in standardized gene space.

        Called under ``torch.no_grad``, the precision's autocast context and
        with the network in eval mode.

        Parameters
        ----------
        network : torch.nn.Module
        tokens : torch.Tensor of shape (batch, n_tokens, token_dim)

        Returns
        -------
        predictions : torch.Tensor of shape (batch, n_genes)
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _predict_standardized")

    def _validation_loss(self, network, tokens, targets_std, generator):
        """Return the validation loss of one batch (default: the training loss).

        Called under ``torch.no_grad`` with the network in eval mode and a
        generator re-seeded identically at every epoch, so that the losses
        of successive epochs are comparable.
        """
        return self._training_loss(network, tokens, targets_std, generator)

    def _setup_fit(self, targets, targets_std):
        """Prepare fitted state the network needs, before it is built.

        Parameters
        ----------
        targets : ndarray of shape (n_samples, n_genes)
            Raw targets of all rows passed to ``fit`` (float64).
        targets_std : ndarray of shape (n_train, n_genes)
            Standardized targets of the training split only.
        """

    def _prepare_targets(self, X_2d, targets, groups):
        """Return the targets the network learns; the default keeps them.

        Parameters
        ----------
        X_2d : ndarray of shape (n_samples, n_tokens * token_dim)
            Validated float32 features of all rows passed to ``fit``.
        targets : ndarray of shape (n_samples, n_genes)
            Validated raw targets (float64).
        groups : ndarray of shape (n_samples,) or None
            Group labels passed to ``fit``, with their length checked.
        """
        return targets

    def _after_fit(self, tokens_valid, targets_valid):
        """Run after training with the final weights, e.g. to calibrate.

        Parameters
        ----------
        tokens_valid : ndarray of shape (n_valid, n_tokens, token_dim)
            Validation split (zero rows when there is none).
        targets_valid : ndarray of shape (n_valid, n_genes)
            Raw validation targets.
        """

    def _predict_validation(self, tokens):
        """Return raw-scale predictions used for ``gene_validation_score_``."""
        return self._predict_tokens(tokens)

    def _fitted_arrays(self):
        """Return the fitted numpy arrays to store beside the weights."""
        arrays = {
            "target_mean_": self.target_mean_,
            "target_scale_": self.target_scale_,
            "constant_genes_": self.constant_genes_,
            "gene_validation_score_": self.gene_validation_score_,
            "validation_indices_": self.validation_indices_,
        }
        return arrays

    def _fitted_metadata(self):
        """Return JSON-serializable fitted state to store beside the weights."""
        metadata = {
            "n_features_in_": int(self.n_features_in_),
            "n_tokens_": int(self.n_tokens_),
            "token_dim_": int(self.token_dim_),
            "n_genes_": int(self.n_genes_),
            "gene_names_": None if self.gene_names_ is None else [str(g) for g in self.gene_names_],
            "feature_names_in_": (
                [str(f) for f in self.feature_names_in_] if hasattr(self, "feature_names_in_") else None
            ),
            "y_is_1d_": bool(self._y_is_1d),
            "history_": self.history_,
            "fit_notes_": list(self.fit_notes_),
            "n_epochs_": int(self.n_epochs_),
            "best_epoch_": int(self.best_epoch_),
            "random_seed_": int(self._random_seed),
        }
        return metadata

    def _restore_fitted(self, arrays, metadata):
        """Set fitted attributes from ``_fitted_arrays``/``_fitted_metadata`` output."""
        for name in ("target_mean_", "target_scale_", "gene_validation_score_"):
            setattr(self, name, np.asarray(arrays[name], dtype=np.float64))
        self.constant_genes_ = np.asarray(arrays["constant_genes_"], dtype=bool)
        self.validation_indices_ = np.asarray(arrays["validation_indices_"], dtype=np.int64)

        self.n_features_in_ = metadata["n_features_in_"]
        self.n_tokens_ = metadata["n_tokens_"]
        self.token_dim_ = metadata["token_dim_"]
        self.n_genes_ = metadata["n_genes_"]
        names = metadata["gene_names_"]
        self.gene_names_ = None if names is None else np.asarray(names, dtype=object)
        if metadata["feature_names_in_"] is not None:
            self.feature_names_in_ = np.asarray(metadata["feature_names_in_"], dtype=object)
        self._y_is_1d = metadata["y_is_1d_"]
        self.history_ = metadata["history_"]
        self.fit_notes_ = metadata["fit_notes_"]
        self.n_epochs_ = metadata["n_epochs_"]
        self.best_epoch_ = metadata["best_epoch_"]
        self._random_seed = metadata["random_seed_"]

    # ------------------------------------------------------------------
    # scikit-learn API
    # ------------------------------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None):
        """Fit the network to super-tile features and gene expression.

        Parameters
        ----------
        X : array-like of shape (n_slides, n_tokens * token_dim) or (n_slides, n_tokens, token_dim)
            Super-tile features, for example from ``SuperTilePooler``.
        y : array-like of shape (n_slides, n_genes) or (n_slides,)
            Expression targets (for example log2(TPM + 1)). A DataFrame keeps
            its column names in ``gene_names_``.
        groups : array-like of shape (n_slides,), default=None
            Group labels (for example patient ids). When given, the
            validation split keeps each group on one side.

        Returns
        -------
        self : object
            The fitted regressor.
        """
        X_2d = self._flatten_3d(X, reset=True)
        X_2d = validate_data(self, X_2d, reset=True, dtype=np.float32, ensure_all_finite=False)
        self._check_finite(X_2d, "X")
        self._set_token_shape(X_2d)
        targets = self._validate_targets(y, X_2d.shape[0])
        tokens = X_2d.reshape(X_2d.shape[0], self.n_tokens_, self.token_dim_)

        if X_2d.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 training slides, got n_samples={X_2d.shape[0]}."
            )

        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape[0] != X_2d.shape[0]:
                raise ValueError(f"groups has {groups.shape[0]} entries but X has {X_2d.shape[0]} rows.")

        self._random_seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        targets = self._prepare_targets(X_2d, targets, groups)
        device = resolve_device(self.device)
        train_idx, valid_idx = self._split_validation(X_2d.shape[0], groups)
        self.validation_indices_ = valid_idx
        self._standardize_fit(targets[train_idx])
        targets_std = self._standardize(targets)
        self._setup_fit(targets, targets_std[train_idx])

        with _seeded_torch(self._random_seed, device):
            network = self._build_network(self.n_tokens_, self.token_dim_, self.n_genes_).to(device)
            self._train(network, tokens, targets_std, train_idx, valid_idx, device)

        self._after_fit(tokens[valid_idx], targets[valid_idx])
        self.gene_validation_score_ = self._gene_validation_score(tokens[valid_idx], targets[valid_idx])
        return self

    def predict(self, X):
        """Predict gene expression.

        Parameters
        ----------
        X : array-like of shape (n_slides, n_tokens * token_dim) or (n_slides, n_tokens, token_dim)
            Super-tile features with the layout seen in ``fit``.

        Returns
        -------
        y_pred : ndarray of shape (n_slides, n_genes) or (n_slides,)
            Predictions on the scale of the training targets; 1-D when
            ``fit`` got a 1-D ``y``.
        """
        tokens = self._validate_tokens(X)
        return self._format_output(self._predict_tokens(tokens))

    # ------------------------------------------------------------------
    # Input handling
    # ------------------------------------------------------------------

    def _flatten_3d(self, X, *, reset):
        """Return X with a 3-D array flattened to (n, K * D), recording K."""
        if reset:
            self._tokens_from_3d = None
        shape = getattr(X, "shape", None)
        if isinstance(X, (list, tuple)):
            shape = np.shape(X)
        if shape is not None and len(shape) == 3 and not hasattr(X, "columns"):
            array = np.asarray(X)
            if reset:
                self._tokens_from_3d = array.shape[1]
            elif array.shape[1:] != (self.n_tokens_, self.token_dim_):
                raise ValueError(
                    f"X has tokens of shape {array.shape[1:]}, but {type(self).__name__} was fitted "
                    f"with (n_tokens, token_dim)=({self.n_tokens_}, {self.token_dim_})."
                )
            return array.reshape(array.shape[0], -1)
        return X

    def _set_token_shape(self, X_2d):
        """Set ``n_tokens_`` and ``token_dim_`` from ``n_tokens`` and X."""
        n_features = X_2d.shape[1]
        from_3d = self._tokens_from_3d

        if self.n_tokens == "auto":
            if from_3d is not None:
                n_tokens = from_3d
            else:
                n_tokens = _tokens_from_column_names(getattr(self, "feature_names_in_", None)) or 1
        else:
            n_tokens = int(self.n_tokens)
            if from_3d is not None and from_3d != n_tokens:
                raise ValueError(
                    f"n_tokens={self.n_tokens!r} does not match the 3-D X with {from_3d} tokens per "
                    "row. Pass n_tokens='auto' or reshape X."
                )
            if n_features % n_tokens:
                raise ValueError(
                    f"X has {n_features} features, which is not a multiple of n_tokens={self.n_tokens!r}. "
                    "X must have n_tokens * token_dim columns (SuperTilePooler gives "
                    "n_clusters * embedding_dim); set n_tokens to the pooler's n_clusters."
                )

        self.n_tokens_ = n_tokens
        self.token_dim_ = n_features // n_tokens

    def _validate_tokens(self, X):
        """Check X at prediction time and return float32 tokens (n, K, D)."""
        check_is_fitted(self)
        X_2d = self._flatten_3d(X, reset=False)
        X_2d = validate_data(self, X_2d, reset=False, dtype=np.float32, ensure_all_finite=False)
        self._check_finite(X_2d, "X")
        return X_2d.reshape(X_2d.shape[0], self.n_tokens_, self.token_dim_)

    def _validate_targets(self, y, n_samples):
        """Return float64 targets (n, G) and record gene names and 1-D-ness."""
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )

        gene_names = None
        if hasattr(y, "columns"):
            gene_names = np.asarray([str(c) for c in y.columns], dtype=object)
        elif hasattr(y, "name") and hasattr(y, "index") and y.name is not None:
            gene_names = np.asarray([str(y.name)], dtype=object)

        targets = check_array(
            y, ensure_2d=False, dtype=np.float64, ensure_all_finite=False, input_name="y"
        )
        if targets.ndim > 2:
            raise ValueError(f"y must be 1-D or 2-D, got an array of shape {targets.shape}.")
        self._y_is_1d = targets.ndim == 1
        if self._y_is_1d:
            targets = targets[:, None]
        if targets.shape[0] != n_samples:
            raise ValueError(
                f"X and y have inconsistent numbers of samples: X has {n_samples} rows, "
                f"y has {targets.shape[0]}."
            )
        self._check_finite(targets, "y", column_names=gene_names)

        self.n_genes_ = targets.shape[1]
        self.gene_names_ = gene_names
        return targets

    @staticmethod
    def _check_finite(array, name, column_names=None):
        """Raise a ValueError naming the rows and columns that hold NaN or inf."""
        bad = ~np.isfinite(array)
        if not bad.any():
            return
        rows = np.flatnonzero(bad.any(axis=1))
        cols = np.flatnonzero(bad.any(axis=0))
        if column_names is not None:
            col_text = ", ".join(repr(column_names[c]) for c in cols[:10])
        else:
            col_text = ", ".join(str(c) for c in cols[:10])
        more_rows = " ..." if rows.size > 10 else ""
        more_cols = " ..." if cols.size > 10 else ""
        what = "gene" if name == "y" else "column"
        raise ValueError(
            f"Input {name} contains NaN or infinity in {rows.size} row(s) "
            f"(indices {', '.join(str(r) for r in rows[:10])}{more_rows}) and {cols.size} {what}(s) "
            f"({col_text}{more_cols}). Remove or impute these values before fitting."
        )

    # ------------------------------------------------------------------
    # Targets
    # ------------------------------------------------------------------

    def _standardize_fit(self, targets):
        mean = targets.mean(axis=0)
        scale = targets.std(axis=0)
        constant = scale <= _CONSTANT_TOLERANCE * np.maximum(1.0, np.abs(mean))
        scale[constant] = 1.0
        self.target_mean_ = mean
        self.target_scale_ = scale
        self.constant_genes_ = constant

    def _standardize(self, targets):
        return ((targets - self.target_mean_) / self.target_scale_).astype(np.float32)

    def _unstandardize(self, values):
        """Map standardized values (..., G) back to the target scale."""
        values = np.asarray(values, dtype=np.float64) * self.target_scale_ + self.target_mean_
        values[..., self.constant_genes_] = self.target_mean_[self.constant_genes_]
        return values

    def _format_output(self, values):
        """Drop the gene axis when ``fit`` got a 1-D ``y``."""
        if self._y_is_1d:
            return values[..., 0]
        return values

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------

    def _split_validation(self, n_samples, groups):
        """Return (train indices, validation indices) and note a skipped split."""
        self.fit_notes_ = []
        all_rows = np.arange(n_samples)
        empty = np.zeros(0, dtype=np.int64)

        if self.validation_fraction == 0:
            self.fit_notes_.append("no validation split: validation_fraction=0")
            return all_rows, empty
        if n_samples < _MIN_ROWS_FOR_SPLIT:
            self.fit_notes_.append(
                f"no validation split: {n_samples} training rows, fewer than {_MIN_ROWS_FOR_SPLIT}"
            )
            return all_rows, empty

        if groups is not None:
            if np.unique(groups).size < 2:
                self.fit_notes_.append("no validation split: groups has a single group")
                return all_rows, empty
            splitter = GroupShuffleSplit(
                n_splits=1, test_size=self.validation_fraction, random_state=self._random_seed
            )
        else:
            splitter = ShuffleSplit(
                n_splits=1, test_size=self.validation_fraction, random_state=self._random_seed
            )
        try:
            train_idx, valid_idx = next(splitter.split(all_rows, groups=groups))
        except ValueError as exc:
            self.fit_notes_.append(f"no validation split: {exc}")
            return all_rows, empty
        if train_idx.size < 2 or valid_idx.size < 1:
            self.fit_notes_.append("no validation split: too few rows on one side")
            return all_rows, empty
        return np.sort(train_idx), np.sort(valid_idx).astype(np.int64)

    def _resolved_precision(self, device):
        if self.precision != "auto":
            return self.precision
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "fp32"

    def _autocast(self, device):
        """Return the autocast context for ``precision`` on ``device``."""
        if self._resolved_precision(device) == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _ema_decay_at(self, step):
        """Return the EMA decay at optimizer step ``step`` (0-based)."""
        if not self.ema_decay:
            return 0.0
        final = float(self.ema_decay)
        start = min(_EMA_START_DECAY, final)
        if self.ema_warmup_steps == 0:
            return final
        ramp = min(1.0, step / self.ema_warmup_steps)
        return start + (final - start) * ramp

    def _train(self, network, tokens, targets_std, train_idx, valid_idx, device):
        """Run the training loop and set ``network_`` and the history."""
        generator = torch.Generator(device=device).manual_seed(self._random_seed)
        order_generator = torch.Generator().manual_seed(self._random_seed)
        tokens_t = as_float_tensor(tokens)
        targets_t = as_float_tensor(targets_std)

        ema = copy.deepcopy(network).eval()
        for parameter in ema.parameters():
            parameter.requires_grad_(False)
        # The fused kernel updates all parameters in one pass. Over the
        # ~190 M parameters of the paper-size flow network, a one-off timing
        # found it about 9x faster than the per-tensor loop on a 2-core CPU.
        optimizer = torch.optim.AdamW(
            network.parameters(),
            lr=self.learning_rate,
            weight_decay=self.weight_decay,
            betas=(0.9, 0.99),
            fused=device.type in ("cpu", "cuda"),
        )
        has_valid = valid_idx.size > 0
        best_loss = math.inf
        best_state = None
        bad_epochs = 0
        step = 0
        self.history_ = []
        self.best_epoch_ = 0

        epochs = progress(range(1, self.max_epochs + 1), verbose=self.verbose, desc=type(self).__name__, unit="epoch")
        for epoch in epochs:
            started = time.perf_counter()
            network.train()
            permutation = torch.from_numpy(train_idx)[torch.randperm(train_idx.size, generator=order_generator)]
            total, count = 0.0, 0
            for start in range(0, permutation.numel(), self.batch_size):
                batch = permutation[start : start + self.batch_size]
                batch_tokens = tokens_t[batch].to(device, non_blocking=True)
                batch_targets = targets_t[batch].to(device, non_blocking=True)
                with self._autocast(device):
                    loss = self._training_loss(network, batch_tokens, batch_targets, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), max_norm=1.0)
                optimizer.step()
                decay = self._ema_decay_at(step)
                _update_ema(ema, network, decay)
                step += 1
                total += float(loss.detach()) * batch.numel()
                count += batch.numel()

            train_loss = total / max(count, 1)
            valid_loss = self._epoch_validation_loss(ema, tokens_t, targets_t, valid_idx, device) if has_valid else None
            self.history_.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "valid_loss": valid_loss,
                    "ema_decay": decay,
                    "seconds": time.perf_counter() - started,
                }
            )
            if hasattr(epochs, "set_postfix"):
                epochs.set_postfix(train=f"{train_loss:.4f}", valid="-" if valid_loss is None else f"{valid_loss:.4f}")
            logger.debug("epoch %d train_loss=%.5f valid_loss=%s", epoch, train_loss, valid_loss)

            if not has_valid or not math.isfinite(valid_loss):
                self.best_epoch_ = epoch
                continue
            if valid_loss < best_loss:
                best_loss = valid_loss
                self.best_epoch_ = epoch
                bad_epochs = 0
                if self.early_stopping:
                    best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
            else:
                bad_epochs += 1
                if self.early_stopping and bad_epochs >= self.patience:
                    logger.info("early stopping at epoch %d, best epoch %d", epoch, self.best_epoch_)
                    break

        if self.early_stopping and best_state is not None:
            ema.load_state_dict(best_state)
        else:
            self.best_epoch_ = len(self.history_)
        if not math.isfinite(self.history_[-1]["train_loss"]):
            warnings.warn(
                f"{type(self).__name__} training loss is not finite ({self.history_[-1]['train_loss']}); "
                "lower learning_rate or check the inputs.",
                SkrnafmWarning,
                stacklevel=3,
            )
        self.n_epochs_ = len(self.history_)
        self.network_ = ema.eval()

    def _epoch_validation_loss(self, network, tokens_t, targets_t, valid_idx, device):
        """Return the validation loss of ``network``, with noise fixed across epochs."""
        generator = torch.Generator(device=device).manual_seed(self._random_seed + 1)
        network.eval()
        total = 0.0
        index = torch.from_numpy(valid_idx)
        with torch.no_grad(), self._autocast(device):
            for start in range(0, index.numel(), _PREDICT_CHUNK):
                batch = index[start : start + _PREDICT_CHUNK]
                loss = self._validation_loss(
                    network, tokens_t[batch].to(device), targets_t[batch].to(device), generator
                )
                total += float(loss) * batch.numel()
        return total / index.numel()

    def _gene_validation_score(self, tokens_valid, targets_valid):
        if tokens_valid.shape[0] < 2:
            return np.full(self.n_genes_, np.nan)
        predictions = self._predict_validation(tokens_valid)
        return _pearson_columns(predictions, targets_valid)

    # ------------------------------------------------------------------
    # Prediction helpers
    # ------------------------------------------------------------------

    def _network_device(self):
        parameter = next(self.network_.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def _predict_tokens(self, tokens):
        """Return raw-scale predictions (n, G) from the standardized-space hook."""
        device = self._network_device()
        network = self.network_.eval()
        outputs = []
        with torch.no_grad(), self._autocast(device):
            for start in range(0, tokens.shape[0], _PREDICT_CHUNK):
                chunk = as_float_tensor(tokens[start : start + _PREDICT_CHUNK]).to(device)
                outputs.append(self._predict_standardized(network, chunk).float().cpu().numpy())
        if not outputs:
            return np.zeros((0, self.n_genes_))
        return self._unstandardize(np.concatenate(outputs))

    # ------------------------------------------------------------------
    # Persistence
    # ------------------------------------------------------------------

    def __getstate__(self):
        state = super().__getstate__()
        network = state.get("network_")
        if network is not None:
            parameter = next(network.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            state["_saved_network_device"] = str(device)
            if device.type != "cpu":
                state["network_"] = copy.deepcopy(network).to("cpu")
        return state

    def __setstate__(self, state):
        saved_device = state.pop("_saved_network_device", None)
        super().__setstate__(state)
        if saved_device is None or "network_" not in self.__dict__:
            return
        target = torch.device(saved_device)
        if target.type == "cpu":
            return
        if target.type == "cuda" and torch.cuda.is_available():
            self.network_.to(target)
            return
        warnings.warn(
            f"{type(self).__name__} was saved with its network on {saved_device!r}, which is not "
            "available here, so the network stays on the CPU and the device parameter is set to 'cpu'.",
            SkrnafmWarning,
            stacklevel=2,
        )
        if self.device != "auto":
            self.device = "cpu"

    def save(self, path):
        """Save the fitted model in a safe format that stores no code.

        Weights and fitted arrays go to a safetensors file together with the
        parameters and fitted metadata as JSON. Read it back with
        :func:`skrnafm.estimators.load_model`, which never unpickles.

        Parameters
        ----------
        path : str or os.PathLike
            File to write, conventionally with the ``.safetensors`` suffix.

        Returns
        -------
        path : pathlib.Path
            The file written.
        """
        from ._persistence import save_model

        return save_model(self, path)


def as_float_tensor(array):
    """Return a float32 CPU tensor of ``array``, copying read-only input.

    torch warns on read-only numpy buffers (such as memory-mapped X),
    because writing to the tensor would be undefined behaviour.
    """
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def _update_ema(ema, network, decay):
    """Blend the weights of ``network`` into ``ema`` with the given decay."""
    with torch.no_grad():
        ema_state = ema.state_dict()
        for name, value in network.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.lerp_(value.detach(), 1.0 - decay)
            else:
                target.copy_(value)


def _tokens_from_column_names(names):
    """Return K when every column follows the pooler's ``st{k}_f{d}`` layout."""
    if names is None or len(names) == 0:
        return None
    pairs = []
    for name in names:
        match = _POOLER_COLUMN.match(str(name))
        if match is None:
            return None
        pairs.append((int(match.group(1)), int(match.group(2))))
    clusters = max(k for k, _ in pairs) + 1
    if len(pairs) % clusters:
        return None
    dim = len(pairs) // clusters
    expected = [(k, d) for k in range(clusters) for d in range(dim)]
    if pairs != expected:
        return None
    return clusters


def _pearson_columns(predictions, targets):
    """Return per-column Pearson r, 0 where either column is constant."""
    pred = predictions - predictions.mean(axis=0)
    true = targets - targets.mean(axis=0)
    denominator = np.sqrt((pred**2).sum(axis=0) * (true**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (pred * true).sum(axis=0) / denominator
    r[~np.isfinite(r) | (denominator <= 1e-12)] = 0.0
    return r


@contextlib.contextmanager
def _seeded_torch(seed, device):
    """Seed torch's global RNG inside the block and restore it afterwards.

    Weight initialization and layers such as dropout draw from the global
    RNG, so seeding it makes ``fit`` reproducible without changing the
    caller's random stream.
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
