"""Pathway-aware velocity network of RNA-FM.

Contract
--------
``VelocityNet(gene_sets, n_tokens=K, token_dim=D, hidden_dim=H, ...)``
where ``gene_sets`` is a gene-set index such as the one
``skrnafm.pathways.resolve_gene_sets`` returns: an object with
``.members`` (list of int64 arrays of gene indices, one per set),
``.background`` (int64 array of the genes in no set) and ``.n_genes``.

Sampling and training both go through two calls:

* ``cond = net.encode_condition(tokens, drop_mask=None)`` maps the
  super-tile matrix, a tensor of shape (batch, K, D), to a condition of
  shape (batch, H). Rows where ``drop_mask`` is True get the learned null
  condition instead (classifier-free guidance training).
  ``net.null_condition(batch)`` returns that null condition alone. Encode
  once per slide and reuse the result at every solver step.
* ``v = net(x_t, t, cond)`` returns the velocity, shape (batch, n_genes),
  for the state ``x_t`` of shape (batch, n_genes) and times ``t`` (a float,
  a 0-d tensor or shape (batch,)). The time embedding is added to ``cond``
  inside ``forward``.

Architecture: the condition branch is a pre-norm transformer over the K
tokens (with a learned per-cluster embedding), mean-pooled and mapped to
width H. The gene branch turns each gene set into one token with a per-set
two-layer MLP on the set's genes plus a learned set embedding, and the
genes in no set into one background token. A graph attention layer lets a
set attend only to sets that share at least one gene (its residual starts
scaled by 0.1), then ``depth`` adaLN-Zero transformer blocks condition on
``cond + time``. Per-set heads project each token back to its genes; a gene
in several sets receives the mean of their outputs. The heads and the adaLN
gates start at zero, so an untrained network returns a zero velocity.

Speed: sets are sorted by size and split into a few buckets (chosen once at
construction to minimise zero padding), and each bucket's input and output
layers run as one ``torch.bmm``. The outputs of all sets go back to gene
space with one ``index_add``. Padded weights receive zero gradient, so they
stay zero under AdamW and EMA. Device and dtype follow the inputs and the
module. Under ``torch.autocast`` the transformer matrix products run in bf16.

NOTE: at the paper's size on 2 idle CPU cores, a bf16 training step takes
about 2.9 s and 20-step guided Euler sampling of 32 slides about 17 s,
against the 1.5 s and 12 s aimed for (docs/benchmarks/flow.md). The time
barely changes between 1,000 and 20,820 genes. PyTorch's CPU attention
kernel over the 381 set tokens alone takes about 0.6 s of a training step
and 0.4 s of each guided evaluation, so the targets are out of reach on
this CPU without a faster attention kernel.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VelocityNet"]


def _plan_buckets(sizes, max_buckets):
    """Split sets sorted by size into at most ``max_buckets`` contiguous groups.

    Each group pads its sets to its largest size, and the split minimises the
    total padded size by dynamic programming over the sorted sizes. Returns
    the list of ``(start, stop)`` ranges into the sorted order.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    n = len(sizes)
    n_buckets = min(max_buckets, n)

    # cost[k][j]: least padded size for the first j sets in k groups.
    inf = np.inf
    cost = np.full((n_buckets + 1, n + 1), inf)
    cost[0, 0] = 0.0
    choice = np.zeros((n_buckets + 1, n + 1), dtype=np.int64)
    starts = np.arange(n)
    for k in range(1, n_buckets + 1):
        for j in range(1, n + 1):
            # The last group is sets i..j-1, padded to sizes[j - 1].
            candidates = cost[k - 1, :j] + (j - starts[:j]) * sizes[j - 1]
            i = int(np.argmin(candidates))
            cost[k, j] = candidates[i]
            choice[k, j] = i

    k = int(np.argmin(cost[1:, n])) + 1
    ranges = []
    j = n
    while k > 0:
        i = int(choice[k, j])
        ranges.append((i, j))
        j, k = i, k - 1
    return ranges[::-1]


