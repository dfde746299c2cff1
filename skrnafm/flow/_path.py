"""Linear (rectified-flow) probability path between noise and data.

Contract
--------
``LinearPath`` joins a noise draw ``x0`` and a data point ``x1`` by the
straight line ``x_t = t * x1 + (1 - t) * x0``. Along that line the velocity
is constant, ``u = x1 - x0``, and a network trained with the mean-squared
error ``|v(x_t, t) - u|^2`` learns the marginal velocity field whose ODE
``dx/dt = v`` carries ``N(0, I)`` at ``t = 0`` to the data at ``t = 1``.

Typical training use::

    path = LinearPath()
    batch = path.sample(x1, generator=gen)          # t, x0, x_t, u
    loss = ((net(batch.x_t, batch.t, cond) - batch.u) ** 2).mean()

Times have shape ``(n_samples,)`` and broadcast over the trailing
dimensions of ``x0`` and ``x1``. Device and dtype follow ``x1``.
"""

from dataclasses import dataclass

import torch

__all__ = ["LinearPath", "PathSample"]

_TIME_DISTRIBUTIONS = ("uniform", "logit_normal")


@dataclass
class PathSample:
    """One draw from the probability path for a batch.

    Attributes
    ----------
    t : Tensor of shape (n_samples,)
        Times in [0, 1].
    x0 : Tensor of shape (n_samples, ...)
        Noise draws.
    x_t : Tensor of shape (n_samples, ...)
        Points on the path at time ``t``.
    u : Tensor of shape (n_samples, ...)
        Velocity target ``x1 - x0``.
    """

    t: torch.Tensor
    x0: torch.Tensor
    x_t: torch.Tensor
    u: torch.Tensor


class LinearPath:
    """Straight path ``x_t = t x1 + (1 - t) x0`` with target ``u = x1 - x0``.

    Parameters
    ----------
    time_distribution : {"uniform", "logit_normal"}, default="uniform"
        Law of the training times. ``"uniform"`` is U(0, 1), the rectified
        flow default. ``"logit_normal"`` draws ``sigmoid(N(mean, std))``,
        which puts more weight on the middle of the path.
    logit_mean : float, default=0.0
        Mean of the normal before the sigmoid (``"logit_normal"`` only).
    logit_std : float, default=1.0
        Standard deviation of the normal before the sigmoid.

    Examples
    --------
    >>> import torch
    >>> from skrnafm.flow import LinearPath
    >>> path = LinearPath()
    >>> x1 = torch.ones(4, 3)
    >>> batch = path.sample(x1, generator=torch.Generator().manual_seed(0))
    >>> tuple(batch.x_t.shape), tuple(batch.t.shape)
    ((4, 3), (4,))
    """

    def __init__(self, time_distribution="uniform", *, logit_mean=0.0, logit_std=1.0):
        if time_distribution not in _TIME_DISTRIBUTIONS:
            raise ValueError(
                f"time_distribution must be one of {_TIME_DISTRIBUTIONS}, "
                f"got {time_distribution!r}."
            )
        if not logit_std > 0:
            raise ValueError(f"logit_std must be positive, got {logit_std!r}.")
        self.time_distribution = time_distribution
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)

    def __repr__(self):
        return f"LinearPath(time_distribution={self.time_distribution!r})"

    def sample_time(self, n_samples, *, generator=None, device=None, dtype=torch.float32):
        """Draw ``n_samples`` training times in [0, 1] as a tensor of shape (n_samples,)."""
        if self.time_distribution == "uniform":
            return torch.rand(n_samples, generator=generator, device=device, dtype=dtype)
        normal = torch.randn(n_samples, generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(self.logit_mean + self.logit_std * normal)

    @staticmethod
    def interpolate(x0, x1, t):
        """Return ``t * x1 + (1 - t) * x0`` with ``t`` of shape (n_samples,) or a scalar."""
        t = _broadcast_time(t, x1)
        return t * x1 + (1.0 - t) * x0

    @staticmethod
    def velocity_target(x0, x1):
        """Return the conditional velocity ``x1 - x0``, constant along the path."""
        return x1 - x0

    def sample(self, x1, *, x0=None, t=None, generator=None):
        """Draw noise and times for a batch of targets and build the path sample.

        Parameters
        ----------
        x1 : Tensor of shape (n_samples, ...)
            Data points (standardized targets).
        x0 : Tensor of the same shape as ``x1``, default=None
            Noise, drawn from N(0, I) with ``generator`` when None.
        t : Tensor of shape (n_samples,), default=None
            Times, drawn from ``time_distribution`` when None.
        generator : torch.Generator, default=None
            Source of randomness, on the device of ``x1``.

        Returns
        -------
        PathSample
        """
        if x0 is None:
            x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        elif x0.shape != x1.shape:
            raise ValueError(f"x0 must have the shape of x1 {tuple(x1.shape)}, got {tuple(x0.shape)}.")
        if t is None:
            t = self.sample_time(x1.shape[0], generator=generator, device=x1.device, dtype=x1.dtype)
        x_t = self.interpolate(x0, x1, t)
        return PathSample(t=t, x0=x0, x_t=x_t, u=self.velocity_target(x0, x1))


def _broadcast_time(t, x):
    """Shape a scalar or (n_samples,) time so it broadcasts over ``x``."""
    t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"t must be a scalar or have shape ({x.shape[0]},), got shape {tuple(t.shape)}."
        )
    return t.reshape(-1, *([1] * (x.ndim - 1)))
