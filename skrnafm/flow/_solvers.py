"""ODE solvers for sampling: fixed-step Euler, midpoint, Heun and adaptive Dormand-Prince.

Contract
--------
``integrate(velocity_fn, x0, method=..., n_steps=...)`` integrates
``dx/dt = velocity_fn(x, t)`` from ``t0`` to ``t1`` (default 0 to 1) and
returns ``x(t1)``. ``velocity_fn`` receives ``x`` (a tensor of the shape of
``x0``) and ``t`` (a Python float) and returns a tensor of the shape of
``x``. With ``return_info=True`` it also returns a :class:`SolverInfo`
whose ``nfe`` counts the calls to ``velocity_fn``.

Cost and global error for a smooth field, with h = (t1 - t0) / n_steps:

========== ================== ==============
method     calls per step     global error
========== ================== ==============
euler      1                  O(h)
midpoint   2                  O(h^2)
heun       2                  O(h^2)
rk4        4                  O(h^4)
dopri5     6 (FSAL), adaptive ~ rtol, atol
========== ================== ==============

``dopri5`` ignores ``n_steps`` and picks its own steps so that the local
error estimate stays below ``atol + rtol * |x|`` in RMS norm. It raises
``RuntimeError`` after ``max_steps`` accepted steps.

Device and dtype follow ``x0``. Run the solver under ``torch.no_grad()``
for sampling, because nothing here detaches tensors.
"""

import math
from dataclasses import dataclass

import torch

__all__ = ["SOLVERS", "SolverInfo", "integrate"]

SOLVERS = ("euler", "midpoint", "heun", "rk4", "dopri5")

# Dormand-Prince 5(4) Butcher tableau (Dormand and Prince, 1980). The fifth
# order weights equal the last row of A, so the last stage of an accepted
# step is the first stage of the next one (FSAL).
_DOPRI_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DOPRI_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DOPRI_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DOPRI_ERR = tuple(b5 - b4 for b5, b4 in zip(_DOPRI_B5, _DOPRI_B4))

# Step-size controller: new h = h * clip(SAFETY * err^(-1/5), MIN, MAX).
_SAFETY = 0.9
_MIN_FACTOR = 0.2
_MAX_FACTOR = 10.0


@dataclass
class SolverInfo:
    """Cost of one call of :func:`integrate`.

    Attributes
    ----------
    method : str
        Solver name.
    nfe : int
        Number of calls to the velocity function.
    n_steps : int
        Accepted steps.
    n_rejected : int
        Rejected steps (adaptive solver only, else 0).
    """

    method: str
    nfe: int
    n_steps: int
    n_rejected: int = 0


def integrate(
    velocity_fn,
    x0,
    *,
    method="euler",
    n_steps=20,
    t0=0.0,
    t1=1.0,
    rtol=1e-3,
    atol=1e-4,
    max_steps=1000,
    return_info=False,
):
    """Integrate ``dx/dt = velocity_fn(x, t)`` from ``t0`` to ``t1``.

    Parameters
    ----------
    velocity_fn : callable
        ``velocity_fn(x, t)`` with ``t`` a float, returning a tensor shaped like ``x``.
    x0 : Tensor
        State at ``t0``, for flow sampling a N(0, I) draw of shape (n_samples, n_genes).
    method : {"euler", "midpoint", "heun", "rk4", "dopri5"}, default="euler"
        Solver. The fixed-step methods take ``n_steps`` equal steps.
    n_steps : int, default=20
        Number of steps of a fixed-step method. ``"dopri5"`` ignores it.
    t0, t1 : float, default=0.0, 1.0
        Start and end time. ``t1 < t0`` integrates backwards.
    rtol, atol : float, default=1e-3, 1e-4
        Relative and absolute tolerance of ``"dopri5"``.
    max_steps : int, default=1000
        Most accepted steps ``"dopri5"`` may take before it raises.
    return_info : bool, default=False
        Also return a :class:`SolverInfo`.

    Returns
    -------
    x1 : Tensor
        State at ``t1``, same shape, dtype and device as ``x0``.
    info : SolverInfo
        Only when ``return_info`` is True.

    Examples
    --------
    >>> import torch
    >>> from skrnafm.flow import integrate
    >>> x1, info = integrate(lambda x, t: -x, torch.ones(3), method="heun",
    ...                      n_steps=50, return_info=True)
    >>> round(float(x1[0]), 4), info.nfe
    (0.3679, 100)
    """
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {SOLVERS}, got {method!r}.")
    if method != "dopri5" and (isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1):
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}.")
    t0, t1 = float(t0), float(t1)

    if method == "dopri5":
        x, info = _dopri5(velocity_fn, x0, t0, t1, rtol=rtol, atol=atol, max_steps=max_steps)
    else:
        x, info = _fixed_step(velocity_fn, x0, t0, t1, method, n_steps)
    return (x, info) if return_info else x


