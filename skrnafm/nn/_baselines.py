"""Networks of the regression baselines RNA-FM is compared with.

Each network maps a batch of super-tile tokens, a tensor of shape
(batch, K, D), to standardized gene expression of shape (batch, n_genes).
They are our own implementations of the designs of three published
methods, as described in their docstrings:

* :class:`HE2RNANet` (HE2RNA): a per-tile multilayer perceptron whose
  outputs are aggregated per gene by the mean of the k largest tile values.
* :class:`TRNAsformerNet` (tRNAsformer): a pre-norm transformer encoder
  over the tokens.
* :class:`SequoiaNet` (SEQUOIA): blocks of linear-cost attention over the
  tokens.

Device and dtype follow the module and the inputs.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HE2RNANet", "TRNAsformerNet", "SequoiaNet", "HE2RNA_TOP_K"]

# Numbers of top tiles averaged per gene by HE2RNA; values above K are
# capped at K.
HE2RNA_TOP_K = (1, 2, 5, 10, 20, 50, 100)


class HE2RNANet(nn.Module):
    """Per-tile MLP with a top-k mean over tiles for each gene.

    Every token goes through ``D -> hidden -> hidden -> n_genes`` (ReLU and
    dropout after each hidden layer). For each gene, the slide prediction is
    the mean of its k largest token outputs. Training draws one k per batch
    from ``top_k`` (capped at K); inference averages the predictions of all
    those k.

    Parameters
    ----------
    token_dim : int
        Token width D.
    n_genes : int
        Output genes.
    hidden_dim : int, default=256
        Width of the two hidden layers.
    dropout : float, default=0.25
        Dropout after each hidden layer.
    top_k : sequence of int, default=(1, 2, 5, 10, 20, 50, 100)
        Candidate numbers of top tokens.
    """

    def __init__(self, token_dim, n_genes, *, hidden_dim=256, dropout=0.25, top_k=HE2RNA_TOP_K):
        super().__init__()
        self.top_k = tuple(int(k) for k in top_k)
        self.tile_mlp = nn.Sequential(
            nn.Linear(token_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, n_genes),
        )

    def candidate_k(self, n_tokens):
        """Return the distinct k values used with ``n_tokens`` tokens (capped at K)."""
        return sorted({min(k, n_tokens) for k in self.top_k})

    def tile_scores(self, tokens):
        """Return per-token gene outputs, shape (batch, K, n_genes)."""
        return self.tile_mlp(tokens)

    def forward(self, tokens, k=None):
        """Return slide predictions, shape (batch, n_genes).

        With ``k`` given, the mean of the k largest token outputs per gene;
        with None, the average of that over :meth:`candidate_k`.
        """
        scores = self.tile_scores(tokens)
        n_tokens = scores.shape[1]
        if k is not None:
            k = min(int(k), n_tokens)
            return torch.topk(scores, k, dim=1).values.mean(dim=1)

        # One sort serves every k: the top-k mean is a prefix mean.
        ks = self.candidate_k(n_tokens)
        ordered = torch.topk(scores, max(ks), dim=1).values
        prefix_sums = ordered.cumsum(dim=1)
        means = [prefix_sums[:, k - 1] / k for k in ks]
        return torch.stack(means).mean(dim=0)


class _TokenInput(nn.Module):
    """Project tokens to the model width and add a learned embedding per cluster index."""

    def __init__(self, n_tokens, token_dim, hidden_dim):
        super().__init__()
        if hidden_dim == token_dim:
            self.projection = nn.Identity()
        else:
            self.projection = nn.Linear(token_dim, hidden_dim)
        self.cluster_embedding = nn.Parameter(torch.zeros(1, n_tokens, hidden_dim))
        nn.init.trunc_normal_(self.cluster_embedding, std=0.02)

    def forward(self, tokens):
        return self.projection(tokens) + self.cluster_embedding


class _MeanPoolHead(nn.Sequential):
    """Mean over tokens, then LayerNorm and a linear layer to the genes."""

    def __init__(self, hidden_dim, n_genes):
        super().__init__(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, n_genes))

    def forward(self, tokens):
        return super().forward(tokens.mean(dim=1))


class TRNAsformerNet(nn.Module):
    """Pre-norm transformer encoder over super-tile tokens.

    Tokens are projected to ``hidden_dim`` (skipped when it equals D) and
    get a learned embedding per cluster index. They pass ``depth`` pre-norm
    encoder layers, each with multi-head self-attention and a GELU
    feed-forward layer behind residual connections. The mean over tokens
    goes through a LayerNorm and a linear layer to the genes.

    Parameters
    ----------
    n_tokens : int
        Tokens K per slide.
    token_dim : int
        Token width D.
    n_genes : int
        Output genes.
    hidden_dim : int, default=256
        Model width; must be a multiple of ``n_heads``.
    depth : int, default=6
        Encoder layers.
    n_heads : int, default=8
        Attention heads.
    mlp_ratio : float, default=4.0
        Feed-forward width as a multiple of ``hidden_dim``.
    dropout : float, default=0.1
        Dropout inside the encoder layers.
    """

    def __init__(
        self,
        n_tokens,
        token_dim,
        n_genes,
        *,
        hidden_dim=256,
        depth=6,
        n_heads=8,
        mlp_ratio=4.0,
        dropout=0.1,
    ):
        super().__init__()
        self.token_input = _TokenInput(n_tokens, token_dim, hidden_dim)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden_dim,
            nhead=n_heads,
            dim_feedforward=int(hidden_dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only speed up padded batches, and pre-norm layers
        # cannot use them anyway.
        self.encoder = nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)
        self.head = _MeanPoolHead(hidden_dim, n_genes)

    def forward(self, tokens):
        """Return slide predictions, shape (batch, n_genes)."""
        return self.head(self.encoder(self.token_input(tokens)))


class _HeadLayerNorm(nn.Module):
    """LayerNorm over the last axis of (..., n_heads, head_dim), with weights per head."""

    def __init__(self, n_heads, head_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(n_heads, head_dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class _SummaryMixing(nn.Module):
    """Linear-cost attention: per head, a per-token branch and a slide summary branch.

    All heads run as batched operations. Per head, the token branch is
    ``GELU(LN(W_t x))`` and the summary branch ``GELU(LN(mean_k W_s x))``;
    their concatenation goes through ``GELU(W_m [token, summary] + b_m)``.
    The heads are concatenated and projected back to ``hidden_dim``.
    """

    def __init__(self, hidden_dim, n_heads):
        super().__init__()
        head_dim = hidden_dim // n_heads
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.token_projection = nn.Linear(hidden_dim, n_heads * head_dim)
        self.summary_projection = nn.Linear(hidden_dim, n_heads * head_dim)
        self.token_norm = _HeadLayerNorm(n_heads, head_dim)
        self.summary_norm = _HeadLayerNorm(n_heads, head_dim)
        # The mixing layer of each head, split into the rows that act on the
        # token branch and those that act on the summary branch.
        bound = 1.0 / math.sqrt(2 * head_dim)
        self.mix_token = nn.Parameter(torch.empty(n_heads, head_dim, head_dim).uniform_(-bound, bound))
        self.mix_summary = nn.Parameter(torch.empty(n_heads, head_dim, head_dim).uniform_(-bound, bound))
        self.mix_bias = nn.Parameter(torch.empty(n_heads, head_dim).uniform_(-bound, bound))
        self.out_projection = nn.Linear(n_heads * head_dim, hidden_dim)

    def forward(self, x):
        batch, n_tokens, _ = x.shape
        heads = (self.n_heads, self.head_dim)

        local = self.token_projection(x).view(batch, n_tokens, *heads)
        local = F.gelu(self.token_norm(local))
        # The mean over tokens of a linear projection is the projection of the mean.
        summary = self.summary_projection(x.mean(dim=1)).view(batch, 1, *heads)
        summary = F.gelu(self.summary_norm(summary))

        mixed = (
            torch.einsum("bkhi,hio->bkho", local, self.mix_token)
            + torch.einsum("bkhi,hio->bkho", summary, self.mix_summary)
            + self.mix_bias
        )
        return self.out_projection(F.gelu(mixed).reshape(batch, n_tokens, -1))


class _SequoiaBlock(nn.Module):
    def __init__(self, hidden_dim, n_heads, mlp_ratio, dropout):
        super().__init__()
        ff_dim = int(hidden_dim * mlp_ratio)
        self.attention = _SummaryMixing(hidden_dim, n_heads)
        self.feed_forward = nn.Sequential(
            nn.LayerNorm(hidden_dim),
            nn.Linear(hidden_dim, ff_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, hidden_dim),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        x = x + self.attention(x)
        return x + self.feed_forward(x)


class SequoiaNet(nn.Module):
    """Linear-cost attention over super-tile tokens.

    Each block runs ``n_heads`` heads. A head has a per-token branch (linear,
    LayerNorm, GELU) and a slide summary branch (the mean over tokens of a
    linear projection, then LayerNorm and GELU), concatenates them per token
    and mixes them with a linear layer and GELU. The heads are concatenated
    and projected back to ``hidden_dim`` with a residual connection, followed by
    a residual feed-forward layer. Cost grows linearly with K, unlike
    self-attention. After ``depth`` blocks the tokens are mean-pooled; a
    LayerNorm and a linear layer give the genes. Tokens are first projected
    to ``hidden_dim`` (skipped when it equals D) and get a learned embedding per
    cluster index.

    Parameters
    ----------
    n_tokens : int
        Tokens K per slide.
    token_dim : int
        Token width D.
    n_genes : int
        Output genes.
    hidden_dim : int, default=256
        Model width; must be a multiple of ``n_heads``.
    depth : int, default=6
        Blocks.
    n_heads : int, default=8
        Heads per block.
    mlp_ratio : float, default=4.0
        Feed-forward width as a multiple of ``hidden_dim``.
    dropout : float, default=0.1
        Dropout in the feed-forward layers.
    """

    def __init__(
        self,
        n_tokens,
        token_dim,
        n_genes,
        *,
        hidden_dim=256,
        depth=6,
        n_heads=8,
        mlp_ratio=4.0,
        dropout=0.1,
    ):
        super().__init__()
        self.token_input = _TokenInput(n_tokens, token_dim, hidden_dim)
        self.blocks = nn.Sequential(
            *(_SequoiaBlock(hidden_dim, n_heads, mlp_ratio, dropout) for _ in range(depth))
        )
        self.head = _MeanPoolHead(hidden_dim, n_genes)

    def forward(self, tokens):
        """Return slide predictions, shape (batch, n_genes)."""
        return self.head(self.blocks(self.token_input(tokens)))
