"""Classifier-free guidance as a velocity wrapper.

Contract
--------
``guided_velocity(v_cond, v_null, scale)`` returns
``v_null + scale * (v_cond - v_null)``; ``scale=1`` returns ``v_cond``
itself and ``scale=0`` returns ``v_null`` itself, with no arithmetic.

``ClassifierFreeGuidance(model, cond, null_cond, scale)`` turns a
conditional velocity network ``model(x, t, cond) -> v`` into the plain
``velocity_fn(x, t)`` that :func:`skrnafm.flow.integrate` expects. ``cond``
and ``null_cond`` are condition encodings computed once before sampling
(for :class:`skrnafm.nn.VelocityNet`: ``encode_condition(tokens)`` and
``null_condition(n)``), so the solver never re-encodes the slide. With
``scale == 1`` the null branch is never evaluated, with ``scale == 0`` the
conditional branch is never evaluated. Otherwise both branches run in one
network call on the stacked batch ``[x, x]`` (``batch_branches=True``),
which keeps matrix products large, or in two calls.
"""

import torch

__all__ = ["ClassifierFreeGuidance", "guided_velocity"]


def guided_velocity(v_cond, v_null, scale):
    """Combine conditional and null velocities as ``v_null + scale * (v_cond - v_null)``.

    Parameters
    ----------
    v_cond, v_null : Tensor
        Velocities with and without the condition, same shape.
    scale : float
        Guidance weight ``w >= 0``. 1 gives ``v_cond`` exactly, 0 gives
        ``v_null`` exactly, larger values push samples towards the condition.

    Returns
    -------
    Tensor
    """
    if scale == 1:
        return v_cond
    if scale == 0:
        return v_null
    return torch.lerp(v_null, v_cond, float(scale))


class ClassifierFreeGuidance:
    """Guided velocity field ``(x, t) -> v`` over a conditional network.

    Parameters
    ----------
    model : callable
        ``model(x, t, cond)`` returning a velocity of the shape of ``x``.
    cond : Tensor of shape (n_samples, cond_dim)
        Encoded condition for each row of ``x``.
    null_cond : Tensor of shape (n_samples, cond_dim) or (1, cond_dim)
        Encoded null condition. A single row is broadcast to every sample.
    scale : float, default=2.0
        Guidance weight, at least 0.
    batch_branches : bool, default=True
        Run both branches in one call on a doubled batch.

    Attributes
    ----------
    n_model_calls : int
        Calls made to ``model`` so far. A batched guided evaluation counts once.
    n_evaluations : int
        Guided velocity evaluations so far (the solver's NFE).
    """

    def __init__(self, model, cond, null_cond, scale=2.0, *, batch_branches=True):
        if not scale >= 0:
            raise ValueError(f"scale must be >= 0, got {scale!r}.")
        self.model = model
        self.cond = cond
        self.null_cond = null_cond
        self.scale = float(scale)
        self.batch_branches = batch_branches
        self.n_model_calls = 0
        self.n_evaluations = 0

    def __call__(self, x, t):
        self.n_evaluations += 1
        if self.scale == 1:
            self.n_model_calls += 1
            return self.model(x, t, self.cond)

        null_cond = self.null_cond.expand(x.shape[0], -1) if self.null_cond.shape[0] == 1 else self.null_cond
        if self.scale == 0:
            self.n_model_calls += 1
            return self.model(x, t, null_cond)

        if self.batch_branches:
            self.n_model_calls += 1
            t_both = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim == 1 else t
            both = self.model(torch.cat([x, x]), t_both, torch.cat([self.cond, null_cond]))
            v_cond, v_null = both.chunk(2)
        else:
            self.n_model_calls += 2
            v_cond = self.model(x, t, self.cond)
            v_null = self.model(x, t, null_cond)
        return guided_velocity(v_cond, v_null, self.scale)