def _fixed_step(velocity_fn, x, t0, t1, method, n_steps):
    h = (t1 - t0) / n_steps
    nfe = 0
    for i in range(n_steps):
        t = t0 + i * h
        if method == "euler":
            x = x + h * velocity_fn(x, t)
            nfe += 1
        elif method == "midpoint":
            k1 = velocity_fn(x, t)
            x = x + h * velocity_fn(x + (0.5 * h) * k1, t + 0.5 * h)
            nfe += 2
        elif method == "heun":
            k1 = velocity_fn(x, t)
            k2 = velocity_fn(x + h * k1, t + h)
            x = x + (0.5 * h) * (k1 + k2)
            nfe += 2
        else:
            k1 = velocity_fn(x, t)
            k2 = velocity_fn(x + (0.5 * h) * k1, t + 0.5 * h)
            k3 = velocity_fn(x + (0.5 * h) * k2, t + 0.5 * h)
            k4 = velocity_fn(x + h * k3, t + h)
            x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
            nfe += 4
    return x, SolverInfo(method=method, nfe=nfe, n_steps=n_steps)


def _rms_error(err, x_old, x_new, rtol, atol):
    scale = atol + rtol * torch.maximum(x_old.abs(), x_new.abs())
    return float(torch.sqrt(torch.mean((err / scale) ** 2)))


def _initial_step(velocity_fn, x0, t0, direction, f0, rtol, atol):
    """Choose the first step from the size of x and of its derivatives (Hairer, Norsett, Wanner, II.4)."""
    scale = atol + rtol * x0.abs()
    d0 = float(torch.sqrt(torch.mean((x0 / scale) ** 2)))
    d1 = float(torch.sqrt(torch.mean((f0 / scale) ** 2)))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = velocity_fn(x0 + direction * h0 * f0, t0 + direction * h0)
    d2 = float(torch.sqrt(torch.mean(((f1 - f0) / scale) ** 2))) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1)


def _dopri5(velocity_fn, x, t0, t1, *, rtol, atol, max_steps):
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got rtol={rtol!r}, atol={atol!r}.")
    span = abs(t1 - t0)
    direction = 1.0 if t1 >= t0 else -1.0
    if span == 0:
        return x, SolverInfo(method="dopri5", nfe=0, n_steps=0)

    k_first = velocity_fn(x, t0)
    h = min(_initial_step(velocity_fn, x, t0, direction, k_first, rtol, atol), span)
    nfe, n_accepted, n_rejected = 2, 0, 0
    t = t0

    while direction * (t1 - t) > 1e-12 * span:
        if n_accepted >= max_steps:
            raise RuntimeError(
                f"dopri5 reached max_steps={max_steps} at t={t:.6g} before t1={t1:g}. Raise "
                "max_steps or loosen rtol/atol."
            )
        h = min(h, direction * (t1 - t))
        hs = direction * h
        stages = [k_first]
        for c, row in zip(_DOPRI_C[1:], _DOPRI_A[1:]):
            x_stage = x
            for a, k in zip(row, stages):
                if a != 0.0:
                    x_stage = x_stage + (hs * a) * k
            stages.append(velocity_fn(x_stage, t + hs * c))
            nfe += 1
        # The seventh stage is evaluated at the fifth-order solution itself.
        x_new = x_stage
        err = sum((hs * e) * k for e, k in zip(_DOPRI_ERR, stages) if e != 0.0)
        err_norm = _rms_error(err, x, x_new, rtol, atol)

        if err_norm <= 1.0:
            t = t + hs
            x = x_new
            k_first = stages[-1]
            n_accepted += 1
        else:
            n_rejected += 1
        if not math.isfinite(err_norm):
            factor = _MIN_FACTOR
        elif err_norm == 0.0:
            factor = _MAX_FACTOR
        else:
            factor = min(_MAX_FACTOR, max(_MIN_FACTOR, _SAFETY * err_norm ** -0.2))
        h = h * factor

    return x, SolverInfo(method="dopri5", nfe=nfe, n_steps=n_accepted, n_rejected=n_rejected)
