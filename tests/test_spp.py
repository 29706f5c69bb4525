"""Spatial pyramid pooling: the bin schemes, the op
lasagne.ops.spp.spatial_pyramid_pool and the layers SpatialPyramidPoolingLayer
and SpatialPyramidPoolingDNNLayer, against a float64 loop reference written
here from the bin formulas."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from lasagne.layers import InputLayer, SpatialPyramidPoolingLayer, get_output, get_output_shape
from lasagne.layers.dnn import SpatialPyramidPoolingDNNLayer
from lasagne.ops import spp as spp_ops
from lasagne.ops.spp import spatial_pyramid_pool, spp_bins

from harness import check_layer, check_params, check_raises

LAYERS = (SpatialPyramidPoolingLayer, SpatialPyramidPoolingDNNLayer)
MODES = ("max", "average_inc_pad", "average_exc_pad")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: PyTorch's CPU threading only adds synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the reference ---------------------------------------------------------------

def ref_kaiming(L, n):
    """He et al.'s bins in exact rational arithmetic."""
    return [(math.floor(Fraction(i * L, n)), math.ceil(Fraction((i + 1) * L, n)))
            for i in range(n)]


def ref_fast_windows(L, n):
    """The original's pooling call: window ceil(L/n), stride floor(L/n),
    windows inside the input; None where the stride is 0 (the original
    crashed)."""
    window, stride = math.ceil(Fraction(L, n)), math.floor(Fraction(L, n))
    if stride == 0:
        return None
    starts = range(0, L - window + 1, stride)
    return [(a, a + window) for a in starts]


def ref_bins(L, n, implementation):
    if implementation == "fast":
        windows = ref_fast_windows(L, n)
        if windows is not None and len(windows) == n:
            return windows
    return ref_kaiming(L, n)


def ref_spp(x, pool_dims, mode, implementation):
    """Loop over levels and bins; a bin's maximum or mean."""
    x = np.asarray(x, np.float64)
    H, W = x.shape[2:]
    features = []
    for n in pool_dims:
        for r0, r1 in ref_bins(H, n, implementation):
            for c0, c1 in ref_bins(W, n, implementation):
                block = x[:, :, r0:r1, c0:c1]
                features.append(block.max(axis=(2, 3)) if mode == "max"
                                else block.mean(axis=(2, 3)))
    return np.stack(features, axis=-1)


def ref_spp_max_grad(x, gy, pool_dims, implementation):
    """Gradient of max pyramid pooling: per level and bin, the whole ``gy``
    of the bin goes to its first maximum in row-major order within the bin
    (numpy's argmax of the flattened bin returns the first occurrence of
    the maximum; a NaN counts as the maximum)."""
    x, gy = np.asarray(x, np.float64), np.asarray(gy, np.float64)
    N, C, H, W = x.shape
    grad = np.zeros(x.shape)
    k = 0
    for n in pool_dims:
        for r0, r1 in ref_bins(H, n, implementation):
            for c0, c1 in ref_bins(W, n, implementation):
                for b in range(N):
                    for c in range(C):
                        i, j = divmod(int(np.argmax(x[b, c, r0:r1, c0:c1])), c1 - c0)
                        grad[b, c, r0 + i, c0 + j] += gy[b, c, k]
                k += 1
    return grad


def tie_planes(rng, H, W):
    """(1, 6, H, W) float64 planes full of exact ties: small integers, a
    constant, zeros (as after a ReLU), a ReLU of small integers, all -inf,
    and small integers with some +inf."""
    mixed = rng.integers(0, 2, (H, W)).astype(np.float64)
    mixed[rng.random((H, W)) < 0.2] = np.inf
    planes = [rng.integers(0, 3, (H, W)), np.full((H, W), 1.5), np.zeros((H, W)),
              np.maximum(rng.integers(-2, 3, (H, W)), 0), np.full((H, W), -np.inf), mixed]
    return np.stack(planes).astype(np.float64)[None]


def spp_max_grad(x, gy, pool_dims, implementation):
    """Output and input gradient of the op (gy: numpy, any dtype)."""
    x = x.detach().requires_grad_()
    y = spatial_pyramid_pool(x, pool_dims, "max", implementation)
    (g,) = torch.autograd.grad(y, x, torch.tensor(gy, dtype=x.dtype))
    return y.detach(), g


# --- the bins ------------------------------------------------------------------------