def _sinusoidal_embedding(t, dim, max_period=10000.0):
    """Embed times in [0, 1] as ``dim`` sines and cosines of geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    # Times live in [0, 1]. Scaling by 1000, as for integer diffusion steps, keeps most
    # frequencies from being nearly constant along the path.
    angles = 1000.0 * t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _modulate(x, shift, scale):
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


class _Attention(nn.Module):
    def __init__(self, dim, n_heads):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"width {dim} must be divisible by n_heads={n_heads}.")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, attn_mask=None):
        batch, n_tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, n_tokens, 3, self.n_heads, dim // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dtype = q.dtype
        if x.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled():
            # PyTorch's CPU flash attention runs backward faster in fp32 than
            # in bf16 (benchmarks/bench_flow.py). Without a backward pass, bf16
            # is faster and saves casting q, k and v.
            q, k, v = q.float(), k.float(), v.float()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).to(dtype)
        return self.proj(out.transpose(1, 2).reshape(batch, n_tokens, dim))


class _Mlp(nn.Sequential):
    def __init__(self, dim, hidden, out=None):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out or dim))


class _PreNormBlock(nn.Module):
    """Plain pre-norm transformer block (condition branch)."""

    def __init__(self, dim, n_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, n_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _GraphAttention(nn.Module):
    """Attention restricted to sets that share genes, residual scaled by a learnable factor."""

    def __init__(self, dim, n_heads, mlp_ratio, init_scale=0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, n_heads)
        self.residual_scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, attn_mask):
        x = x + self.residual_scale * self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class _AdaLNZeroBlock(nn.Module):
    """Transformer block whose norms take shift, scale and gate from the condition."""

    def __init__(self, dim, n_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(dim, n_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, c_act):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c_act).chunk(6, dim=1)
        x = torch.addcmul(x, gate1.unsqueeze(1), self.attn(_modulate(self.norm1(x), shift1, scale1)))
        return torch.addcmul(x, gate2.unsqueeze(1), self.mlp(_modulate(self.norm2(x), shift2, scale2)))


class VelocityNet(nn.Module):
    """Velocity field ``v(x_t, t, c)`` over gene-set tokens, conditioned on super-tiles.

    Parameters
    ----------
    gene_sets : GeneSetIndex-like
        Object with ``members`` (list of int64 arrays of gene indices, one
        per set, sets may overlap), ``background`` (int64 array of genes in
        no set) and ``n_genes``. Every gene should appear in a set or in the
        background. A gene in neither gets velocity 0.
    n_tokens : int, default=100
        Number of super-tile tokens K per slide.
    token_dim : int, default=1024
        Width D of each super-tile token.
    hidden_dim : int, default=256
        Width H of the gene-set tokens and of the condition.
    depth : int, default=7
        Number of adaLN-Zero blocks over the gene-set tokens.
    n_heads : int, default=8
        Attention heads, in every attention layer.
    condition_dim : int or None, default=None
        Width of the condition transformer. None keeps ``token_dim``. A
        smaller value adds a linear projection first and makes the condition
        branch cheaper by about ``(token_dim / condition_dim) ** 2``.
    condition_depth : int, default=2
        Number of transformer layers in the condition branch.
    mlp_ratio : float, default=4.0
        Hidden width of every transformer MLP, as a multiple of its width.
    max_buckets : int, default=16
        Most size buckets for the batched per-set layers. More buckets mean
        less zero padding but more, smaller matrix products.

    Attributes
    ----------
    n_genes : int
        Genes G in the output.
    n_sets : int
        Gene sets P (tokens besides the background token).
    bucket_sizes : list of (int, int)
        ``(n_sets_in_bucket, padded_set_size)`` for each bucket.
    n_padded_weights : int
        Zero entries the padding adds to each per-set input and output layer,
        as a count of weight rows of width H.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from types import SimpleNamespace
    >>> from skrnafm.nn import VelocityNet
    >>> sets = SimpleNamespace(members=[np.array([0, 1, 2]), np.array([2, 3])],
    ...                        background=np.array([4]), n_genes=5)
    >>> net = VelocityNet(sets, n_tokens=3, token_dim=8, hidden_dim=16, depth=1, n_heads=2)
    >>> cond = net.encode_condition(torch.randn(2, 3, 8))
    >>> net(torch.randn(2, 5), 0.5, cond).shape
    torch.Size([2, 5])
    """

    def __init__(
        self,
        gene_sets,
        *,
        n_tokens=100,
        token_dim=1024,
        hidden_dim=256,
        depth=7,
        n_heads=8,
        condition_dim=None,
        condition_depth=2,
        mlp_ratio=4.0,
        max_buckets=16,
    ):
        super().__init__()
        members, background, n_genes = _read_gene_sets(gene_sets)
        self.n_genes = n_genes
        self.n_sets = len(members)
        self.n_tokens = int(n_tokens)
        self.token_dim = int(token_dim)
        self.hidden_dim = hidden = int(hidden_dim)
        self.max_buckets = int(max_buckets)
        condition_dim = self.token_dim if condition_dim is None else int(condition_dim)

        # Condition branch.
        self.cluster_embedding = nn.Parameter(torch.randn(self.n_tokens, self.token_dim) * 0.02)
        if condition_dim == self.token_dim:
            self.condition_projection = nn.Identity()
        else:
            self.condition_projection = nn.Linear(self.token_dim, condition_dim)
        self.condition_blocks = nn.ModuleList(
            [_PreNormBlock(condition_dim, n_heads, mlp_ratio) for _ in range(condition_depth)]
        )
        self.condition_norm = nn.LayerNorm(condition_dim)
        self.condition_mlp = _Mlp(condition_dim, hidden, hidden)
        self.null_embedding = nn.Parameter(torch.randn(hidden) * 0.02)
        self.time_mlp = _Mlp(hidden, hidden, hidden)

        # Gene branch: per-set layers, batched per size bucket.
        self._build_set_layers(members, background, hidden)
        self.set_embedding = nn.Parameter(torch.randn(self.n_sets + 1, hidden) * 0.02)
        self.register_buffer("graph_mask", self._build_graph_mask(members), persistent=False)
        self.graph_attention = _GraphAttention(hidden, n_heads, mlp_ratio)
        self.blocks = nn.ModuleList([_AdaLNZeroBlock(hidden, n_heads, mlp_ratio) for _ in range(depth)])

        # Heads: per-set output, modulated by the condition, zero-initialised.
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(hidden, 2 * hidden)
        nn.init.zeros_(self.final_modulation.weight)
        nn.init.zeros_(self.final_modulation.bias)

    # ------------------------------------------------------------------ setup

    def _build_set_layers(self, members, background, hidden):
        sizes = np.array([len(m) for m in members], dtype=np.int64)
        order = np.argsort(sizes, kind="stable")
        ranges = _plan_buckets(np.maximum(sizes[order], 1), self.max_buckets) if len(order) else []
        zero_column = self.n_genes  # index of an always-zero extra gene

        self.bucket_sizes = []
        padded_index = []
        valid = []
        self.in_weights = nn.ParameterList()
        self.in_biases = nn.ParameterList()
        self.out_weights = nn.ParameterList()
        self.out_biases = nn.ParameterList()
        for start, stop in ranges:
            bucket_sets = order[start:stop]
            width = max(int(sizes[bucket_sets].max()), 1)
            index = np.full((len(bucket_sets), width), zero_column, dtype=np.int64)
            mask = np.zeros((len(bucket_sets), width), dtype=bool)
            for row, p in enumerate(bucket_sets):
                index[row, : sizes[p]] = members[p]
                mask[row, : sizes[p]] = True
            padded_index.append(index.ravel())
            valid.append(mask.ravel())
            self.bucket_sizes.append((len(bucket_sets), width))

            # Each set's layers use its true fan-in, and padded entries start at zero.
            fan_in = np.maximum(sizes[bucket_sets], 1).astype(np.float32)
            bound_in = torch.from_numpy(1.0 / np.sqrt(fan_in))[:, None, None]
            w_in = (torch.rand(len(bucket_sets), hidden, width) * 2 - 1) * bound_in
            w_in = w_in * torch.from_numpy(mask)[:, None, :]
            self.in_weights.append(nn.Parameter(w_in))
            self.in_biases.append(nn.Parameter((torch.rand(len(bucket_sets), hidden, 1) * 2 - 1) * bound_in))
            self.out_weights.append(nn.Parameter(torch.zeros(len(bucket_sets), width, hidden)))
            self.out_biases.append(nn.Parameter(torch.zeros(len(bucket_sets), width, 1)))

        self.set_order = order
        n_sets = len(order)
        self.set_hidden_weight = nn.Parameter(
            (torch.rand(n_sets, hidden, hidden) * 2 - 1) / math.sqrt(hidden)
        )
        self.set_hidden_bias = nn.Parameter(torch.zeros(n_sets, hidden, 1))

        flat_index = np.concatenate(padded_index) if padded_index else np.zeros(0, dtype=np.int64)
        flat_valid = np.concatenate(valid) if valid else np.zeros(0, dtype=bool)
        self.n_padded_weights = int((~flat_valid).sum())
        self.register_buffer("padded_index", torch.from_numpy(flat_index), persistent=False)

        self.register_buffer("background_index", torch.from_numpy(background), persistent=False)
        if len(background):
            self.background_mlp = _Mlp(len(background), hidden, hidden)
            self.background_head = nn.Linear(hidden, len(background))
            nn.init.zeros_(self.background_head.weight)
            nn.init.zeros_(self.background_head.bias)
        else:
            # Without background genes the token carries only its learned embedding.
            self.background_mlp = None
            self.background_head = None

        # A gene's output is the mean over the sets (and background) that contain it.
        counts = np.bincount(flat_index[flat_valid], minlength=self.n_genes + 1)[: self.n_genes]
        counts = counts + np.bincount(background, minlength=self.n_genes)[: self.n_genes]
        inverse = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0).astype(np.float32)
        self.register_buffer("inverse_count", torch.from_numpy(inverse), persistent=False)

    def _build_graph_mask(self, members):
        """Boolean (P + 1, P + 1) mask: True where a set may attend to another."""
        n_sets = len(members)
        order = self.set_order
        incidence = np.zeros((n_sets, self.n_genes), dtype=np.float32)
        for row, p in enumerate(order):
            incidence[row, members[p]] = 1.0
        shared = (incidence @ incidence.T) > 0
        mask = np.zeros((n_sets + 1, n_sets + 1), dtype=bool)
        mask[:n_sets, :n_sets] = shared
        # Every token attends to itself. The background shares genes with no set, so it
        # attends only to itself.
        # NOTE: this isolates the background token in this layer, and it meets the sets
        # only in the adaLN-Zero blocks. Whether the published RNA-FM code does the same is not known.
        np.fill_diagonal(mask, True)
        return torch.from_numpy(mask)

    # -------------------------------------------------------------- condition

    def encode_condition(self, tokens, drop_mask=None):
        """Encode super-tile tokens into the condition of shape (batch, hidden_dim).

        Parameters
        ----------
        tokens : Tensor of shape (batch, n_tokens, token_dim)
            Super-tile matrix of each slide.
        drop_mask : bool Tensor of shape (batch,), default=None
            Rows to replace by the learned null condition. Those rows are not
            run through the transformer.

        Returns
        -------
        Tensor of shape (batch, hidden_dim)
        """
        if tokens.ndim != 3 or tokens.shape[1:] != (self.n_tokens, self.token_dim):
            raise ValueError(
                f"tokens must have shape (batch, {self.n_tokens}, {self.token_dim}), "
                f"got {tuple(tokens.shape)}."
            )
        batch = tokens.shape[0]
        if drop_mask is None:
            return self._encode(tokens)

        drop_mask = drop_mask.to(device=tokens.device, dtype=torch.bool)
        keep = ~drop_mask
        out = self.null_condition(batch).to(tokens.dtype).clone()
        if bool(keep.any()):
            encoded = self._encode(tokens[keep])
            out = out.to(encoded.dtype)
            out[keep] = encoded
        return out

    def _encode(self, tokens):
        x = self.condition_projection(tokens + self.cluster_embedding)
        for block in self.condition_blocks:
            x = block(x)
        return self.condition_mlp(self.condition_norm(x).mean(dim=1))

    def null_condition(self, batch_size=1):
        """Return the learned null condition repeated to shape (batch_size, hidden_dim)."""
        return self.null_embedding.unsqueeze(0).expand(batch_size, -1)

    # ---------------------------------------------------------------- forward

    def forward(self, x_t, t, cond):
        """Return the velocity of shape (batch, n_genes) at state ``x_t`` and time ``t``.

        Parameters
        ----------
        x_t : Tensor of shape (batch, n_genes)
        t : float, 0-d Tensor or Tensor of shape (batch,)
        cond : Tensor of shape (batch, hidden_dim) or (1, hidden_dim)
            Output of :meth:`encode_condition` or :meth:`null_condition`.
        """
        if x_t.ndim != 2 or x_t.shape[1] != self.n_genes:
            raise ValueError(f"x_t must have shape (batch, {self.n_genes}), got {tuple(x_t.shape)}.")
        batch = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device, dtype=torch.float32)
        if t.ndim == 0:
            t = t.expand(batch)
        c = cond + self.time_mlp(_sinusoidal_embedding(t, self.hidden_dim).to(x_t.dtype))
        c_act = F.silu(c)

        tokens = self._embed_genes(x_t)
        device_type = x_t.device.type
        if not torch.is_grad_enabled() and torch.is_autocast_enabled(device_type):
            # When sampling, tokens stay in the autocast dtype between blocks, so the
            # memory-bound norms and residual sums move half the bytes. Training keeps
            # fp32 so that small residual updates are not rounded away.
            low_dtype = torch.get_autocast_dtype(device_type)
            tokens, c_act = tokens.to(low_dtype), c_act.to(low_dtype)
        tokens = self.graph_attention(tokens, self.graph_mask)
        for block in self.blocks:
            tokens = block(tokens, c_act)
        return self._project_genes(tokens, c_act, x_t.dtype)

    def _embed_genes(self, x_t):
        batch = x_t.shape[0]
        weight_dtype = self.set_hidden_weight.dtype
        # The per-set layers hold most of the weights but few of the FLOPs, so
        # they run in the weights' own dtype: casting 130 M weights to bf16 and
        # their gradients back at every step costs more than it saves.
        with torch.autocast(device_type=x_t.device.type, enabled=False):
            # Rows are genes and columns are batch entries. The extra last row is zero.
            x_rows = torch.cat([x_t.t(), x_t.new_zeros(1, batch)]).to(weight_dtype)
            gathered = x_rows.index_select(0, self.padded_index)

            hidden_parts = []
            offset = 0
            for (n_bucket, width), weight, bias in zip(self.bucket_sizes, self.in_weights, self.in_biases):
                rows = gathered[offset : offset + n_bucket * width].view(n_bucket, width, batch)
                hidden_parts.append(torch.baddbmm(bias, weight, rows))  # (n_bucket, H, batch)
                offset += n_bucket * width
            if hidden_parts:
                set_hidden = F.gelu(torch.cat(hidden_parts))
            else:
                set_hidden = x_rows.new_zeros(0, self.hidden_dim, batch)
            set_hidden = torch.baddbmm(self.set_hidden_bias, self.set_hidden_weight, set_hidden)
        set_tokens = set_hidden.permute(2, 0, 1)  # (batch, P, H)

        if self.background_mlp is not None:
            background_token = self.background_mlp(x_t.index_select(1, self.background_index)).unsqueeze(1)
        else:
            background_token = set_tokens.new_zeros(batch, 1, self.hidden_dim)
        return torch.cat([set_tokens.to(background_token.dtype), background_token], dim=1) + self.set_embedding

    def _project_genes(self, tokens, c_act, out_dtype):
        batch = tokens.shape[0]
        shift, scale = self.final_modulation(c_act).chunk(2, dim=1)
        tokens = _modulate(self.final_norm(tokens), shift, scale)
        weight_dtype = self.set_hidden_weight.dtype

        with torch.autocast(device_type=tokens.device.type, enabled=False):
            set_tokens = tokens[:, : self.n_sets].permute(1, 2, 0).to(weight_dtype).contiguous()  # (P, H, batch)
            out_parts = []
            start = 0
            for (n_bucket, width), weight, bias in zip(self.bucket_sizes, self.out_weights, self.out_biases):
                h = set_tokens[start : start + n_bucket]
                out_parts.append(torch.baddbmm(bias, weight, h).reshape(n_bucket * width, batch))
                start += n_bucket
            # Sum in the dtype of x_t, not in bf16, so that means over many sets stay accurate.
            gene_rows = tokens.new_zeros(self.n_genes + 1, batch, dtype=out_dtype)
            if out_parts:
                gene_rows = gene_rows.index_add(0, self.padded_index, torch.cat(out_parts).to(out_dtype))
        velocity = gene_rows[: self.n_genes].t()

        if self.background_head is not None:
            background = self.background_head(tokens[:, self.n_sets]).to(out_dtype)
            velocity = velocity.index_add(1, self.background_index, background)
        return velocity * self.inverse_count.to(out_dtype)

    def extra_repr(self):
        return (
            f"n_genes={self.n_genes}, n_sets={self.n_sets}, n_tokens={self.n_tokens}, "
            f"token_dim={self.token_dim}, hidden_dim={self.hidden_dim}, buckets={len(self.bucket_sizes)}"
        )


def _read_gene_sets(gene_sets):
    """Check a GeneSetIndex-like object and return (members, background, n_genes)."""
    for attribute in ("members", "background", "n_genes"):
        if not hasattr(gene_sets, attribute):
            raise TypeError(
                f"gene_sets must have members, background and n_genes attributes "
                f"(as skrnafm.pathways.resolve_gene_sets returns), but {type(gene_sets).__name__} "
                f"has no {attribute!r}."
            )
    n_genes = int(gene_sets.n_genes)
    if n_genes < 1:
        raise ValueError(f"gene_sets.n_genes must be >= 1, got {n_genes!r}.")

    members = []
    for p, genes in enumerate(gene_sets.members):
        genes = np.unique(np.asarray(genes, dtype=np.int64))
        if genes.size and (genes[0] < 0 or genes[-1] >= n_genes):
            raise ValueError(f"gene set {p} has gene indices outside [0, {n_genes}): {genes[[0, -1]].tolist()}.")
        members.append(genes)
    background = np.unique(np.asarray(gene_sets.background, dtype=np.int64))
    if background.size and (background[0] < 0 or background[-1] >= n_genes):
        raise ValueError(f"gene_sets.background has gene indices outside [0, {n_genes}).")
    return members, background, n_genes
