"""Tests for the pathway-aware velocity network."""

import copy
import itertools
import json
import pickle
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from skrnafm.flow import ClassifierFreeGuidance, LinearPath, integrate
from skrnafm.nn import VelocityNet
from skrnafm.nn._velocity import _plan_buckets


@dataclass
class GeneSets:
    """Stand-in for skrnafm.pathways.GeneSetIndex with the fields the network reads."""

    members: list
    background: np.ndarray
    n_genes: int
    set_names: list = field(default_factory=list)


SMALL_SETS = GeneSets(
    members=[np.array([0, 1, 2]), np.array([2, 3]), np.array([4, 5, 6, 7, 8]), np.array([8, 9]), np.array([10])],
    background=np.array([11, 12]),
    n_genes=13,
)
SMALL = {"n_tokens": 3, "token_dim": 8, "hidden_dim": 16, "depth": 2, "n_heads": 2}


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny, so OpenMP synchronisation between threads costs more
    # than the work (25 times more on a busy 2-core machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_net(gene_sets=SMALL_SETS, seed=0, **kwargs):
    torch.manual_seed(seed)
    return VelocityNet(gene_sets, **{**SMALL, **kwargs})


def randomize_zero_init(net, seed=0):
    """Give the zero-initialised heads and gates random values, keeping padding zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            if not bool(param.any()):
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
        keep = _padding_masks(net)
        for weight, mask in zip(net.out_weights, keep):
            weight.mul_(mask[:, :, None])
        for bias, mask in zip(net.out_biases, keep):
            bias.mul_(mask[:, :, None])
    return net


def _padding_masks(net):
    masks = []
    offset = 0
    index = net.padded_index
    for n_bucket, width in net.bucket_sizes:
        rows = index[offset : offset + n_bucket * width].view(n_bucket, width)
        masks.append((rows < net.n_genes).float())
        offset += n_bucket * width
    return masks


def test_velocity_net_output_shape():
    net = make_net()
    cond = net.encode_condition(torch.randn(4, 3, 8))
    assert cond.shape == (4, 16)
    assert net(torch.randn(4, 13), torch.rand(4), cond).shape == (4, 13)


def test_velocity_net_zero_at_init():
    # Zero-initialised heads make an untrained network return v = 0.
    net = make_net()
    v = net(torch.randn(4, 13), 0.5, net.encode_condition(torch.randn(4, 3, 8)))
    assert torch.equal(v, torch.zeros(4, 13))


def test_velocity_net_gradients_reach_every_weight():
    net = randomize_zero_init(make_net())
    cond = net.encode_condition(torch.randn(4, 3, 8), drop_mask=torch.tensor([True, False, False, False]))
    net(torch.randn(4, 13), torch.rand(4), cond).pow(2).sum().backward()
    missing = [name for name, param in net.named_parameters() if param.grad is None or not bool(param.grad.any())]
    assert missing == []


def test_velocity_net_drop_mask_uses_null():
    net = make_net()
    tokens = torch.randn(3, 3, 8)
    cond = net.encode_condition(tokens, drop_mask=torch.tensor([False, True, False]))
    torch.testing.assert_close(cond[1], net.null_embedding)
    torch.testing.assert_close(cond[[0, 2]], net.encode_condition(tokens[[0, 2]]))


def test_velocity_net_all_dropped_skips_encoder():
    net = make_net()
    cond = net.encode_condition(torch.full((2, 3, 8), float("nan")), drop_mask=torch.ones(2, dtype=torch.bool))
    torch.testing.assert_close(cond, net.null_condition(2))


def test_velocity_net_null_condition_shape():
    assert make_net().null_condition(5).shape == (5, 16)


def test_velocity_net_time_forms_agree():
    net = randomize_zero_init(make_net())
    x = torch.randn(2, 13)
    cond = net.encode_condition(torch.randn(2, 3, 8))
    from_float = net(x, 0.25, cond)
    torch.testing.assert_close(net(x, torch.tensor(0.25), cond), from_float)
    torch.testing.assert_close(net(x, torch.full((2,), 0.25), cond), from_float)


def test_velocity_net_rows_independent():
    # No batch statistics: a row's velocity does not depend on its batch mates.
    net = randomize_zero_init(make_net())
    x = torch.randn(4, 13)
    cond = net.encode_condition(torch.randn(4, 3, 8))
    t = torch.rand(4)
    torch.testing.assert_close(net(x, t, cond)[1:2], net(x[1:2], t[1:2], cond[1:2]))


def test_velocity_net_overlapping_sets_average():
    # With zero output weights each set head emits its bias, and set p emits p + 1.
    net = make_net()
    with torch.no_grad():
        for weight in net.out_weights:
            weight.zero_()
        start = 0
        for (n_bucket, width), bias in zip(net.bucket_sizes, net.out_biases):
            for row in range(n_bucket):
                original = int(net.set_order[start + row])
                bias[row] = original + 1.0
            start += n_bucket
        net.background_head.bias.fill_(-7.0)
    v = net(torch.randn(1, 13), 0.5, net.null_condition(1))[0]
    expected = torch.tensor([1, 1, 1.5, 2, 3, 3, 3, 3, 3.5, 4, 5, -7, -7], dtype=torch.float32)
    torch.testing.assert_close(v, expected)


def test_velocity_net_gene_in_no_set_gets_zero():
    sets = GeneSets(members=[np.array([0, 1])], background=np.array([2]), n_genes=4)
    net = randomize_zero_init(make_net(sets))
    v = net(torch.randn(2, 4), 0.5, net.encode_condition(torch.randn(2, 3, 8)))
    assert torch.equal(v[:, 3], torch.zeros(2))
    assert bool(v[:, :3].ne(0).all())


def test_velocity_net_without_background():
    sets = GeneSets(members=[np.array([0, 1]), np.array([1, 2])], background=np.array([], dtype=np.int64), n_genes=3)
    net = randomize_zero_init(make_net(sets))
    assert net(torch.randn(2, 3), 0.5, net.null_condition(2)).shape == (2, 3)


def test_velocity_net_single_gene():
    # A one-gene panel with no sets: only the background token carries it.
    sets = GeneSets(members=[], background=np.array([0]), n_genes=1)
    net = randomize_zero_init(make_net(sets))
    assert net(torch.randn(3, 1), torch.rand(3), net.null_condition(3)).shape == (3, 1)


def test_velocity_net_graph_mask():
    net = make_net()
    mask = net.graph_mask
    position = {int(p): i for i, p in enumerate(net.set_order)}
    # Sets 0 and 1 share gene 2. Sets 0 and 2 share nothing. Set 4 is alone.
    assert bool(mask[position[0], position[1]])
    assert not bool(mask[position[0], position[2]])
    assert bool(mask[position[2], position[3]])
    assert int(mask[position[4]].sum()) == 1
    assert bool(mask.diagonal().all())
    # The background token (last) attends only to itself.
    assert int(mask[-1].sum()) == 1


def test_velocity_net_padding_stays_zero_after_step():
    sets = GeneSets(members=[np.arange(k) for k in (2, 3, 5, 9, 17)], background=np.array([20]), n_genes=21)
    net = randomize_zero_init(make_net(sets, max_buckets=2))
    assert net.n_padded_weights > 0
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        cond = net.encode_condition(torch.randn(4, 3, 8))
        net(torch.randn(4, 21), torch.rand(4), cond).pow(2).mean().backward()
        optimizer.step()
    for weight, mask in zip(net.in_weights, _padding_masks(net)):
        assert bool((weight * (1 - mask[:, None, :])).eq(0).all())
    for weight, mask in zip(net.out_weights, _padding_masks(net)):
        assert bool((weight * (1 - mask[:, :, None])).eq(0).all())


def test_velocity_net_condition_projection():
    net = make_net(condition_dim=4)
    assert net.encode_condition(torch.randn(2, 3, 8)).shape == (2, 16)


def test_velocity_net_float64():
    net = randomize_zero_init(make_net()).double()
    cond = net.encode_condition(torch.randn(2, 3, 8, dtype=torch.float64))
    v = net(torch.randn(2, 13, dtype=torch.float64), 0.5, cond)
    assert v.dtype == torch.float64


def test_velocity_net_bf16_autocast_close():
    net = randomize_zero_init(make_net())
    x = torch.randn(4, 13)
    tokens = torch.randn(4, 3, 8)
    with torch.no_grad():
        reference = net(x, 0.3, net.encode_condition(tokens))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, 0.3, net.encode_condition(tokens))
    assert low.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: relative error of about 1%.
    assert float((low - reference).norm() / reference.norm()) < 0.03


def test_velocity_net_bf16_autocast_training_close():
    # With gradients on, the token stream stays fp32 and attention runs in fp32.
    net = randomize_zero_init(make_net())
    x = torch.randn(4, 13)
    tokens = torch.randn(4, 3, 8)
    reference = net(x, 0.3, net.encode_condition(tokens))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x, 0.3, net.encode_condition(tokens))
    low.float().pow(2).sum().backward()
    assert float((low.detach() - reference.detach()).norm() / reference.detach().norm()) < 0.03
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


def test_velocity_net_state_dict_round_trip():
    net = randomize_zero_init(make_net())
    fresh = make_net(seed=1)
    fresh.load_state_dict(net.state_dict())
    x = torch.randn(2, 13)
    tokens = torch.randn(2, 3, 8)
    torch.testing.assert_close(fresh(x, 0.5, fresh.encode_condition(tokens)), net(x, 0.5, net.encode_condition(tokens)))


def test_velocity_net_pickle_and_deepcopy():
    net = randomize_zero_init(make_net())
    x = torch.randn(2, 13)
    cond = net.encode_condition(torch.randn(2, 3, 8))
    expected = net(x, 0.5, cond)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        torch.testing.assert_close(clone(x, 0.5, cond), expected)


def test_velocity_net_rejects_missing_attributes():
    with pytest.raises(TypeError, match="has no 'background'"):
        VelocityNet(type("Sets", (), {"members": [], "n_genes": 3})(), **SMALL)


def test_velocity_net_rejects_out_of_range_genes():
    sets = GeneSets(members=[np.array([0, 5])], background=np.array([1]), n_genes=3)
    with pytest.raises(ValueError, match=r"gene set 0 has gene indices outside \[0, 3\)"):
        VelocityNet(sets, **SMALL)


def test_velocity_net_rejects_token_shape():
    with pytest.raises(ValueError, match=r"tokens must have shape \(batch, 3, 8\)"):
        make_net().encode_condition(torch.randn(2, 4, 8))


def test_velocity_net_rejects_state_width():
    net = make_net()
    with pytest.raises(ValueError, match=r"x_t must have shape \(batch, 13\)"):
        net(torch.randn(2, 12), 0.5, net.null_condition(2))


def test_velocity_net_rejects_bad_heads():
    with pytest.raises(ValueError, match="divisible by n_heads=3"):
        make_net(n_heads=3)


@pytest.mark.parametrize("max_buckets", [1, 2, 3, 5])
def test_plan_buckets_optimal(max_buckets):
    sizes = np.array([1, 2, 2, 3, 7, 8, 30])
    ranges = _plan_buckets(sizes, max_buckets)
    cost = sum((stop - start) * sizes[stop - 1] for start, stop in ranges)
    best = min(
        sum((b - a) * sizes[b - 1] for a, b in zip((0, *cuts), (*cuts, len(sizes))))
        for k in range(max_buckets)
        for cuts in itertools.combinations(range(1, len(sizes)), k)
    )
    assert len(ranges) <= max_buckets
    assert ranges[0][0] == 0
    assert ranges[-1][1] == len(sizes)
    assert cost == best


def test_velocity_net_go_mapping_buckets(go_mf_json):
    # The bundled GO molecular-function mapping at its full size, built with
    # a tiny width: 380 overlapping sets, padding under 15% of memberships.
    mapping = json.loads(go_mf_json.read_text())
    members = [np.asarray(v) for k, v in mapping.items() if k not in ("UNMAPPED", "UNCLASSIFIED")]
    background = np.asarray(sorted(set(mapping["UNMAPPED"]) | set(mapping["UNCLASSIFIED"])))
    sets = GeneSets(members=members, background=background, n_genes=20820)
    net = VelocityNet(sets, n_tokens=2, token_dim=8, hidden_dim=8, depth=1, n_heads=2)
    n_memberships = sum(len(np.unique(m)) for m in members)
    assert net.n_sets == 380
    assert len(net.bucket_sizes) <= 16
    assert net.n_padded_weights < 0.15 * n_memberships
    v = randomize_zero_init(net)(torch.randn(2, 20820), 0.5, net.null_condition(2))
    assert v.shape == (2, 20820)
    assert bool(torch.isfinite(v).all())


N_STEPS, BATCH, LR = 800, 64, 3e-3


def test_velocity_net_learns_conditional_gaussian():
    # Two slide types, each with its own Gaussian expression profile. After
    # brief training, guided-free sampling (scale 1) must recover each
    # type's mean and spread.
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    sets = GeneSets(members=[np.array([0, 1]), np.array([1, 2])], background=np.array([3]), n_genes=4)
    net = VelocityNet(sets, n_tokens=2, token_dim=4, hidden_dim=32, depth=2, n_heads=2)
    means = torch.tensor([[1.5, -1.0, 0.5, 2.0], [-1.0, 1.0, -0.5, -2.0]])
    stds = torch.tensor([[0.3, 0.5, 0.4, 0.3], [0.5, 0.3, 0.3, 0.4]])
    prototypes = torch.randn(2, 2, 4, generator=gen)
    path = LinearPath()
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)

    for _ in range(N_STEPS):
        kind = torch.randint(0, 2, (BATCH,), generator=gen)
        x1 = means[kind] + stds[kind] * torch.randn(BATCH, 4, generator=gen)
        batch = path.sample(x1, generator=gen)
        cond = net.encode_condition(prototypes[kind], drop_mask=torch.rand(BATCH, generator=gen) < 0.1)
        loss = (net(batch.x_t, batch.t, cond) - batch.u).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    net.eval()
    with torch.no_grad():
        for k in range(2):
            cond = net.encode_condition(prototypes[k : k + 1]).expand(2000, -1)
            guided = ClassifierFreeGuidance(net, cond, net.null_condition(1), scale=1.0)
            x1 = integrate(guided, torch.randn(2000, 4, generator=gen), method="heun", n_steps=10)
            assert float((x1.mean(0) - means[k]).abs().max()) < 0.15
            assert float((x1.std(0) / stds[k] - 1).abs().max()) < 0.3