def test_kaiming_bins_are_exact():
    for L in range(1, 120):
        for n in range(1, 25):
            assert spp_bins(L, n, "kaiming") == ref_kaiming(L, n), (L, n)


def test_bins_always_n_nonempty_inside():
    for L in range(1, 80):
        for n in range(1, 16):
            for implementation in ("fast", "kaiming"):
                bins = spp_bins(L, n, implementation)
                assert len(bins) == n
                assert all(0 <= a < b <= L for a, b in bins), (L, n, implementation, bins)
            kaiming = spp_bins(L, n, "kaiming")
            assert kaiming[0][0] == 0 and kaiming[-1][1] == L
            # no gaps: consecutive kaiming bins touch or overlap
            assert all(a0 <= a1 <= b0 <= b1 for (a0, b0), (a1, b1) in zip(kaiming, kaiming[1:]))


def test_fast_bins_are_the_originals_where_it_gave_n_bins():
    for L in range(1, 80):
        for n in range(1, 16):
            windows = ref_fast_windows(L, n)
            if windows is not None and len(windows) == n:
                assert spp_bins(L, n, "fast") == windows
            else:
                assert spp_bins(L, n, "fast") == ref_kaiming(L, n)


def test_fast_fallback_sizes():
    """The sizes where the original's fast bins were not n bins."""
    fallback = {4: {1, 2, 3, 6, 7, 11}, 3: {1, 2, 5}}
    for n, sizes in fallback.items():
        for L in range(1, 40):
            windows = ref_fast_windows(L, n)
            original_ok = windows is not None and len(windows) == n
            assert original_ok == (L not in sizes), (n, L)
            if L in sizes:
                assert spp_bins(L, n, "fast") == ref_kaiming(L, n)


def test_fast_differs_from_kaiming_at_10_of_4():
    assert spp_bins(10, 4, "fast") == [(0, 3), (2, 5), (4, 7), (6, 9)]
    assert spp_bins(10, 4, "kaiming") == [(0, 3), (2, 5), (5, 8), (7, 10)]


# --- the op against the reference -----------------------------------------------------

@pytest.mark.parametrize("implementation", ["fast", "kaiming"])
@pytest.mark.parametrize("mode", MODES)
def test_spp_all_sizes(rng, implementation, mode):
    """Square inputs 1..20, and non-square ones."""
    dims = [6, 4, 3, 2, 1]
    sizes = [(s, s) for s in range(1, 21)] + [(1, 7), (7, 1), (3, 20), (13, 5), (10, 11),
                                              (17, 23), (2, 9), (11, 6)]
    for H, W in sizes:
        x = rng.standard_normal((2, 3, H, W)) - 3.0
        y = spatial_pyramid_pool(torch.tensor(x), dims, mode, implementation)
        assert y.shape == (2, 3, sum(n * n for n in dims))
        np.testing.assert_allclose(y.numpy(), ref_spp(x, dims, mode, implementation),
                                   rtol=1e-12, atol=1e-12, err_msg=str((H, W)))


def test_spp_fallback_and_differing_sizes(rng):
    for dims, L in [([4], 1), ([4], 2), ([4], 3), ([4], 6), ([4], 7), ([4], 11), ([3], 1),
                    ([3], 2), ([3], 5), ([4], 10), ([4, 3, 2, 1], 10)]:
        for H, W in [(L, L), (L, 12), (9, L)]:
            x = rng.standard_normal((1, 2, H, W))
            for implementation in ("fast", "kaiming"):
                for mode in ("max", "average_exc_pad"):
                    y = spatial_pyramid_pool(torch.tensor(x), dims, mode, implementation)
                    np.testing.assert_allclose(y.numpy(), ref_spp(x, dims, mode, implementation),
                                               rtol=1e-12, atol=1e-12)
    x = rng.standard_normal((1, 1, 10, 10))
    fast = spatial_pyramid_pool(torch.tensor(x), [4], "max", "fast")
    kaiming = spatial_pyramid_pool(torch.tensor(x), [4], "max", "kaiming")
    assert not torch.equal(fast, kaiming)


def test_spp_large_levels(rng):
    """Levels finer than the input and large n (where float bins drift)."""
    x = rng.standard_normal((1, 2, 37, 29))
    for implementation in ("fast", "kaiming"):
        for mode in ("max", "average_exc_pad"):
            dims = [40, 13, 10, 7, 1]
            y = spatial_pyramid_pool(torch.tensor(x), dims, mode, implementation)
            np.testing.assert_allclose(y.numpy(), ref_spp(x, dims, mode, implementation),
                                       rtol=1e-12, atol=1e-12)


