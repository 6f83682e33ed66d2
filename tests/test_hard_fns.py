"""Values and shapes of every hard function on small hand-made inputs."""
import pytest
import torch
import yaml

from dab.errors import ConfigError
from dab.hard_fns import (HARD_FNS, binary_above_mean, bernoulli_sample, identity, kmeans_assign,
                          kmeans_quantize, make_hard_fn, signum_with_margin, sort_1d, sort_rows_cols,
                          topk_rows_cols)

from conftest import CONF_DIR


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ---- signum ----------------------------------------------------------------------------------

def test_signum_default_margin_and_boundaries():
    x = t([[-1.0, -0.5, -0.49, 0.0, 0.49, 0.5, 0.51, 2.0]])
    assert torch.equal(signum_with_margin(x), t([[-1, 0, 0, 0, 0, 0, 1, 1]]))
    assert torch.equal(make_hard_fn("signum")(x), signum_with_margin(x))  # config default eps = 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signum_custom_eps_boundary_maps_to_zero(dtype):
    x = torch.tensor([[-0.1, 0.1, -0.11, 0.11, 0.05, -3.0]], dtype=dtype)
    expected = torch.tensor([[0, 0, -1, 1, 0, -1]], dtype=dtype)
    assert torch.equal(signum_with_margin(x, eps=0.1), expected)
    assert torch.equal(make_hard_fn("signum", eps=0.1)(x), expected)


def test_signum_zero_margin_is_sign_and_keeps_shape_dtype():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y = signum_with_margin(x, eps=0.0)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y, torch.sign(x))


def test_signum_negative_margin_is_config_error():
    with pytest.raises(ConfigError, match="eps"):
        make_hard_fn("signum", eps=-0.1)


# ---- binary ----------------------------------------------------------------------------------

def test_binary_uses_each_samples_own_mean():
    x = t([[1, 2, 3, 4], [10, 20, 30, 40]])  # a batch-wide mean (17.5) would zero the first row
    assert torch.equal(binary_above_mean(x), t([[0, 0, 1, 1], [0, 0, 1, 1]]))


def test_binary_value_equal_to_mean_is_one():
    assert torch.equal(binary_above_mean(t([[1, 2, 3]])), t([[0, 1, 1]]))


def test_binary_feature_map_mean_over_all_non_batch_dims():
    x = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).view(2, 2, 2, 2)  # sample 0: 0..7, sample 1: 8..15
    y = make_hard_fn("binary")(x)
    assert y.shape == x.shape
    assert torch.equal(y.flatten(1), t([[0, 0, 0, 0, 1, 1, 1, 1]] * 2))


# ---- bernoulli -------------------------------------------------------------------------------

def test_bernoulli_values_shape_and_frequency():
    logits = torch.tensor([-2.0, 0.0, 1.5]).expand(20000, 3).contiguous()
    z = bernoulli_sample(logits, generator=torch.Generator().manual_seed(0))
    assert z.shape == logits.shape and z.dtype == logits.dtype
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    freq = z.mean(0)
    assert torch.allclose(freq, torch.sigmoid(logits[0]), atol=0.02), freq


