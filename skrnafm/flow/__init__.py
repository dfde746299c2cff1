"""The flow-matching maths: probability path, ODE solvers and guidance.

Nothing here depends on the networks or on scikit-learn:

* :class:`LinearPath` builds training pairs ``(x_t, t)`` and the velocity
  target ``u = x1 - x0`` for the straight noise-to-data path.
* :func:`integrate` runs a velocity field from ``t0`` to ``t1`` with Euler,
  midpoint, Heun, RK4 or adaptive Dormand-Prince 5(4).
* :class:`ClassifierFreeGuidance` and :func:`guided_velocity` combine the
  conditional and null velocities.
"""

from ._guidance import ClassifierFreeGuidance, guided_velocity
from ._path import LinearPath, PathSample
from ._solvers import SOLVERS, SolverInfo, integrate

__all__ = [
    "ClassifierFreeGuidance",
    "LinearPath",
    "PathSample",
    "SOLVERS",
    "SolverInfo",
    "guided_velocity",
    "integrate",
]
