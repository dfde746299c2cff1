"""Tests for the linear probability path."""

import pytest
import torch

from skrnafm.flow import LinearPath


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny, so OpenMP synchronisation between threads costs more
    # than the work (25 times more on a busy 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_linear_path_endpoints():
    x0 = torch.randn(4, 6)
    x1 = torch.randn(4, 6)
    start = LinearPath.interpolate(x0, x1, torch.zeros(4))
    end = LinearPath.interpolate(x0, x1, torch.ones(4))
    assert torch.equal(start, x0)
    assert torch.equal(end, x1)


def test_linear_path_target_is_time_derivative():
    x0 = torch.randn(5, 3, dtype=torch.float64)
    x1 = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    eps = 1e-6
    derivative = (LinearPath.interpolate(x0, x1, t + eps) - LinearPath.interpolate(x0, x1, t - eps)) / (2 * eps)
    torch.testing.assert_close(derivative, LinearPath.velocity_target(x0, x1))


def test_linear_path_sample_fields():
    x1 = torch.randn(8, 10)
    batch = LinearPath().sample(x1, generator=torch.Generator().manual_seed(0))
    assert batch.t.shape == (8,)
    assert batch.x_t.shape == (8, 10)
    assert bool(((batch.t >= 0) & (batch.t <= 1)).all())
    torch.testing.assert_close(batch.u, x1 - batch.x0)
    torch.testing.assert_close(batch.x_t, batch.t[:, None] * x1 + (1 - batch.t[:, None]) * batch.x0)


def test_linear_path_sample_reproducible():
    x1 = torch.randn(8, 10)
    first = LinearPath().sample(x1, generator=torch.Generator().manual_seed(3))
    second = LinearPath().sample(x1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.x_t, second.x_t)
    assert torch.equal(first.t, second.t)


def test_linear_path_given_noise_and_time():
    x1 = torch.randn(3, 2)
    x0 = torch.randn(3, 2)
    t = torch.tensor([0.0, 0.5, 1.0])
    batch = LinearPath().sample(x1, x0=x0, t=t)
    assert torch.equal(batch.x0, x0)
    torch.testing.assert_close(batch.x_t[1], 0.5 * (x0[1] + x1[1]))


def test_linear_path_logit_normal_times():
    path = LinearPath("logit_normal", logit_std=1.0)
    t = path.sample_time(20000, generator=torch.Generator().manual_seed(0))
    assert bool(((t > 0) & (t < 1)).all())
    # sigmoid of a centred normal is symmetric about 0.5 and crowds the middle.
    assert abs(float(t.mean()) - 0.5) < 0.01
    assert float(t.std()) < 0.25


def test_linear_path_uniform_times_moments():
    t = LinearPath().sample_time(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(float(t.mean()) - 0.5) < 0.01
    assert abs(float(t.var()) - 1 / 12) < 0.003


def test_linear_path_follows_dtype():
    x1 = torch.randn(2, 3, dtype=torch.float64)
    batch = LinearPath().sample(x1)
    assert batch.x_t.dtype == torch.float64
    assert batch.t.dtype == torch.float64


def test_linear_path_rejects_unknown_distribution():
    with pytest.raises(ValueError, match="time_distribution must be one of"):
        LinearPath("beta")


def test_linear_path_rejects_bad_logit_std():
    with pytest.raises(ValueError, match="logit_std must be positive"):
        LinearPath("logit_normal", logit_std=0.0)


def test_linear_path_rejects_bad_time_shape():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
        LinearPath.interpolate(x, x, torch.zeros(3))


def test_linear_path_rejects_noise_shape():
    with pytest.raises(ValueError, match="x0 must have the shape of x1"):
        LinearPath().sample(torch.zeros(4, 3), x0=torch.zeros(4, 2))