def test_bernoulli_is_reproducible_with_a_seeded_generator_and_saturates():
    logits = torch.randn(4, 6)
    a = bernoulli_sample(logits, generator=torch.Generator().manual_seed(5))
    b = bernoulli_sample(logits, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    extreme = t([[-50.0, 50.0]])
    assert torch.equal(make_hard_fn("bernoulli")(extreme), t([[0.0, 1.0]]))


# ---- sorting ---------------------------------------------------------------------------------

def test_sort_1d_sorts_each_flattened_sample():
    x = t([[3, 1, 2], [0, -1, 5]])
    assert torch.equal(sort_1d(x), t([[1, 2, 3], [-1, 0, 5]]))
    fm = t([[[4, 3], [2, 1]], [[8, 5], [7, 6]]])  # [2, 2, 2]
    assert torch.equal(sort_1d(fm), t([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]))


def test_sort_rows_cols_hand_example():
    x = t([[[[3, 1, 2],
              [9, 7, 8]]]])  # [B=1, C=1, H=2, W=3]
    y = sort_rows_cols(x)
    assert y.shape == (1, 2, 2, 3)
    assert torch.equal(y[:, 0], t([[[1, 2, 3], [7, 8, 9]]]))  # rows sorted along W
    assert torch.equal(y[:, 1], t([[[3, 1, 2], [9, 7, 8]]]))  # columns sorted along H (already)
    x2 = t([[[[5, 0], [1, 4]]]])
    assert torch.equal(sort_rows_cols(x2)[:, 1], t([[[1, 0], [5, 4]]]))


def test_sort_rows_cols_channels_and_halves():
    x = torch.randn(3, 2, 4, 5)
    y = sort_rows_cols(x)
    assert y.shape == (3, 4, 4, 5)
    assert torch.equal(y[:, :2], x.sort(dim=-1).values)
    assert torch.equal(y[:, 2:], x.sort(dim=-2).values)
    assert (y[:, :2].diff(dim=-1) >= 0).all() and (y[:, 2:].diff(dim=-2) >= 0).all()
    with pytest.raises(ValueError):
        sort_rows_cols(torch.randn(3, 8))


def test_topk_rows_cols_hand_example():
    x = t([[[[3, 1, 2],
              [9, 7, 8],
              [4, 6, 5]]]])
    y = topk_rows_cols(x, k=2)
    rows = [3, 2, 9, 8, 6, 5]
    cols = [9, 4, 7, 6, 8, 5]
    assert y.shape == (1, 1, (3 + 3) * 2)
    assert torch.equal(y, t([[rows + cols]]))


def test_topk_rows_cols_non_square_is_descending_per_group():
    x = torch.randn(2, 3, 4, 6)
    k = 3
    y = topk_rows_cols(x, k)
    assert y.shape == (2, 3, (4 + 6) * k)
    groups = y.view(2, 3, 4 + 6, k)
    assert (groups.diff(dim=-1) <= 0).all()
    assert torch.equal(groups[:, :, :4], x.sort(dim=-1, descending=True).values[..., :k])
    assert torch.equal(groups[:, :, 4:], x.sort(dim=-2, descending=True).values[:, :, :k].transpose(-1, -2))


# ---- k-means ---------------------------------------------------------------------------------

def test_kmeans_is_deterministic_for_a_seed():
    x = torch.randn(3, 4, 5, 5)
    assert torch.equal(kmeans_quantize(x, k=4, seed=7), kmeans_quantize(x, k=4, seed=7))
    v = torch.randn(3, 30)
    assert torch.equal(kmeans_quantize(v, k=4, seed=7), kmeans_quantize(v, k=4, seed=7))


def test_kmeans_vector_output_values_are_centroids_at_most_k():
    x = torch.randn(4, 30)
    k = 5
    q = kmeans_quantize(x, k=k, iters=10, seed=0)
    assert q.shape == x.shape
    assign, cents = kmeans_assign(x.unsqueeze(-1), k, 10, 0)
    assert assign.shape == (4, 30) and assign.dtype == torch.int64
    assert cents.shape == (4, k, 1)
    assert int(assign.min()) >= 0 and int(assign.max()) < k
    for b in range(4):
        assert len(q[b].unique()) <= k
        assert torch.isin(q[b], cents[b, :, 0]).all()
        assert torch.equal(q[b], cents[b, assign[b], 0])


def test_kmeans_feature_map_quantizes_channel_vectors():
    b, c, h, w, k = 2, 3, 4, 4, 5
    x = torch.randn(b, c, h, w)
    q = kmeans_quantize(x, k=k, seed=1)
    assert q.shape == x.shape
    points = x.flatten(2).transpose(1, 2)  # [B, H*W, C]
    assign, cents = kmeans_assign(points, k, 10, 1)
    q_points = q.flatten(2).transpose(1, 2)
    for i in range(b):
        assert len(q_points[i].unique(dim=0)) <= k
        assert torch.equal(q_points[i], cents[i, assign[i]])


def test_kmeans_needs_k_points():
    with pytest.raises(ValueError):
        kmeans_quantize(torch.randn(2, 3), k=5)
    with pytest.raises(ValueError):
        kmeans_quantize(torch.randn(2, 3, 4), k=2)  # neither [B, C, H, W] nor [B, F]


def _separated_vectors(k: int, batch: int, per_cluster: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    centers = torch.arange(k, dtype=torch.float32) * 10.0
    labels = torch.stack([torch.randperm(k * per_cluster, generator=gen) % k for _ in range(batch)])
    x = centers[labels] + 0.1 * torch.randn(batch, k * per_cluster, generator=gen)
    return x, centers[labels]


@pytest.mark.parametrize("k", [2, 3, 10])
def test_kmeans_recovers_well_separated_clusters(k):
    """k clusters 10 apart with spread 0.1: every point must land on its own cluster's mean,
    for any seed. (k=10 is the paper's and the config's default.)"""
    x, truth = _separated_vectors(k, batch=8, per_cluster=6)
    failed = {}
    for seed in range(3):
        q = kmeans_quantize(x, k=k, iters=10, seed=seed)
        bad = sum((q[b] - truth[b]).abs().max().item() >= 1.0 for b in range(x.shape[0]))
        if bad:
            failed[seed] = bad
    assert not failed, f"samples (of {x.shape[0]}) that merged clusters, per seed: {failed}"


def test_kmeans_recovers_separated_clusters_in_a_feature_map():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(16) % 3  # every cluster is present
    pts = centers[labels] + 0.05 * torch.randn(16, 2, generator=gen)  # [H*W, C]
    x = pts.T.reshape(1, 2, 4, 4)
    q = kmeans_quantize(x, k=3, seed=0)
    q_points = q.flatten(2).transpose(1, 2)[0]
    assert (q_points - centers[labels]).abs().max() < 1.0


# ---- batch independence ----------------------------------------------------------------------

BATCH_INDEPENDENT = [
    ("signum", (12,), {}), ("binary", (2, 3, 4), {}), ("sort1d", (12,), {}),
    ("sort_rows_cols", (2, 3, 4), {}), ("topk", (2, 4, 5), {"k": 2}), ("identity", (6,), {}),
    ("kmeans", (40,), {"k": 5}), ("kmeans", (3, 5, 5), {"k": 4}),
]


@pytest.mark.parametrize("name,in_shape,kwargs", BATCH_INDEPENDENT,
                         ids=[f"{n}-{'x'.join(map(str, s))}" for n, s, _ in BATCH_INDEPENDENT])
def test_hard_fn_output_for_a_sample_does_not_depend_on_the_rest_of_the_batch(name, in_shape, kwargs):
    """Module contract: "no function mixes samples". A sample's hard output must be the same
    whether it is scored alone or at any position of a batch (eval runs in chunks)."""
    fn = make_hard_fn(name, **kwargs)
    x = torch.randn(6, *in_shape, generator=torch.Generator().manual_seed(0))
    full = fn(x)
    changed = [i for i in range(x.shape[0]) if not torch.allclose(full[i], fn(x[i:i + 1])[0], atol=1e-6)]
    assert not changed, f"samples {changed} of 6 get a different output alone than in the batch"


# ---- registry and shapes ---------------------------------------------------------------------

SHAPE_CASES = [
    ("signum", (7,), {}), ("signum", (2, 3, 4), {}), ("binary", (2, 3, 4), {}), ("bernoulli", (5,), {}),
    ("sort1d", (9,), {}), ("sort1d", (2, 3, 4), {}), ("sort_rows_cols", (2, 3, 4), {}),
    ("topk", (2, 4, 5), {"k": 2}), ("topk", (1, 3, 3), {"k": 3}), ("kmeans", (2, 4, 4), {"k": 3}),
    ("kmeans", (12,), {"k": 3}), ("identity", (2, 5), {}),
]


@pytest.mark.parametrize("name,in_shape,kwargs", SHAPE_CASES)
def test_out_shape_matches_actual_output(name, in_shape, kwargs):
    fn = make_hard_fn(name, **kwargs)
    x = torch.randn(3, *in_shape)
    y = fn(x)
    assert tuple(y.shape) == (3, *fn.out_shape(in_shape))
    assert fn.preserves_shape(in_shape) == (tuple(y.shape[1:]) == tuple(in_shape))
    assert fn.name == name


def test_hard_fn_call_is_not_differentiable():
    x = torch.randn(2, 8, requires_grad=True)
    assert not make_hard_fn("sort1d")(x).requires_grad


@pytest.mark.parametrize("name,in_shape,kwargs,needle", [
    ("sort_rows_cols", (8,), {}, "[C, H, W]"),
    ("topk", (8,), {}, "[C, H, W]"),
    ("topk", (2, 4, 5), {"k": 5}, "min(H, W)"),
    ("topk", (2, 4, 5), {"k": 0}, "min(H, W)"),
    ("kmeans", (6,), {"k": 10}, "at least k points"),
    ("kmeans", (2, 2, 2), {"k": 5}, "at least k points"),
    ("kmeans", (3, 4), {"k": 2}, "[C, H, W] or [F]"),
])
def test_out_shape_rejects_unusable_shapes(name, in_shape, kwargs, needle):
    with pytest.raises(ConfigError) as err:
        make_hard_fn(name, **kwargs).out_shape(in_shape)
    assert needle in str(err.value)


def test_identity_returns_input():
    x = torch.randn(2, 3)
    assert identity(x) is x
    assert torch.equal(make_hard_fn("identity")(x), x)


def test_unknown_name_lists_every_valid_choice():
    with pytest.raises(ConfigError) as err:
        make_hard_fn("sgnum")
    msg = str(err.value)
    assert "sgnum" in msg
    for name in HARD_FNS.names():
        assert name in msg


def test_every_registered_name_builds_and_has_a_config_file():
    for name in HARD_FNS.names():
        assert make_hard_fn(name).name == name
    group = {yaml.safe_load(p.read_text())["name"] for p in (CONF_DIR / "hard_fn").glob("*.yaml")}
    assert group == set(HARD_FNS.names())
