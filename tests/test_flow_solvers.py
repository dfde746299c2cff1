"""Closed-form tests for the ODE solvers.

Two exact answers: the linear field dx/dt = A x, whose solution at t = 1 is
expm(A) x0, and the marginal velocity field of the straight path from
N(0, 1) to N(mu, s^2), whose flow maps a noise value z to mu + s z.
"""

import math

import pytest
import torch

from skrnafm.flow import SOLVERS, integrate

A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)
X0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)
EXACT = X0 @ torch.linalg.matrix_exp(A).T

ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}

# Largest error at n_steps=20 for this A and X0. Each bound is about twice
# the observed error, so the test fails on a real loss of accuracy.
TOLERANCE_20_STEPS = {"euler": 5e-2, "midpoint": 2e-3, "heun": 2e-3, "rk4": 5e-7}


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny, so OpenMP synchronisation between threads costs more
    # than the work (25 times more on a busy 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def linear_field(x, t):
    return x @ A.T


def _error(method, n_steps):
    x = integrate(linear_field, X0, method=method, n_steps=n_steps)
    return float((x - EXACT).abs().max())


@pytest.mark.parametrize("method", list(ORDERS))
def test_integrate_linear_field_tolerance(method):
    assert _error(method, 20) < TOLERANCE_20_STEPS[method]


@pytest.mark.parametrize("method", list(ORDERS))
def test_integrate_convergence_order(method):
    # Halving the step divides the global error by about 2 ** order.
    ratio = _error(method, 20) / _error(method, 40)
    assert ratio == pytest.approx(2 ** ORDERS[method], rel=0.15)


def test_integrate_dopri5_meets_tolerance():
    x, info = integrate(linear_field, X0, method="dopri5", rtol=1e-8, atol=1e-10, return_info=True)
    assert float((x - EXACT).abs().max()) < 1e-7
    assert info.n_steps > 0


def test_integrate_dopri5_counts_evaluations():
    calls = []

    def counted(x, t):
        calls.append(t)
        return linear_field(x, t)

    _, info = integrate(counted, X0, method="dopri5", rtol=1e-6, atol=1e-8, return_info=True)
    # Two calls to choose the first step, then six per attempted step (FSAL).
    assert info.nfe == len(calls)
    assert info.nfe == 2 + 6 * (info.n_steps + info.n_rejected)


def test_integrate_dopri5_loose_tolerance_fewer_steps():
    _, tight = integrate(linear_field, X0, method="dopri5", rtol=1e-8, atol=1e-10, return_info=True)
    _, loose = integrate(linear_field, X0, method="dopri5", rtol=1e-3, atol=1e-5, return_info=True)
    assert loose.nfe < tight.nfe


def test_integrate_dopri5_max_steps():
    with pytest.raises(RuntimeError, match="max_steps=2"):
        integrate(linear_field, X0, method="dopri5", rtol=1e-10, atol=1e-12, max_steps=2)


