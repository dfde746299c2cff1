"""Regression baselines on super-tile features: HE2RNA, tRNAsformer and SEQUOIA.

The three regressors share :class:`BaseTorchRegressor` with
:class:`~skrnafm.estimators.RNAFlowRegressor`: the same token parsing, the
per-gene target standardization from training rows, the grouped validation
split, early stopping, EMA weights, ``random_state``, pickling and safe
saving. Each trains its network with a mean-squared error on standardized
targets and predicts on the original target scale.
"""

import logging
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval

from ._base import BaseTorchRegressor

logger = logging.getLogger(__name__)

__all__ = ["HE2RNARegressor", "TRNAsformerRegressor", "SequoiaRegressor"]

# Parameter documentation shared by the three regressors; each class
# docstring has the marker line below, replaced after the class.
_TRAINING_PARAMETERS_MARKER = "    <training parameters>\n"
_TRAINING_PARAMETERS_DOC = """\
    max_epochs : int, default=100
        Maximum number of passes over the training slides.
    batch_size : int, default=32
        Slides per optimizer step.
    learning_rate : float, default=1e-4
        AdamW learning rate.
    weight_decay : float, default=0.01
        AdamW weight decay.
    validation_fraction : float, default=0.1
        Fraction of the training slides held out (by group when ``groups``
        are passed to ``fit``) for early stopping and
        ``gene_validation_score_``.
    early_stopping : bool, default=True
        Whether to stop when the validation loss stops improving and keep
        the best epoch's weights.
    patience : int, default=10
        Epochs without improvement before stopping.
    n_tokens : "auto" or int, default="auto"
        Super-tiles K per slide; see :class:`BaseTorchRegressor`. Set it to
        the pooler's ``n_clusters`` for a plain (n_slides, K * D) array.
    ema_decay : float or None, default=0.999
        Final decay of the weight average used for prediction.
    ema_warmup_steps : int, default=10000
        Steps over which the EMA decay rises from 0.85 to ``ema_decay``.
    device : str or torch.device, default="auto"
        Device to train and predict on.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        bf16 autocast for forward passes; ``"auto"`` uses it on CUDA and on
        CPUs with native bf16 support.
    random_state : int, RandomState instance or None, default=None
        Seeds initialization, dropout, batch order and the validation split.
    verbose : int, default=0
        1 shows a progress bar over epochs.
"""

_FITTED_ATTRIBUTES_DOC = """\
    Attributes
    ----------
    gene_validation_score_ : ndarray of shape (n_genes_,)
        Per-gene Pearson r on the validation split (NaN without one). Rank
        genes by it for an honest top-k summary.
    n_features_in_, feature_names_in_, n_tokens_, token_dim_, n_genes_, \\
gene_names_, target_mean_, target_scale_, constant_genes_, network_, \\
history_, fit_notes_, n_epochs_, best_epoch_, validation_indices_
        See :class:`BaseTorchRegressor`.
"""


def _fill_docstring(cls):
    cls.__doc__ = cls.__doc__.replace(_TRAINING_PARAMETERS_MARKER, _TRAINING_PARAMETERS_DOC)
    cls.__doc__ = cls.__doc__.replace("    <fitted attributes>\n", _FITTED_ATTRIBUTES_DOC)
    return cls


class _MSERegressor(BaseTorchRegressor):
    """Torch regressor trained with a mean-squared error in standardized space."""

    def _training_loss(self, network, tokens, targets_std, generator):
        return torch.mean((network(tokens).float() - targets_std) ** 2)

    def _predict_standardized(self, network, tokens):
        return network(tokens)

    def _check_heads(self, token_dim):
        """Return the model width, checking that ``n_heads`` divides it."""
        width = token_dim if self.hidden_dim is None else self.hidden_dim
        if width % self.n_heads:
            source = "the token width D" if self.hidden_dim is None else "hidden_dim"
            raise ValueError(
                f"{type(self).__name__}: {source}={width} must be a multiple of "
                f"n_heads={self.n_heads!r}; change n_heads or set hidden_dim"
            )
        return width