# --- gradients -----------------------------------------------------------------------

@pytest.mark.parametrize("implementation", ["fast", "kaiming"])
@pytest.mark.parametrize("mode", ["max", "average_exc_pad"])
@pytest.mark.parametrize("size", [(5, 7), (3, 2), (10, 10)])
def test_gradcheck(rng, implementation, mode, size):
    shape = (2, 2) + size
    # distinct values, well apart: max is differentiable there
    x = torch.tensor(rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1,
                     dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: spatial_pyramid_pool(t, [4, 2, 1], mode, implementation), (x,))


def test_max_gradient_goes_to_each_bins_maximum(rng):
    x = torch.tensor(rng.standard_normal((2, 3, 9, 7)), requires_grad=True)
    y = spatial_pyramid_pool(x, [4, 3, 1], "max", "kaiming")
    weights = torch.tensor(rng.standard_normal(y.shape))
    (y * weights).sum().backward()
    expected = np.zeros(x.shape)
    xs = x.detach().numpy()
    k = 0
    for n in (4, 3, 1):
        for r0, r1 in ref_kaiming(9, n):
            for c0, c1 in ref_kaiming(7, n):
                for b in range(2):
                    for c in range(3):
                        block = xs[b, c, r0:r1, c0:c1]
                        i, j = np.unravel_index(block.argmax(), block.shape)
                        expected[b, c, r0 + i, c0 + j] += weights[b, c, k].item()
                k += 1
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-12)


TIE_PYRAMIDS = [(4, 2, 1), (3, 2), (7, 5, 1), (6, 4, 3)]


@pytest.mark.parametrize("implementation", ["fast", "kaiming"])
def test_max_gradient_with_ties_goes_to_first_maximum(rng, implementation):
    """Exact ties everywhere, sizes 1..7 (non-square too) and levels finer
    than the input (bins of one level overlap, or coincide): each bin's
    whole gradient goes to its first maximum in row-major order, as in
    PyTorch's max pooling and the CUDA kernel (not split between ties).
    Integer gradients: every sum is exact, so the comparison is too."""
    for H in range(1, 8):
        for W in range(1, 8):
            x = tie_planes(rng, H, W)
            for dims in TIE_PYRAMIDS:
                gy = rng.integers(-8, 9, (1, x.shape[1], sum(n * n for n in dims)))
                y, g = spp_max_grad(torch.tensor(x), gy, dims, implementation)
                np.testing.assert_array_equal(y.numpy(), ref_spp(x, dims, "max", implementation))
                np.testing.assert_array_equal(g.numpy(), ref_spp_max_grad(x, gy, dims,
                                                                          implementation),
                                              err_msg=str((H, W, dims)))


