"""Pooling: the op lasagne.ops.pool.pool and the layers Pool1D/2D/3DLayer,
MaxPool1D/2D/3DLayer, GlobalPoolLayer and the dnn pooling layers, against a
float64 reference written here with plain loops over windows."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from lasagne.layers import (GlobalPoolLayer, InputLayer, MaxPool1DLayer, MaxPool2DLayer,
                            MaxPool3DLayer, Pool1DLayer, Pool2DLayer, Pool3DLayer, get_output,
                            get_output_shape)
from lasagne.layers.dnn import MaxPool2DDNNLayer, MaxPool3DDNNLayer, Pool2DDNNLayer, Pool3DDNNLayer
from lasagne.ops import pool as pool_ops
from lasagne.ops.lengths import pool_output_length
from lasagne.ops.pool import pool

from harness import check_layer, check_params, check_raises

MODES = ("max", "average_inc_pad", "average_exc_pad")
CORE = {1: Pool1DLayer, 2: Pool2DLayer, 3: Pool3DLayer}
CORE_MAX = {1: MaxPool1DLayer, 2: MaxPool2DLayer, 3: MaxPool3DLayer}
DNN = {2: Pool2DDNNLayer, 3: Pool3DDNNLayer}
DNN_MAX = {2: MaxPool2DDNNLayer, 3: MaxPool3DDNNLayer}



@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: PyTorch's threaded CPU pooling only adds
    synchronisation cost (large on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the reference ---------------------------------------------------------------

def ref_windows(length, k, s, p, ignore_border):
    """The windows ``[start, start + k)`` along one axis, found by walking:
    with ignore_border, every window inside the padded input; without it,
    windows until one reaches the end of the input (Theano's rule)."""
    starts = []
    o = 0
    while True:
        start = o * s - p
        if ignore_border:
            if start + k > length + p:
                break
        elif o > 0 and (start >= length or starts[-1] + k >= length):
            break
        starts.append(start)
        o += 1
    return starts


def ref_pool(x, pool_size, stride, pad, mode, ignore_border=True):
    """Plain-loop float64 pooling over the trailing ``len(pool_size)`` axes.

    A window is clipped to the input for max and exc_pad; inc_pad divides by
    the window clipped to the padded input (the whole window when
    ignore_border is True)."""
    x = np.asarray(x, np.float64)
    nd = len(pool_size)
    lengths = x.shape[2:]
    windows = [ref_windows(L, k, s, p, ignore_border)
               for L, k, s, p in zip(lengths, pool_size, stride, pad)]
    out = np.empty(x.shape[:2] + tuple(len(w) for w in windows))
    for pos in itertools.product(*(range(len(w)) for w in windows)):
        starts = [windows[a][pos[a]] for a in range(nd)]
        lo = [max(a, 0) for a in starts]
        hi = [min(a + k, L) for a, k, L in zip(starts, pool_size, lengths)]
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                vals = [x[(n, c) + idx] for idx in itertools.product(
                    *(range(a, b) for a, b in zip(lo, hi)))]
                if mode == "max":
                    v = max(vals)
                elif mode == "average_exc_pad":
                    v = sum(vals) / len(vals)
                else:
                    divisor = 1
                    for a, k, L, p in zip(starts, pool_size, lengths, pad):
                        divisor *= min(a + k, L + p) - max(a, -p)
                    v = sum(vals) / divisor
                out[(n, c) + pos] = v
    return out


def negative(rng, shape):
    """Distinct negative values (so that a zero pad would win a max)."""
    n = int(np.prod(shape))
    return -(rng.permutation(n).reshape(shape) * 0.37 + 1.0 + rng.random(shape) * 0.1)


def run_op(x, k, s, p, mode, ignore_border):
    return pool(torch.tensor(x), k, s, p, mode, ignore_border).numpy()


# --- the reference's own arithmetic -----------------------------------------------

def test_reference_lengths_match_the_documented_formulas():
    for L, k, s in itertools.product(range(1, 12), range(1, 6), range(1, 6)):
        for p in range(k):
            n = len(ref_windows(L, k, s, p, True))
            full = L + 2 * p - k + 1
            assert n == max(0, -(-full // s)), (L, k, s, p)
        n = len(ref_windows(L, k, s, 0, False))
        if s >= k:
            assert n == -(-L // s)
        else:
            assert n == max(0, -(-(L - k) // s)) + 1
        assert n == pool_output_length(L, k, s, 0, False)


# --- the op against the reference: every mode x pad x stride x size ---------------

def cases_1d():
    for k in (1, 2, 3, 4):
        for s in sorted({1, max(1, k - 1), k, k + 1}):
            for p in range(k):
                for L in sorted({1, 2, k, k + 1, 2 * k + 1, 7}):
                    yield (k,), (s,), (p,), (L,)


CASES_2D = [  # pool_size, stride, pad, input size
    ((2, 2), (2, 2), (0, 0), (6, 7)),
    ((3, 3), (2, 2), (1, 1), (7, 8)),
    ((3, 3), (1, 1), (1, 1), (5, 6)),           # GoogLeNet's pool
    ((3, 3), (1, 1), (2, 2), (4, 5)),           # pad > pool // 2
    ((4, 4), (2, 3), (3, 2), (5, 6)),           # pad = pool - 1, anisotropic stride
    ((5, 3), (1, 2), (4, 1), (3, 7)),           # pad = pool - 1 on one axis
    ((2, 4), (3, 5), (1, 3), (7, 9)),           # stride > pool
    ((3, 2), (4, 1), (2, 1), (1, 1)),           # 1x1 input
    ((1, 3), (1, 1), (0, 2), (4, 3)),
    ((3, 3), (3, 3), (0, 0), (3, 3)),           # pool = input
    ((4, 5), (1, 1), (0, 4), (4, 1)),
]

CASES_3D = [
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), (4, 5, 4)),
    ((3, 3, 3), (1, 2, 2), (1, 2, 1), (3, 4, 5)),   # overlapping, pad > pool // 2
    ((2, 3, 1), (1, 2, 1), (1, 2, 0), (3, 3, 2)),
    ((1, 2, 3), (2, 3, 1), (0, 1, 2), (4, 3, 2)),
    ((3, 1, 2), (4, 1, 3), (2, 0, 1), (2, 3, 5)),   # stride > pool
    ((2, 2, 2), (1, 1, 1), (1, 0, 0), (1, 2, 2)),   # depth 1
]

CASES_PARTIAL = [  # ignore_border=False: pool_size, stride, input size
    ((3,), (2,), (8,)), ((3,), (2,), (1,)), ((4,), (1,), (2,)), ((2,), (3,), (4,)),
    ((3, 3), (2, 2), (7, 6)), ((3, 2), (1, 3), (2, 5)), ((5, 5), (2, 2), (3, 3)),
    ((2, 3), (2, 2), (5, 1)), ((3, 3, 2), (2, 1, 2), (4, 2, 3)), ((2, 4, 3), (3, 2, 1), (1, 5, 2)),
]


def check_op(rng, k, s, p, L, ignore_border=True, modes=MODES):
    x = negative(rng, (2, 2) + L)
    for mode in modes:
        expected = ref_pool(x, k, s, p, mode, ignore_border)
        actual = run_op(x, k, s, p, mode, ignore_border)
        assert actual.shape == expected.shape, (k, s, p, L, mode)
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12,
                                   err_msg=str((k, s, p, L, mode, ignore_border)))


def test_pool1d_every_case(rng):
    for k, s, p, L in cases_1d():
        if len(ref_windows(L[0], k[0], s[0], p[0], True)):
            check_op(rng, k, s, p, L)


@pytest.mark.parametrize("case", CASES_2D + CASES_3D, ids=str)
def test_pool_against_reference(rng, case):
    k, s, p, L = case
    check_op(rng, k, s, p, L)


@pytest.mark.parametrize("case", CASES_PARTIAL, ids=str)
def test_pool_partial_windows(rng, case):
    k, s, L = case
    check_op(rng, k, s, (0,) * len(k), L, ignore_border=False)


def test_pool_random_cases(rng):
    """Random geometries in 1-3D, both border modes."""
    for _ in range(150):
        nd = int(rng.integers(1, 4))
        k = tuple(int(v) for v in rng.integers(1, 5, nd))
        s = tuple(int(v) for v in rng.integers(1, 5, nd))
        ignore_border = bool(rng.integers(0, 2))
        p = tuple(int(rng.integers(0, v)) for v in k) if ignore_border else (0,) * nd
        L = tuple(int(v) for v in rng.integers(1, 7, nd))
        if all(len(ref_windows(*a, ignore_border)) for a in zip(L, k, s, p)):
            check_op(rng, k, s, p, L, ignore_border)


def test_max_never_returns_padding(rng):
    x = negative(rng, (1, 3, 4, 4))
    for pad in (1, 2):
        y = run_op(x, (3, 3), (1, 1), (pad, pad), "max", True)
        assert np.isin(y, x).all()
    y = run_op(x, (3, 3), (2, 2), (0, 0), "max", False)
    assert np.isin(y, x).all()


def test_pool3d_separable_matches_pytorch_3d_kernels(rng):
    """The separable 3D path agrees with PyTorch's own 3D pooling where that
    supports the arguments."""
    x = torch.tensor(negative(rng, (2, 3, 4, 5, 6)))
    for k, s, p in [((2, 2, 2), (2, 2, 2), (0, 0, 0)), ((3, 3, 3), (1, 2, 1), (1, 1, 1)),
                    ((3, 2, 3), (2, 1, 2), (1, 1, 0))]:
        F = torch.nn.functional
        torch.testing.assert_close(pool(x, k, s, p, "max"), F.max_pool3d(x, k, s, p))
        torch.testing.assert_close(pool(x, k, s, p, "average_exc_pad"),
                                   F.avg_pool3d(x, k, s, p, count_include_pad=False))
        torch.testing.assert_close(pool(x, k, s, p, "average_inc_pad"), F.avg_pool3d(x, k, s, p))


@pytest.mark.parametrize("case", CASES_3D + [c for c in CASES_PARTIAL if len(c[0]) == 3], ids=str)
def test_pool3d_native_path(rng, case):
    """PyTorch's own 3D kernels, used on CUDA for non-overlapping windows,
    with our padding and divisor handling."""
    if len(case) == 3:
        (k, s, L), p, ignore_border = case, (0, 0, 0), False
    else:
        (k, s, p, L), ignore_border = case, True
    x = negative(rng, (2, 2) + L)
    for mode in MODES:
        actual = pool_ops._pool_native(torch.tensor(x), k, s, p, mode, ignore_border).numpy()
        np.testing.assert_allclose(actual, ref_pool(x, k, s, p, mode, ignore_border),
                                   rtol=1e-12, atol=1e-12)


# --- gradients -----------------------------------------------------------------------

GRAD_CASES = [
    ((3,), (2,), (2,), True, (7,)),
    ((2, 3), (1, 2), (1, 2), True, (4, 5)),          # explicit pad path
    ((3, 3), (2, 2), (1, 1), True, (5, 5)),          # PyTorch's own padding
    ((3, 3), (2, 1), (0, 0), False, (4, 2)),         # partial windows, input < pool
    ((2, 2, 2), (1, 1, 1), (1, 0, 1), True, (3, 3, 2)),
    ((2, 3, 2), (2, 2, 1), (0, 0, 0), False, (3, 4, 3)),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(rng, case, mode):
    k, s, p, ib, L = case
    x = torch.tensor(negative(rng, (1, 2) + L), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pool(t, k, s, p, mode, ib), (x,))


def test_gradient_of_max_goes_to_the_maxima(rng):
    x = torch.tensor(negative(rng, (1, 1, 3, 3)), requires_grad=True)
    y = pool(x, 3, 1, 2, "max")
    y.sum().backward()
    # each of the 5x5 outputs sends its gradient to one input element, the
    # window's maximum
    assert y.shape[2:] == (5, 5) and x.grad.sum().item() == 25
    expected = torch.zeros_like(x)
    for value in y.flatten():
        expected[x == value] += 1
    torch.testing.assert_close(x.grad, expected)


# --- layers ------------------------------------------------------------------------

def layer_reference(k, s, p, mode, ib):
    return lambda x: ref_pool(x, k, s, p, mode, ib)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_core_layers(float64, rng, nd, mode):
    k, s, p = (3, 2, 3)[:nd], (2, 1, 3)[:nd], (2, 1, 1)[:nd]
    L = (6, 5, 4)[:nd]
    layer = CORE[nd](InputLayer((None, 2) + (None,) * nd), k, s, p, mode=mode, name="pool")
    assert layer.output_shape == (None, 2) + (None,) * nd
    check_params(layer, {})
    check_layer(layer, negative(rng, (3, 2) + L), layer_reference(k, s, p, mode, True))
    layer = CORE[nd](InputLayer((3, 2) + L), k, stride=None, mode=mode, ignore_border=False)
    check_layer(layer, negative(rng, (3, 2) + L), layer_reference(k, k, (0,) * nd, mode, False))
    assert layer.stride == k


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_layers(float64, rng, nd):
    layer = CORE_MAX[nd](InputLayer((2, 3) + (5,) * nd), 2, stride=1, pad=1)
    assert layer.mode == "max"
    check_layer(layer, negative(rng, (2, 3) + (5,) * nd),
                layer_reference((2,) * nd, (1,) * nd, (1,) * nd, "max", True))
    if nd in DNN_MAX:
        layer = DNN_MAX[nd](InputLayer((2, 3) + (5,) * nd), 3, stride=2, pad=2)
        assert layer.mode == "max" and layer.ignore_border
        check_layer(layer, negative(rng, (2, 3) + (5,) * nd),
                    layer_reference((3,) * nd, (2,) * nd, (2,) * nd, "max", True))


@pytest.mark.parametrize("nd", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_dnn_layers(float64, rng, nd, mode):
    k, s, p = (3, 2, 4)[:nd] if nd == 3 else (3, 4), (1, 2, 3)[:nd], (2, 1, 3)[:nd]
    L = (4, 6, 5)[:nd]
    layer = DNN[nd](InputLayer((None, 3) + L), k, s, p, mode=mode)
    check_layer(layer, negative(rng, (2, 3) + L), layer_reference(k, s, p, mode, True))


def test_googlenet_pool(float64, rng):
    """The Model Zoo's GoogLeNet: MaxPool2DDNNLayer(pool_size=3, stride=1,
    pad=1), pad not below the stride."""
    layer = MaxPool2DDNNLayer(InputLayer((None, 192, 28, 28)), pool_size=3, stride=1, pad=1)
    assert layer.output_shape == (None, 192, 28, 28)
    layer = MaxPool2DDNNLayer(InputLayer((None, 4, 7, 7)), pool_size=3, stride=1, pad=1)
    check_layer(layer, negative(rng, (2, 4, 7, 7)),
                layer_reference((3, 3), (1, 1), (1, 1), "max", True))


def test_model_zoo_partial_windows(float64, rng):
    """MaxPool2DLayer(pool_size=3, stride=2, ignore_border=False) as in the
    Model Zoo's GoogLeNet and CaffeNet ports."""
    layer = MaxPool2DLayer(InputLayer((None, 2, 112, 112)), 3, 2, ignore_border=False)
    assert layer.output_shape == (None, 2, 56, 56)
    layer = MaxPool2DLayer(InputLayer((None, 2, 9, 8)), 3, 2, ignore_border=False)
    check_layer(layer, negative(rng, (1, 2, 9, 8)),
                layer_reference((3, 3), (2, 2), (0, 0), "max", False))


def test_low_precision_and_channels_last(rng):
    x64 = negative(rng, (2, 8, 9, 10))
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        x = torch.tensor(x64, dtype=dtype).to(memory_format=torch.channels_last)
        for mode in MODES:
            for k, s, p in [((3, 3), (2, 2), (1, 1)), ((3, 3), (1, 1), (2, 2))]:
                if dtype == torch.float16 and mode != "max":
                    continue  # PyTorch's CPU average pooling has no float16
                y = pool(x, k, s, p, mode)
                assert y.dtype == dtype
                assert y.is_contiguous(memory_format=torch.channels_last)
                expected = ref_pool(x.double().numpy(), k, s, p, mode)
                tol = 1e-6 if dtype == torch.float32 else 2e-2
                np.testing.assert_allclose(y.double().numpy(), expected, rtol=tol, atol=tol)
    x = torch.tensor(negative(rng, (2, 4, 4, 5, 6)), dtype=torch.bfloat16)
    x = x.to(memory_format=torch.channels_last_3d)
    for mode in MODES:
        y = pool(x, (2, 3, 2), (1, 2, 2), (1, 1, 1), mode)
        assert y.dtype == torch.bfloat16
        assert y.is_contiguous(memory_format=torch.channels_last_3d)
        expected = ref_pool(x.double().numpy(), (2, 3, 2), (1, 2, 2), (1, 1, 1), mode)
        np.testing.assert_allclose(y.double().numpy(), expected, rtol=2e-2, atol=2e-2)


# --- global pooling ------------------------------------------------------------------

@pytest.mark.parametrize("fn, ref", [
    (torch.mean, lambda a: a.mean(-1)), (torch.amax, lambda a: a.max(-1)),
    (torch.max, lambda a: a.max(-1)), (torch.sum, lambda a: a.sum(-1)),
    (lambda x, dim: torch.sqrt((x * x).mean(dim=dim)), lambda a: np.sqrt((a * a).mean(-1))),
])
def test_global_pool(float64, rng, fn, ref):
    for shape in [(2, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4)]:
        layer = GlobalPoolLayer(InputLayer((None,) + shape[1:2] + (None,) * (len(shape) - 2)), fn)
        assert layer.output_shape == (None, 3)
        check_layer(layer, negative(rng, shape),
                    lambda x: ref(x.reshape(x.shape[0], x.shape[1], -1)))


def test_global_pool_default_is_mean(float64, rng):
    layer = GlobalPoolLayer((2, 3, 4, 4))
    assert layer.pool_function is torch.mean
    x = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last)
    torch.testing.assert_close(layer.get_output_for(x), x.mean((2, 3)))


# --- shapes (hypothesis) -------------------------------------------------------------

@st.composite
def pool_case(draw):
    nd = draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    s = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    ignore_border = draw(st.booleans())
    p = tuple(draw(st.integers(0, v - 1)) for v in k) if ignore_border else (0,) * nd
    L = tuple(draw(st.integers(max(1, v - 2 * q), 9)) for v, q in zip(k, p))
    known = tuple(draw(st.booleans()) for _ in range(nd + 2))
    mode = draw(st.sampled_from(MODES))
    return nd, k, s, p, L, ignore_border, known, mode


@given(pool_case())
def test_predicted_shape_is_produced_shape(case):
    nd, k, s, p, L, ignore_border, known, mode = case
    full = (2, 3) + L
    declared = tuple(v if kn else None for v, kn in zip(full, known))
    layer = CORE[nd](InputLayer(declared), k, s, p, ignore_border, mode)
    x = torch.randn(full)
    out = get_output(layer, x)
    assert all(d is None or d == a for d, a in zip(layer.output_shape, out.shape))
    assert all((d is None) == (kn is False) for d, kn in zip(layer.output_shape, known))
    assert get_output_shape(layer, full) == tuple(out.shape)
    if nd in DNN and ignore_border:
        assert DNN[nd](InputLayer(declared), k, s, p, True, mode).output_shape == \
            layer.output_shape


# --- errors --------------------------------------------------------------------------

@pytest.mark.parametrize("nd", [1, 2, 3])
def test_errors(nd):
    for cls in [CORE[nd], CORE_MAX[nd]] + ([DNN[nd], DNN_MAX[nd]] if nd in DNN else []):
        name = cls.__name__
        shape = (None, 3) + (6,) * nd
        make = lambda **kw: cls(InputLayer(shape), **dict(dict(pool_size=2), **kw))  # noqa: E731
        check_raises(ValueError, lambda: cls(InputLayer((None, 3) + (6,) * (nd + 1)), 2),
                     name, "input_shape")
        check_raises(ValueError, lambda: cls((None, 3), 2), name, "input_shape")
        check_raises(ValueError, lambda: make(pad=2), name, "pad", "pool_size")
        check_raises(ValueError, lambda: make(pool_size=3, pad=(0,) * (nd - 1) + (3,)), name,
                     "pad")
        check_raises(ValueError, lambda: make(pad=-1), name, "pad")
        for bad in (0, -1, 1.5, "2", (2,) * (nd + 1), None):
            check_raises(ValueError, lambda: make(pool_size=bad), name, "pool_size")
        for bad in (0, 2.0, (1,) * (nd + 1)):
            check_raises(ValueError, lambda: make(stride=bad), name, "stride")
        check_raises(ValueError, lambda: make(pool_size=7), name, "empty", "pool_size")
        check_raises(ValueError, lambda: make(pool_size=9, pad=1, name="p1"),
                     "{}(name='p1')".format(name), "empty")
        if "Max" not in name:
            check_raises(ValueError, lambda: make(mode="mean"), name, "mode", "mean")
            check_raises(ValueError, lambda: make(mode="average"), name, "mode")
        if "DNN" in name:
            check_raises(NotImplementedError, lambda: make(ignore_border=False, name="d"),
                         "{}(name='d')".format(name), "ignore_border")
            check_raises(NotImplementedError, lambda: make(ignore_border=False, pad=1),
                         name, "ignore_border")
        else:
            check_raises(ValueError, lambda: make(ignore_border=False, pad=1), name,
                         "ignore_border", "pad")
            assert make(ignore_border=False).output_shape == (None, 3) + (3,) * nd


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_empty_output_at_run_time(nd):
    layer = CORE[nd](InputLayer((None, 2) + (None,) * nd), 3, name="late")
    check_raises(ValueError, lambda: get_output(layer, torch.zeros((1, 2) + (2,) * nd)),
                 "{}(name='late')".format(CORE[nd].__name__), "empty")
    check_raises(ValueError, lambda: layer.get_output_for(torch.zeros((1, 2) + (2,) * nd)),
                 "late", "empty")
    check_raises(ValueError, lambda: get_output(layer, torch.zeros((1, 2) + (4,) * (nd + 1))),
                 "late")


def test_op_errors():
    x = torch.zeros(1, 2, 5, 5)
    check_raises(ValueError, lambda: pool(x, 2, mode="sum"), "pool", "mode")
    check_raises(ValueError, lambda: pool(x, (2, 2), pad=2), "pool", "pad")
    check_raises(ValueError, lambda: pool(x, (2, 2, 2)), "pool", "5D")
    check_raises(ValueError, lambda: pool(x, 2, pad=1, ignore_border=False), "pool",
                 "ignore_border")
    check_raises(ValueError, lambda: pool(x, 6, where="Mine"), "Mine", "empty")


def test_global_pool_errors():
    check_raises(ValueError, lambda: GlobalPoolLayer((None, 3), name="g"),
                 "GlobalPoolLayer(name='g')", "input_shape")
    check_raises(TypeError, lambda: GlobalPoolLayer((None, 3, 4), pool_function="mean"),
                 "GlobalPoolLayer", "pool_function")


def test_kernel_dispatch_point():
    """A registered device kernel is called with validated arguments and may
    decline a case."""
    calls = []

    def kernel(x, pool_size, stride, pad, mode, ignore_border):
        calls.append((pool_size, stride, pad, mode, ignore_border))
        return None if mode == "max" else torch.full((1,), 7.0)

    pool_ops.register_kernel("cpu", kernel)
    try:
        x = torch.randn(1, 1, 4, 4)
        torch.testing.assert_close(pool(x, 2), torch.nn.functional.max_pool2d(x, 2))
        assert pool(x, 2, 1, 1, mode="average_inc_pad").item() == 7.0
    finally:
        pool_ops.register_kernel("cpu", None)
    assert calls == [((2, 2), (2, 2), (0, 0), "max", True),
                     ((2, 2), (1, 1), (1, 1), "average_inc_pad", True)]
