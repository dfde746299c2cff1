"""Tests for classifier-free guidance."""

import pytest
import torch

from skrnafm.flow import ClassifierFreeGuidance, guided_velocity, integrate


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny, so OpenMP synchronisation between threads costs more
    # than the work (25 times more on a busy 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class RecordingModel:
    """Velocity ``cond + t * x`` that records which conditions it was called with."""

    def __init__(self):
        self.conditions = []

    def __call__(self, x, t, cond):
        self.conditions.append(cond.clone())
        return cond + torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1) * x


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen)
    cond = torch.randn(3, 4, generator=gen)
    null = torch.randn(1, 4, generator=gen)
    return x, cond, null


def test_guided_velocity_formula():
    v_cond = torch.tensor([1.0, 2.0])
    v_null = torch.tensor([0.5, -1.0])
    torch.testing.assert_close(guided_velocity(v_cond, v_null, 2.0), v_null + 2.0 * (v_cond - v_null))


def test_guided_velocity_scale_one_is_conditional():
    v_cond = torch.randn(5)
    assert guided_velocity(v_cond, torch.randn(5), 1.0) is v_cond


def test_guided_velocity_scale_zero_is_null():
    v_null = torch.randn(5)
    assert guided_velocity(torch.randn(5), v_null, 0.0) is v_null


def test_guidance_scale_one_skips_null_branch(inputs):
    x, cond, null = inputs
    model = RecordingModel()
    v = ClassifierFreeGuidance(model, cond, null, scale=1.0)(x, 0.3)
    assert len(model.conditions) == 1
    assert torch.equal(model.conditions[0], cond)
    assert torch.equal(v, cond + 0.3 * x)


def test_guidance_scale_zero_skips_conditional_branch(inputs):
    x, cond, null = inputs
    model = RecordingModel()
    v = ClassifierFreeGuidance(model, cond, null, scale=0.0)(x, 0.3)
    assert len(model.conditions) == 1
    assert torch.equal(v, null.expand(3, -1) + 0.3 * x)


@pytest.mark.parametrize("batch_branches", [True, False])
def test_guidance_combines_branches(inputs, batch_branches):
    x, cond, null = inputs
    guided = ClassifierFreeGuidance(RecordingModel(), cond, null, scale=2.5, batch_branches=batch_branches)
    v_cond = cond + 0.7 * x
    v_null = null + 0.7 * x
    torch.testing.assert_close(guided(x, 0.7), v_null + 2.5 * (v_cond - v_null))


def test_guidance_batched_uses_one_call(inputs):
    x, cond, null = inputs
    model = RecordingModel()
    guided = ClassifierFreeGuidance(model, cond, null, scale=2.0)
    guided(x, 0.5)
    assert guided.n_model_calls == 1
    assert model.conditions[0].shape == (6, 4)


def test_guidance_batched_time_vector(inputs):
    x, cond, null = inputs
    t = torch.tensor([0.1, 0.5, 0.9])
    batched = ClassifierFreeGuidance(RecordingModel(), cond, null, scale=2.0)(x, t)
    separate = ClassifierFreeGuidance(RecordingModel(), cond, null, scale=2.0, batch_branches=False)(x, t)
    torch.testing.assert_close(batched, separate)


def test_guidance_counts_solver_evaluations(inputs):
    x, cond, null = inputs
    guided = ClassifierFreeGuidance(RecordingModel(), cond, null, scale=2.0)
    _, info = integrate(guided, x, method="heun", n_steps=3, return_info=True)
    assert guided.n_evaluations == info.nfe


def test_guidance_rejects_negative_scale(inputs):
    x, cond, null = inputs
    with pytest.raises(ValueError, match="scale must be >= 0"):
        ClassifierFreeGuidance(RecordingModel(), cond, null, scale=-0.5)