def test_max_gradient_ties_overlapping_levels():
    """A constant plane: every bin's first maximum is its first element, so
    bins that start together (here all levels' first bins, and on a 2 x 3
    input many bins of the finer levels) add up at one element."""
    x = torch.ones(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    dims = (4, 2, 1)
    y = spatial_pyramid_pool(x, dims, "max", "kaiming")
    gy = torch.arange(1, 22, dtype=torch.float64).view(1, 1, 21)
    (g,) = torch.autograd.grad(y, x, gy)
    np.testing.assert_array_equal(g.numpy(), ref_spp_max_grad(x.detach().numpy(), gy.numpy(),
                                                              dims, "kaiming"))
    # kaiming bins of 2 rows in 4: [0,1) [0,1) [1,2) [1,2); of 3 columns: [0,1) [0,2) [1,3) [2,3)
    expected = np.zeros((2, 3))
    for k, (i, j) in enumerate((i, j) for i in (0, 0, 1, 1) for j in (0, 0, 1, 2)):
        expected[i, j] += k + 1
    expected[0, 0] += 17 + 21            # level 2: bins start at (0,0) (0,1) (1,0) (1,1)
    expected[0, 1] += 18
    expected[1, 0] += 19
    expected[1, 1] += 20
    np.testing.assert_array_equal(g[0, 0].numpy(), expected)


def test_max_nan():
    """A NaN in a bin makes its maximum NaN; the bin's gradient goes to its
    first NaN (NaN counts as the largest value, as in the CUDA kernel)."""
    nan, inf = float("nan"), float("inf")
    x = np.array([[1.0, nan, 3.0, inf, 2.0],
                  [nan, 0.0, inf, nan, 2.0],
                  [4.0, 4.0, 1.0, 0.0, 4.0],
                  [0.0, 4.0, 4.0, nan, 1.0]])[None, None]
    for implementation in ("fast", "kaiming"):
        for dims in [(4, 2, 1), (3, 1), (2,)]:
            gy = np.arange(1.0, 1 + sum(n * n for n in dims))[None, None]
            y, g = spp_max_grad(torch.tensor(x), gy, dims, implementation)
            np.testing.assert_array_equal(y.numpy(), ref_spp(x, dims, "max", implementation))
            np.testing.assert_array_equal(g.numpy(), ref_spp_max_grad(x, gy, dims,
                                                                      implementation))
    # the whole plane's maximum: the first NaN, at (0, 1)
    y, g = spp_max_grad(torch.tensor(x), np.ones((1, 1, 1)), (1,), "fast")
    assert torch.isnan(y).all() and g[0, 0, 0, 1] == 1 and g.sum() == 1


@pytest.mark.parametrize("implementation", ["fast", "kaiming"])
def test_max_gradcheck_channels_last_and_double_backward(rng, implementation):
    """The autograd function of the max path on distinct values: gradcheck
    on a channels-last input, and gradgradcheck (its backward is linear in
    the incoming gradient)."""
    dims = (4, 3, 1)
    fn = lambda t: spatial_pyramid_pool(t, dims, "max", implementation)   # noqa: E731
    shape = (2, 3, 5, 7)
    values = rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1
    x = torch.tensor(values).to(memory_format=torch.channels_last).requires_grad_()
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_max_gradient_low_precision_channels_last(rng, dtype):
    """Low precision, channels-last: against the float64 reference on the
    same rounded input. Tie planes and integer gradients are exact in every
    dtype; rounded random data (ties from the rounding) within rounding of
    the gradient sums."""
    for implementation in ("fast", "kaiming"):
        for (H, W), dims in [((5, 7), (4, 2, 1)), ((7, 3), (6, 4, 3)), ((6, 6), (3, 2))]:
            x = torch.tensor(tie_planes(rng, H, W), dtype=dtype)
            x = x.to(memory_format=torch.channels_last)
            gy = rng.integers(-8, 9, (1, x.shape[1], sum(n * n for n in dims)))
            y, g = spp_max_grad(x, gy, dims, implementation)
            assert y.dtype == dtype and g.dtype == dtype and g.shape == x.shape
            np.testing.assert_array_equal(g.double().numpy(), ref_spp_max_grad(
                x.double().numpy(), gy, dims, implementation))

            x = torch.tensor(rng.standard_normal((2, 8, H, W)), dtype=dtype)
            x = x.to(memory_format=torch.channels_last)
            gy = torch.tensor(rng.standard_normal((2, 8, sum(n * n for n in dims))),
                              dtype=dtype).double().numpy()
            y, g = spp_max_grad(x, gy, dims, implementation)
            expected = ref_spp_max_grad(x.double().numpy(), gy, dims, implementation)
            tol = 1e-6 if dtype == torch.float32 else 1e-2
            np.testing.assert_allclose(g.double().numpy(), expected, rtol=tol,
                                       atol=tol * np.abs(expected).max())


def test_max_backward_is_bitwise_deterministic(rng):
    """Two backward passes (several threads, ties from rounding) agree bit
    for bit."""
    torch.set_num_threads(4)     # the fixture restores the thread count
    x = torch.tensor(np.round(rng.standard_normal((4, 16, 17, 23)) * 2), dtype=torch.float32)
    for xx in (x, x.to(memory_format=torch.channels_last)):
        for dims, implementation in [((6, 3, 2, 1), "fast"), ((4, 3, 2, 1), "kaiming"),
                                     ((9, 4, 1), "kaiming")]:
            gy = rng.standard_normal((4, 16, sum(n * n for n in dims)))
            _, g1 = spp_max_grad(xx, gy, dims, implementation)
            _, g2 = spp_max_grad(xx, gy, dims, implementation)
            assert torch.equal(g1, g2)


# --- dtypes and layouts ----------------------------------------------------------------

def test_low_precision_and_channels_last(rng):
    x64 = rng.standard_normal((2, 8, 13, 11))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.tensor(x64, dtype=dtype).to(memory_format=torch.channels_last)
        for mode in ("max", "average_inc_pad"):
            y = spatial_pyramid_pool(x, [6, 3, 2, 1], mode)
            assert y.dtype == dtype and y.shape == (2, 8, 50)
            expected = ref_spp(x.double().numpy(), [6, 3, 2, 1], mode, "fast")
            tol = 1e-6 if dtype == torch.float32 else 2e-2
            np.testing.assert_allclose(y.double().numpy(), expected, rtol=tol, atol=tol)


# --- layers ------------------------------------------------------------------------

@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("implementation", ["fast", "kaiming"])
def test_layers(float64, rng, cls, mode, implementation):
    layer = cls(InputLayer((None, 3, None, None)), [4, 2, 1], mode, implementation, name="spp")
    assert layer.output_shape == (None, 3, 21)
    check_params(layer, {})
    for H, W in [(1, 1), (6, 11), (13, 13), (7, 3)]:
        check_layer(layer, rng.standard_normal((2, 3, H, W)),
                    lambda x: ref_spp(x, [4, 2, 1], mode, implementation))


@pytest.mark.parametrize("cls", LAYERS)
def test_layer_defaults(cls):
    layer = cls(InputLayer((2, 5, 8, 8)))
    assert layer.pool_dims == [4, 2, 1]
    assert layer.mode == "max" and layer.implementation == "fast"
    assert layer.output_shape == (2, 5, 21)


@st.composite
def spp_case(draw):
    dims = draw(st.lists(st.integers(1, 8), min_size=1, max_size=4))
    H, W = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    known = (draw(st.booleans()), draw(st.booleans()), draw(st.booleans()), draw(st.booleans()))
    return dims, H, W, known, draw(st.sampled_from(MODES)), draw(st.sampled_from(["fast",
                                                                                 "kaiming"]))


@given(spp_case())
def test_predicted_shape_is_produced_shape(case):
    dims, H, W, known, mode, implementation = case
    full = (2, 3, H, W)
    declared = tuple(v if kn else None for v, kn in zip(full, known))
    for cls in LAYERS:
        layer = cls(InputLayer(declared), dims, mode, implementation)
        out = get_output(layer, torch.randn(full))
        assert tuple(out.shape) == (2, 3, sum(n * n for n in dims))
        assert layer.output_shape == (declared[0], declared[1], sum(n * n for n in dims))
        assert get_output_shape(layer, full) == tuple(out.shape)


# --- errors --------------------------------------------------------------------------

@pytest.mark.parametrize("cls", LAYERS)
def test_errors(cls):
    name = cls.__name__
    shape = (None, 3, 8, 8)
    check_raises(ValueError, lambda: cls((None, 3, 8), name="s"), "{}(name='s')".format(name),
                 "input_shape")
    check_raises(ValueError, lambda: cls((None, 3, 8, 8, 8)), name, "4D")
    for bad in ([], [0], [2, -1], [1.5], "421", 4, [True], None):
        check_raises(ValueError, lambda: cls(shape, pool_dims=bad), name, "pool_dims")
    check_raises(ValueError, lambda: cls(shape, mode="avg"), name, "mode", "avg")
    check_raises(ValueError, lambda: cls(shape, implementation="exact"), name, "implementation")


def test_op_errors():
    check_raises(ValueError, lambda: spatial_pyramid_pool(torch.zeros(1, 2, 3)), "4D")
    check_raises(ValueError, lambda: spatial_pyramid_pool(torch.zeros(1, 2, 3, 3), [2], "sum"),
                 "mode")
    check_raises(ValueError, lambda: spatial_pyramid_pool(torch.zeros(1, 2, 3, 3), [0],
                                                          where="X"), "X", "pool_dims")


def test_kernel_dispatch_point():
    seen = []

    def kernel(x, pool_dims, mode, implementation):
        seen.append((pool_dims, mode, implementation))
        return None

    spp_ops.register_kernel("cpu", kernel)
    try:
        x = torch.randn(1, 2, 5, 5)
        torch.testing.assert_close(spatial_pyramid_pool(x, [2, 1]), torch.cat(
            [torch.nn.functional.max_pool2d(x, 3, 2).flatten(2), x.amax((2, 3))[..., None]], 2))
    finally:
        spp_ops.register_kernel("cpu", None)
    assert seen == [((2, 1), "max", "fast")]