_TRANSFORMER_CONSTRAINTS = {
    **BaseTorchRegressor._parameter_constraints,
    "hidden_dim": [Interval(Integral, 1, None, closed="left"), None],
    "depth": [Interval(Integral, 0, None, closed="left")],
    "n_heads": [Interval(Integral, 1, None, closed="left")],
    "mlp_ratio": [Interval(Real, 0, None, closed="neither")],
    "dropout": [Interval(Real, 0, 1, closed="left")],
}


class _TransformerRegressor(_MSERegressor):
    """Shared constructor of the token-transformer baselines.

    Subclasses name their network class in ``_network_name``.
    """

    _network_name = None

    _parameter_constraints = _TRANSFORMER_CONSTRAINTS

    def __init__(
        self,
        *,
        hidden_dim=256,
        depth=6,
        n_heads=8,
        mlp_ratio=4.0,
        dropout=0.1,
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
        self.hidden_dim = hidden_dim
        self.depth = depth
        self.n_heads = n_heads
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout

    def _build_network(self, n_tokens, token_dim, n_genes):
        from .. import nn

        network_class = getattr(nn, self._network_name)
        return network_class(
            n_tokens,
            token_dim,
            n_genes,
            hidden_dim=self._check_heads(token_dim),
            depth=self.depth,
            n_heads=self.n_heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
        )


@_fill_docstring
class HE2RNARegressor(_MSERegressor):
    """HE2RNA: a per-super-tile MLP with a top-k mean over super-tiles per gene.

    Every super-tile token goes through an MLP (``D -> hidden_dim ->
    hidden_dim -> n_genes``, ReLU and dropout). For each gene, the slide
    prediction is the mean of the k largest super-tile outputs. In training,
    k is drawn at random per batch from ``top_k`` (capped at K); at
    inference, the predictions for all those k are averaged. Targets are
    standardized per gene for training and predictions are returned on the
    original scale.

    Parameters
    ----------
    hidden_dim : int, default=256
        Width of the two hidden layers.
    dropout : float, default=0.25
        Dropout after each hidden layer.
    top_k : tuple of int, default=(1, 2, 5, 10, 20, 50, 100)
        Candidate numbers of top super-tiles per gene.
    <training parameters>

    <fitted attributes>

    Examples
    --------
    >>> import numpy as np
    >>> from skrnafm.estimators import HE2RNARegressor
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(20, 4 * 8)), rng.normal(size=(20, 3))
    >>> model = HE2RNARegressor(hidden_dim=16, max_epochs=2, n_tokens=4,
    ...                         random_state=0).fit(X, Y)
    >>> model.predict(X[:2]).shape
    (2, 3)
    """

    _parameter_constraints = {
        **BaseTorchRegressor._parameter_constraints,
        "hidden_dim": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "top_k": ["array-like"],
    }

    def __init__(
        self,
        *,
        hidden_dim=256,
        dropout=0.25,
        top_k=(1, 2, 5, 10, 20, 50, 100),
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
        self.hidden_dim = hidden_dim
        self.dropout = dropout
        self.top_k = top_k

    def _setup_fit(self, targets, targets_std):
        values = list(self.top_k)
        if not values or any(
            isinstance(k, bool) or not isinstance(k, Integral) or k < 1 for k in values
        ):
            raise ValueError(
                f"top_k must be a non-empty sequence of positive integers, got {self.top_k!r}"
            )

    def _build_network(self, n_tokens, token_dim, n_genes):
        from ..nn import HE2RNANet

        return HE2RNANet(
            token_dim,
            n_genes,
            hidden_dim=self.hidden_dim,
            dropout=self.dropout,
            top_k=tuple(int(k) for k in self.top_k),
        )

    def _training_loss(self, network, tokens, targets_std, generator):
        candidates = network.candidate_k(tokens.shape[1])
        choice = torch.randint(len(candidates), (1,), generator=generator, device=generator.device)
        prediction = network(tokens, k=candidates[int(choice)])
        return torch.mean((prediction.float() - targets_std) ** 2)

    def _validation_loss(self, network, tokens, targets_std, generator):
        # Validate the inference rule (the average over all k), not one random k.
        return torch.mean((network(tokens).float() - targets_std) ** 2)


@_fill_docstring
class TRNAsformerRegressor(_TransformerRegressor):
    """tRNAsformer: a pre-norm transformer encoder over the super-tile tokens.

    The K super-tile tokens are projected to ``hidden_dim`` and given a
    learned embedding per cluster index. They pass ``depth`` pre-norm
    encoder layers, each with multi-head self-attention and a GELU
    feed-forward layer behind residual connections. The mean over tokens
    goes through a LayerNorm and a linear layer to the genes. Trained with a mean-squared error on
    per-gene standardized targets; predictions are on the original scale.

    Parameters
    ----------
    hidden_dim : int or None, default=256
        Model width. The tokens are linearly projected to it; None keeps the
        token width D, as the original design does (slower for D = 1024 or
        more). Must be a multiple of ``n_heads``.
    depth : int, default=6
        Encoder layers.
    n_heads : int, default=8
        Attention heads.
    mlp_ratio : float, default=4.0
        Feed-forward width as a multiple of the model width.
    dropout : float, default=0.1
        Dropout inside the encoder layers.
    <training parameters>

    <fitted attributes>

    Examples
    --------
    >>> import numpy as np
    >>> from skrnafm.estimators import TRNAsformerRegressor
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(20, 4 * 8)), rng.normal(size=(20, 3))
    >>> model = TRNAsformerRegressor(hidden_dim=16, depth=1, n_heads=2, max_epochs=2,
    ...                              n_tokens=4, random_state=0).fit(X, Y)
    >>> model.predict(X[:2]).shape
    (2, 3)
    """

    _network_name = "TRNAsformerNet"


@_fill_docstring
class SequoiaRegressor(_TransformerRegressor):
    """SEQUOIA: linear-cost attention over the super-tile tokens.

    Each of ``depth`` blocks runs ``n_heads`` heads. In a head, a per-token
    branch (linear, LayerNorm, GELU) and a slide summary branch (the mean
    over tokens of a linear projection, then LayerNorm and GELU) are
    concatenated per token and mixed by a linear layer with GELU. The heads
    are concatenated and projected back to the model width with a residual
    connection, followed by a residual feed-forward layer. The mean over
    tokens goes through a LayerNorm and a linear layer to the genes. The
    cost grows linearly with K. Trained with a mean-squared error on
    per-gene standardized targets; predictions are on the original scale.

    Parameters
    ----------
    hidden_dim : int or None, default=256
        Model width. The tokens are linearly projected to it, and each get a
        learned embedding per cluster index; None keeps the token width D
        (slower for D = 1024 or more). Must be a multiple of ``n_heads``.
    depth : int, default=6
        Blocks.
    n_heads : int, default=8
        Heads per block.
    mlp_ratio : float, default=4.0
        Feed-forward width as a multiple of the model width.
    dropout : float, default=0.1
        Dropout in the feed-forward layers.
    <training parameters>

    <fitted attributes>

    Examples
    --------
    >>> import numpy as np
    >>> from skrnafm.estimators import SequoiaRegressor
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(20, 4 * 8)), rng.normal(size=(20, 3))
    >>> model = SequoiaRegressor(hidden_dim=16, depth=1, n_heads=2, max_epochs=2,
    ...                          n_tokens=4, random_state=0).fit(X, Y)
    >>> model.predict(X[:2]).shape
    (2, 3)
    """

    _network_name = "SequoiaNet"