@pytest.mark.parametrize("method", SOLVERS)
def test_integrate_backwards_inverts(method):
    forward = integrate(linear_field, X0, method=method, n_steps=100, rtol=1e-9, atol=1e-11)
    back = integrate(linear_field, forward, method=method, n_steps=100, t0=1.0, t1=0.0, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(back, X0, atol=5e-2 if method == "euler" else 1e-5, rtol=0)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_integrate_fixed_step_nfe(method):
    calls_per_step = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[method]
    _, info = integrate(linear_field, X0, method=method, n_steps=7, return_info=True)
    assert info.nfe == 7 * calls_per_step
    assert info.n_steps == 7


def test_integrate_time_passed_as_float():
    seen = []
    integrate(lambda x, t: seen.append(t) or x, X0, method="euler", n_steps=4)
    assert seen == [0.0, 0.25, 0.5, 0.75]


def test_integrate_follows_dtype():
    x = integrate(lambda x, t: -x, torch.ones(3, dtype=torch.float32), method="heun", n_steps=3)
    assert x.dtype == torch.float32


def test_integrate_rejects_unknown_method():
    with pytest.raises(ValueError, match="method must be one of"):
        integrate(linear_field, X0, method="rk45")


@pytest.mark.parametrize("n_steps", [0, -1, 2.5, True])
def test_integrate_rejects_bad_n_steps(n_steps):
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        integrate(linear_field, X0, method="euler", n_steps=n_steps)


def test_integrate_rejects_bad_tolerance():
    with pytest.raises(ValueError, match="rtol and atol must be positive"):
        integrate(linear_field, X0, method="dopri5", rtol=0.0)


# Gaussian target: x1 ~ N(mu, s^2), x0 ~ N(0, 1), path x_t = t x1 + (1 - t) x0.
# x_t is Gaussian with mean t mu and variance sigma_t^2 = t^2 s^2 + (1 - t)^2,
# and Cov(x1 - x0, x_t) = t s^2 - (1 - t), so the marginal velocity is
# E[x1 - x0 | x_t = x] = mu + (t s^2 - (1 - t)) / sigma_t^2 * (x - t mu).
MU = torch.tensor([1.5, -2.0, 0.0, 0.7], dtype=torch.float64)
S = torch.tensor([0.5, 2.0, 1.0, 0.1], dtype=torch.float64)


def gaussian_velocity(x, t):
    variance = t**2 * S**2 + (1 - t) ** 2
    return MU + (t * S**2 - (1 - t)) / variance * (x - t * MU)


def gaussian_flow_map(z, t):
    return t * MU + torch.sqrt(t**2 * S**2 + (1 - t) ** 2) * z


def test_gaussian_velocity_matches_flow_map():
    # The monotone map z -> t mu + sigma_t z keeps x_t's marginal, so its time
    # derivative must equal the velocity field at the mapped point.
    z = torch.randn(50, 4, dtype=torch.float64)
    for t in (0.1, 0.4, 0.9):
        eps = 1e-6
        derivative = (gaussian_flow_map(z, t + eps) - gaussian_flow_map(z, t - eps)) / (2 * eps)
        torch.testing.assert_close(gaussian_velocity(gaussian_flow_map(z, t), t), derivative)


def test_gaussian_velocity_matches_monte_carlo():
    # Regress x1 - x0 on x_t over many path samples: the fit is the
    # conditional mean, which for Gaussians is linear in x_t.
    gen = torch.Generator().manual_seed(0)
    n, t = 400_000, 0.3
    x0 = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    x1 = MU + S * torch.randn(n, 4, generator=gen, dtype=torch.float64)
    x_t = t * x1 + (1 - t) * x0
    u = x1 - x0
    centred = x_t - x_t.mean(0)
    slope = (centred * (u - u.mean(0))).mean(0) / centred.pow(2).mean(0)
    expected_slope = (t * S**2 - (1 - t)) / (t**2 * S**2 + (1 - t) ** 2)
    torch.testing.assert_close(slope, expected_slope, atol=0.02, rtol=0)


@pytest.mark.parametrize(("method", "n_steps", "tolerance"), [("rk4", 50, 1e-4), ("dopri5", None, 1e-3), ("heun", 100, 1e-2)])
def test_integrate_gaussian_maps_noise_exactly(method, n_steps, tolerance):
    z = torch.randn(200, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kwargs = {"n_steps": n_steps} if n_steps else {"rtol": 1e-6, "atol": 1e-8}
    x1 = integrate(gaussian_velocity, z, method=method, **kwargs)
    torch.testing.assert_close(x1, MU + S * z, atol=tolerance, rtol=0)


def test_integrate_gaussian_sample_moments():
    n = 20000
    z = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x1 = integrate(gaussian_velocity, z, method="euler", n_steps=200)
    # Four standard errors of the sample mean and the sample std, plus the
    # Euler bias at 200 steps (below 0.01 here).
    mean_tolerance = 4 * S / math.sqrt(n) + 0.01
    std_tolerance = 4 * S / math.sqrt(2 * n) + 0.01
    assert bool(((x1.mean(0) - MU).abs() < mean_tolerance).all())
    assert bool(((x1.std(0) - S).abs() < std_tolerance).all())
