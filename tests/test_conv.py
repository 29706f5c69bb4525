"""Convolution: ops (algorithms 'auto', 'cudnn', 'gemm') and the layers
Conv1D/2D/3DLayer, Conv2DDNNLayer, Conv3DDNNLayer and Conv2DMMLayer, against
a float64 reference written here with numpy and plain loops."""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import lasagne
from lasagne import init, nonlinearities
from lasagne.layers import (BaseConvLayer, Conv1DLayer, Conv2DLayer, Conv3DLayer, InputLayer,
                            get_output, get_output_shape)
from lasagne.layers.corrmm import Conv2DMMLayer
from lasagne.layers.dnn import Conv2DDNNLayer, Conv3DDNNLayer
from lasagne.ops import conv_gemm
from lasagne.ops.conv import ALGORITHMS, add_bias, conv_nd

from harness import check_layer, check_params, check_raises

CORE = {1: Conv1DLayer, 2: Conv2DLayer, 3: Conv3DLayer}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: intra-op threads only add synchronisation
    (tens of times slower on a busy 2-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --- the reference ---------------------------------------------------------

def ref_pads(pad, filter_size):
    """Lasagne's padding modes, spelled out."""
    if pad == 'valid':
        return (0,) * len(filter_size)
    if pad == 'full':
        return tuple(k - 1 for k in filter_size)
    if pad == 'same':
        return tuple(k // 2 for k in filter_size)
    if isinstance(pad, int):
        return (pad,) * len(filter_size)
    return tuple(pad)


def ref_conv(x, W, b=None, stride=1, pad=0, flip=False, groups=1, nonlinearity=None):
    """Direct float64 convolution: explicit zero padding, optional kernel
    flip, a loop over output positions and groups, then bias and
    nonlinearity."""
    x, W = np.asarray(x, np.float64), np.asarray(W, np.float64)
    nd = W.ndim - 2
    K = W.shape[2:]
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    pads = ref_pads(pad, K)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pads])
    if flip:
        W = W[(slice(None), slice(None)) + (slice(None, None, -1),) * nd]
    N, C = x.shape[:2]
    F, Cg = W.shape[:2]
    Fg = F // groups
    assert Cg * groups == C
    sizes = [(xp.shape[2 + i] - K[i]) // stride[i] + 1 for i in range(nd)]
    out = np.zeros((N, F) + tuple(sizes))
    for pos in itertools.product(*(range(s) for s in sizes)):
        window = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, stride, K))
        patch = xp[(slice(None), slice(None)) + window]
        for g in range(groups):
            a = patch[:, g * Cg:(g + 1) * Cg].reshape(N, -1)
            w = W[g * Fg:(g + 1) * Fg].reshape(Fg, -1)
            out[(slice(None), slice(g * Fg, (g + 1) * Fg)) + pos] = a @ w.T
    if b is not None:
        b = np.asarray(b, np.float64)
        out = out + (b.reshape((1, F) + (1,) * nd) if b.ndim == 1 else b[None])
    return nonlinearity(out) if nonlinearity is not None else out


def np_relu(x):
    return np.maximum(x, 0)


def out_len(n, k, s, p):
    return (n + 2 * p - k) // s + 1


# --- every combination, every algorithm ------------------------------------

GEOMETRY = {  # input spatial size, filter size, anisotropic stride, tuple pad
    1: ((9,), (3,), (3,), (2,)),
    2: ((7, 6), (3, 5), (1, 3), (2, 1)),
    3: ((5, 4, 6), (3, 1, 3), (2, 1, 3), (1, 0, 2)),
}
PADS = ["int", "tuple", "valid", "full", "same"]
STRIDES = ["1", "2", "aniso"]


@pytest.mark.parametrize("untie", [False, True])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride_kind", STRIDES)
@pytest.mark.parametrize("pad_kind", PADS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_layers_match_reference(nd, pad_kind, stride_kind, groups, flip, untie, rng,
                                     float64):
    size, K, aniso, tpad = GEOMETRY[nd]
    pad = {"int": 1, "tuple": tpad}.get(pad_kind, pad_kind)
    stride = {"1": 1, "2": 2, "aniso": aniso}[stride_kind]
    C, F = 4, 6
    x = rng.standard_normal((2, C) + size)
    W = rng.standard_normal((F, C // groups) + K)
    s = (stride,) * nd if isinstance(stride, int) else stride
    out = tuple(out_len(n, k, st_, p) for n, k, st_, p in zip(size, K, s, ref_pads(pad, K)))
    b = rng.standard_normal((F,) + (out if untie else ()))
    expected = ref_conv(x, W, b, stride, pad, flip, groups, np_relu)
    for algorithm in ALGORITHMS:
        layer = CORE[nd](InputLayer((None, C) + size), F, K, stride=stride, pad=pad,
                         untie_biases=untie, W=W, b=b, flip_filters=flip, num_groups=groups,
                         algorithm=algorithm)
        assert layer.output_shape == (None, F) + out
        check_layer(layer, x, reference=lambda x_: expected)


EDGES = [  # (spatial input, filter, stride, pad)
    ("input = filter", (3, 5), (3, 5), 1, "valid"),
    ("1x1 full", (1, 1), (3, 3), 1, "full"),
    ("1x1 same", (1, 1), (3, 3), 1, "same"),
    ("1x1 same strided", (1, 1), (3, 3), 2, "same"),
    ("stride > filter", (8, 7), (2, 2), 3, 1),
    ("stride > filter aniso", (8, 7), (2, 1), (3, 4), (0, 1)),
    ("even filter int pad", (5, 6), (2, 4), 1, 1),
    ("1x1 filter", (4, 3), (1, 1), 2, 0),
    ("full strided", (5, 4), (3, 3), 2, "full"),
]


@pytest.mark.parametrize("name,size,K,stride,pad", EDGES, ids=[e[0] for e in EDGES])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_edge_sizes(nd, name, size, K, stride, pad, rng, float64):
    size = (size + (size[0],))[:nd]
    K = (K + (K[0],))[:nd]
    if not isinstance(stride, int):
        stride = (stride + (stride[0],))[:nd]
    if isinstance(pad, tuple):
        pad = (pad + (pad[0],))[:nd]
    x = rng.standard_normal((2, 2) + size)
    W = rng.standard_normal((3, 2) + K)
    b = rng.standard_normal(3)
    expected = ref_conv(x, W, b, stride, pad, True, 1, np_relu)
    for algorithm in ALGORITHMS:
        layer = CORE[nd](InputLayer((2, 2) + size), 3, K, stride=stride, pad=pad, W=W, b=b,
                         algorithm=algorithm)
        check_layer(layer, x, reference=lambda x_: expected)


def test_nonlinearity_none_and_no_bias(rng, float64):
    x = rng.standard_normal((2, 3, 6, 5))
    W = rng.standard_normal((4, 3, 3, 3))
    for algorithm in ALGORITHMS:
        layer = Conv2DLayer((None, 3, 6, 5), 4, 3, W=W, b=None, nonlinearity=None,
                            algorithm=algorithm)
        assert layer.b is None and layer.nonlinearity is nonlinearities.identity
        check_layer(layer, x, reference=lambda x_: ref_conv(x_, W, flip=True))
        layer = Conv2DLayer((None, 3, 6, 5), 4, 3, W=W, nonlinearity=nonlinearities.tanh,
                            algorithm=algorithm)
        check_layer(layer, x, reference=lambda x_: np.tanh(ref_conv(x_, W, flip=True)))


# --- the layer families agree ----------------------------------------------

@pytest.mark.parametrize("flip", [False, True])
def test_conv2d_families_agree(flip, rng):
    l_in = InputLayer((None, 6, 9, 8))
    kw = dict(stride=(2, 1), pad="same", num_groups=3, flip_filters=flip, untie_biases=True)
    core = Conv2DLayer(l_in, 9, 3, **kw)
    dnn = Conv2DDNNLayer(l_in, 9, 3, W=core.W, b=core.b, **kw)
    mm = Conv2DMMLayer(l_in, 9, 3, W=core.W, b=core.b, **kw)
    assert dnn.W is core.W and mm.W is core.W and mm.b is core.b
    x = torch.tensor(rng.standard_normal((3, 6, 9, 8)), dtype=torch.float32)
    outs = get_output([core, dnn, mm], x)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-5, atol=1e-5)


def test_conv3d_families_agree(rng):
    l_in = InputLayer((None, 2, 5, 6, 4))
    core = Conv3DLayer(l_in, 3, (3, 1, 3), pad="full", flip_filters=False)
    dnn = Conv3DDNNLayer(l_in, 3, (3, 1, 3), pad="full", W=core.W, b=core.b)
    x = torch.tensor(rng.standard_normal((2, 2, 5, 6, 4)), dtype=torch.float32)
    a, b = get_output([core, dnn], x)
    torch.testing.assert_close(a, b)


def test_flip_defaults_and_weight_transfer(rng, float64):
    """The core layers convolve, the dnn/corrmm layers correlate; a flipped
    copy of W moves weights between them, and W itself is never modified."""
    assert Conv2DLayer((None, 1, 5, 5), 1, 3).flip_filters is True
    assert Conv3DLayer((None, 1, 5, 5, 5), 1, 3).flip_filters is True
    assert Conv1DLayer((None, 1, 5), 1, 3).flip_filters is True
    assert Conv2DDNNLayer((None, 1, 5, 5), 1, 3).flip_filters is False
    assert Conv3DDNNLayer((None, 1, 5, 5, 5), 1, 3).flip_filters is False
    assert Conv2DMMLayer((None, 1, 5, 5), 1, 3).flip_filters is False
    W = rng.standard_normal((4, 3, 3, 2))
    x = torch.tensor(rng.standard_normal((2, 3, 7, 6)))
    core = Conv2DLayer((None, 3, 7, 6), 4, (3, 2), W=W)
    for cls in (Conv2DDNNLayer, Conv2DMMLayer):
        moved = cls((None, 3, 7, 6), 4, (3, 2), W=W[:, :, ::-1, ::-1].copy())
        same = cls((None, 3, 7, 6), 4, (3, 2), W=W, flip_filters=True)
        ref = core.get_output_for(x)
        torch.testing.assert_close(moved.get_output_for(x), ref)
        torch.testing.assert_close(same.get_output_for(x), ref)
        ref.sum().backward()
    np.testing.assert_array_equal(core.W.detach().numpy(), W)


# --- gradients ---------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["auto", "gemm"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_gradcheck(nd, algorithm):
    size, K, aniso, tpad = GEOMETRY[nd]
    size = tuple(min(s, 4) for s in size)
    x = torch.randn((1, 4) + size, dtype=torch.float64, requires_grad=True)
    W = torch.randn((4, 2) + K, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def f(x, W, b):  # flipped, grouped, strided, padded, tied bias inside the call
        return conv_nd(x, W, aniso, tpad, True, 2, algorithm, b=b)

    assert torch.autograd.gradcheck(f, (x, W, b))
    x, W = x.detach(), W.detach()
    out = conv_nd(x, W, 1, "same", False, 2, algorithm)
    ub = torch.randn(out.shape[1:], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda ub: conv_nd(x, W, 1, "same", False, 2, algorithm, b=ub), (ub,))
    assert torch.autograd.gradcheck(
        lambda ub: add_bias(conv_nd(x, W, 1, "same", False, 2, algorithm), ub), (ub,))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("untied", [False, True])
def test_conv_nd_bias_matches_reference(algorithm, untied):
    """``conv_nd(..., b=...)`` adds a tied or untied bias exactly as the
    float64 loop reference does, for every algorithm, in float32."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 7, 6))
    W = rng.standard_normal((6, 2, 3, 2))
    out_size = ref_conv(x, W, stride=(2, 1), pad=(1, 0), groups=2).shape[2:]
    b = rng.standard_normal((6,) + out_size if untied else 6)
    ref = ref_conv(x, W, b, stride=(2, 1), pad=(1, 0), groups=2)
    out = conv_nd(torch.tensor(x, dtype=torch.float32), torch.tensor(W, dtype=torch.float32),
                  (2, 1), (1, 0), False, 2, algorithm, b=torch.tensor(b, dtype=torch.float32))
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("nd", [2, 3])
def test_gradcheck_gemm_chunked(nd):
    x = torch.randn((2, 2) + (5, 4, 4)[:nd], dtype=torch.float64, requires_grad=True)
    W = torch.randn((2, 2) + (3,) * nd, dtype=torch.float64, requires_grad=True)
    for cap in (1, 3000):  # single rows, a few rows
        assert torch.autograd.gradcheck(
            lambda x, W: conv_nd(x, W, 2, 1, True, 1, "gemm", workspace_bytes=cap), (x, W),
            fast_mode=True)


def test_gradient_only_for_what_requires_it(rng):
    x = torch.randn(2, 3, 6, 6)
    W = torch.randn(4, 3, 3, 3, requires_grad=True)
    conv_nd(x, W, algorithm="gemm").sum().backward()
    assert W.grad is not None
    x.requires_grad_()
    W2 = torch.randn(4, 3, 3, 3)
    conv_nd(x, W2, algorithm="gemm").sum().backward()
    assert x.grad is not None


# --- the GEMM algorithm's workspace ------------------------------------------

@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("nd,groups", [(1, 1), (2, 1), (2, 2), (3, 2)])
def test_gemm_chunked_equals_unchunked(nd, groups, channels_last):
    x = torch.randn((5, 4) + (9, 7, 5)[:nd], dtype=torch.float64)
    if channels_last and nd > 1:
        x = x.to(memory_format=torch.channels_last if nd == 2 else torch.channels_last_3d)
    x.requires_grad_()
    W = torch.randn((6, 4 // groups) + (3, 2, 3)[:nd], dtype=torch.float64, requires_grad=True)
    results = []
    for cap in (None, 1, 4000, 20000):  # whole batch, single rows, a few rows, a few samples
        out = conv_nd(x, W, (2, 1, 2)[:nd], "full", True, groups, "gemm", workspace_bytes=cap)
        gx, gW = torch.autograd.grad(out, (x, W), torch.cos(out))
        results.append((out, gx, gW))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gemm_workspace_is_bounded(monkeypatch):
    """No column matrix larger than the cap (once a single row fits)."""
    seen = []
    original = conv_gemm._im2col

    def spy(*args):
        cols = original(*args)
        seen.append(cols.numel() * cols.element_size())
        return cols

    monkeypatch.setattr(conv_gemm, "_im2col", spy)
    x = torch.randn(16, 8, 20, 20, requires_grad=True)
    W = torch.randn(8, 8, 3, 3, requires_grad=True)
    full_cols = 16 * 8 * 9 * 20 * 20 * 4
    cap = full_cols // 10
    out = conv_nd(x, W, 1, 1, False, 1, "gemm", workspace_bytes=cap)
    out.sum().backward()
    assert seen and max(seen) <= cap
    assert len(seen) > 2 * 10  # forward and backward each went through many chunks
    seen.clear()
    conv_nd(x[:1], W, 1, 1, False, 1, "gemm", workspace_bytes=2 * 8 * 9 * 20 * 4)
    assert max(seen) <= 2 * 8 * 9 * 20 * 4  # rows of one sample


@given(batch=st.integers(1, 64), channels=st.integers(1, 64), filters=st.integers(1, 64),
       h=st.integers(1, 40), w=st.integers(1, 40), k=st.integers(1, 5), s=st.integers(1, 3),
       cap=st.integers(1, 2 ** 22))
def test_gemm_plan_respects_cap(batch, channels, filters, h, w, k, s, cap):
    padded = (h + k - 1, w + k - 1)
    out = tuple((p - k) // s + 1 for p in padded)
    samples, rows = conv_gemm.plan_chunks(batch, channels, filters, padded, out, (k, k), (s, s),
                                          4, cap)
    assert 1 <= samples <= batch and 1 <= rows <= out[0]
    slab = min(padded[0], (rows - 1) * s + k)
    used = 4 * samples * (channels * k * k * rows * out[1] + channels * slab * padded[1]
                          + filters * rows * out[1])
    assert used <= cap or (samples == 1 and rows == 1)
    if rows < out[0]:
        assert samples == 1


def test_gemm_deterministic(rng):
    x = torch.randn(4, 6, 11, 9, requires_grad=True)
    W = torch.randn(8, 3, 3, 3, requires_grad=True)
    grads = []
    for _ in range(2):
        out = conv_nd(x, W, (2, 1), "same", True, 2, "gemm", workspace_bytes=5000)
        grads.append(torch.autograd.grad(out, (x, W), torch.ones_like(out)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


# --- memory format, autocast, compile ---------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [2, 3])
def test_channels_last(nd, algorithm, rng):
    """A channels-last input gives a channels-last output and the same
    values and gradients."""
    fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
    x = torch.randn((2, 4) + (7, 6, 5)[:nd], dtype=torch.float64)
    for groups in (1, 2):
        W = torch.randn((6, 4 // groups) + (3, 2, 3)[:nd], dtype=torch.float64,
                        requires_grad=True)
        results = []
        for inp in (x, x.to(memory_format=fmt)):
            inp = inp.clone(memory_format=torch.preserve_format).requires_grad_()
            out = conv_nd(inp, W, (2, 1, 1)[:nd], 1, True, groups, algorithm)
            results.append((out,) + torch.autograd.grad(out, (inp, W), torch.cos(out)))
        if algorithm == "gemm" or nd == 2:  # PyTorch's CPU conv3d returns NCDHW
            assert results[1][0].is_contiguous(memory_format=fmt)
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    layer = BaseConvLayer((None, 4) + (7, 6, 5)[:nd], 6, 3, pad="same", algorithm=algorithm)
    y = layer.get_output_for(x.float().to(memory_format=fmt))
    assert y.is_contiguous(memory_format=fmt) or (algorithm != "gemm" and nd == 3)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_autocast_bfloat16_cpu(algorithm, rng):
    layer = Conv2DLayer((None, 8, 10, 10), 16, 3, pad=1, algorithm=algorithm,
                        b=init.Uniform(1.0))
    x = torch.randn(4, 8, 10, 10)
    ref = layer.get_output_for(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer.get_output_for(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=3e-2)
    out.float().sum().backward()
    assert layer.W.grad.dtype == torch.float32 and torch.isfinite(layer.W.grad).all()
    assert layer.b.grad.dtype == torch.float32


@pytest.mark.parametrize("cls", [Conv2DDNNLayer, Conv2DMMLayer])
def test_traces_under_torch_compile(cls):
    layer = cls((None, 4, 8, 8), 6, 3, pad="same", num_groups=2, flip_filters=True)
    fn = torch.compile(lambda x: layer.get_output_for(x), fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = fn(x)
    y.sum().backward()
    torch.testing.assert_close(y, layer.get_output_for(x))


# --- shapes (hypothesis) -----------------------------------------------------

@st.composite
def conv_case(draw):
    nd = draw(st.integers(1, 3))
    sizes = draw(st.lists(st.one_of(st.none(), st.integers(1, 9)), min_size=nd, max_size=nd))
    K = tuple(draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    stride = tuple(draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    pad = draw(st.one_of(st.sampled_from(["valid", "full", "same"]), st.integers(0, 3),
                         st.lists(st.integers(0, 3), min_size=nd, max_size=nd).map(tuple)))
    batch = draw(st.one_of(st.none(), st.integers(1, 3)))
    groups = draw(st.sampled_from([1, 2]))
    concrete = tuple(s if s is not None else draw(st.integers(1, 9)) for s in sizes)
    algorithm = draw(st.sampled_from(ALGORITHMS))
    return nd, batch, tuple(sizes), concrete, K, stride, pad, groups, algorithm


@given(conv_case())
def test_predicted_shape_is_produced_shape(case):
    nd, batch, sizes, concrete, K, stride, pad, groups, algorithm = case
    shape = (batch, 2) + sizes
    if pad == "same" and any(k % 2 == 0 for k in K):
        check_raises(NotImplementedError, lambda: CORE[nd](shape, 4, K, pad=pad), "pad", "same")
        return
    pads = ref_pads(pad, K)
    predicted = [None if n is None else out_len(n, k, s, p)
                 for n, k, s, p in zip(sizes, K, stride, pads)]
    make = lambda: CORE[nd](InputLayer(shape), 4, K, stride=stride, pad=pad,  # noqa: E731
                            num_groups=groups, algorithm=algorithm)
    if any(o is not None and o < 1 for o in predicted):
        check_raises(ValueError, make, CORE[nd].__name__, "empty")
        return
    layer = make()
    assert layer.output_shape == (batch, 4) + tuple(predicted)
    x = torch.randn((batch or 2, 2) + concrete)
    actual = tuple(out_len(n, k, s, p) for n, k, s, p in zip(concrete, K, stride, pads))
    if any(o < 1 for o in actual):
        check_raises(ValueError, lambda: get_output(layer, x), CORE[nd].__name__, "empty")
        return
    y = get_output(layer, x)
    assert tuple(y.shape) == (x.shape[0], 4) + actual
    assert get_output_shape(layer, tuple(x.shape)) == tuple(y.shape)


# --- parameters ------------------------------------------------------------------

def test_params_and_tags(rng):
    layer = Conv3DLayer((None, 4, 5, 6, 7), 6, (3, 1, 2), num_groups=2, untie_biases=True,
                        pad=(1, 0, 1))
    check_params(layer, {"W": ((6, 2, 3, 1, 2), {"trainable", "regularizable"}),
                         "b": ((6, 5, 6, 8), {"trainable"})})
    assert lasagne.layers.count_params(layer) == 6 * 2 * 6 + 6 * 5 * 6 * 8
    layer = Conv2DDNNLayer((None, 3, 5, 5), 2, 3, b=None)
    check_params(layer, {"W": ((2, 3, 3, 3), {"trainable", "regularizable"})})


def test_named_params():
    layer = Conv2DMMLayer((None, 3, 5, 5), 2, 3, name="conv1")
    check_params(layer, {"W": ((2, 3, 3, 3), {"trainable", "regularizable"}),
                         "b": ((2,), {"trainable"})})


def test_weight_specs(rng):
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    layer = Conv2DLayer((None, 3, 5, 5), 4, 3, W=W)
    W[0] = 0  # the numpy array is copied
    assert not torch.equal(layer.W.detach()[0], torch.zeros(3, 3, 3))
    shared = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
    a = Conv2DDNNLayer((None, 3, 5, 5), 4, 3, W=shared)
    b = Conv2DMMLayer((None, 3, 8, 8), 4, 3, W=shared, b=a.b)
    assert a.W is shared and b.W is shared and b.b is a.b
    assert lasagne.layers.get_all_params([a, b]) == [shared, a.b]
    ones = Conv1DLayer((None, 3, 5), 4, 3, W=lambda shape: np.ones(shape), b=init.Constant(2.))
    assert torch.equal(ones.W.detach(), torch.ones(4, 3, 3))
    assert torch.equal(ones.b.detach(), torch.full((4,), 2.))
    leaf = torch.randn(4, 3, 3, 3)
    assert torch.equal(Conv2DLayer((None, 3, 5, 5), 4, 3, W=leaf).W.detach(), leaf)
    check_raises(ValueError, lambda: Conv2DLayer((None, 3, 5, 5), 4, 3, W=np.zeros((4, 3, 3))),
                 "Conv2DLayer", "W")
    check_raises(ValueError, lambda: Conv2DLayer((None, 3, 5, 5), 4, 3, num_groups=3,
                                                 W=np.zeros((4, 3, 3, 3))), "num_groups")
    check_raises(ValueError, lambda: Conv2DLayer((None, 3, 5, 5), 4, 3, untie_biases=True,
                                                 b=np.zeros(4)), "Conv2DLayer", "b")


# --- errors ------------------------------------------------------------------------

@pytest.mark.parametrize("cls,shape", [
    (Conv1DLayer, (None, 3, 8)), (Conv2DLayer, (None, 3, 8, 8)),
    (Conv3DLayer, (None, 3, 4, 8, 8)), (Conv2DDNNLayer, (None, 3, 8, 8)),
    (Conv3DDNNLayer, (None, 3, 4, 8, 8)), (Conv2DMMLayer, (None, 3, 8, 8))])
def test_argument_errors(cls, shape):
    nd = len(shape) - 2
    name = cls.__name__
    wrong_rank = shape[:-1] if nd > 1 else shape + (4,)
    check_raises(ValueError, lambda: cls(wrong_rank, 4, 3), name, "input_shape")
    check_raises(NotImplementedError, lambda: cls(shape, 4, 2, pad="same"), name, "same")
    check_raises(ValueError, lambda: cls(shape, 4, 3, num_groups=2), name, "num_groups")
    check_raises(ValueError, lambda: cls(shape, 4, 3, num_groups=3), name, "num_groups")
    check_raises(ValueError, lambda: cls(shape, 4, 3, num_groups=0), name, "num_groups")
    check_raises(ValueError, lambda: cls((None, None) + shape[2:], 4, 3), name, "channels")
    check_raises(ValueError, lambda: cls(shape[:2] + (None,) * nd, 4, 3, untie_biases=True),
                 name, "untie_biases")
    for bad in (0, -1, 2.5, True, "4"):
        check_raises(ValueError, lambda: cls(shape, bad, 3), name, "num_filters")
    for bad in (0, (3,) * nd + (3,), (0,) * nd, 1.5):
        check_raises(ValueError, lambda: cls(shape, 4, bad), name, "filter_size")
    for bad in (0, -2, (1,) * (nd + 1)):
        check_raises(ValueError, lambda: cls(shape, 4, 3, stride=bad), name, "stride")
    for bad in ("half", -1, (1,) * (nd + 1), 1.5):
        check_raises(ValueError, lambda: cls(shape, 4, 3, pad=bad), name, "pad")
    check_raises(ValueError, lambda: cls(shape, 4, 9), name, "empty")
    named = check_raises(ValueError, lambda: cls(shape, 0, 3, name="c7"), "c7", "num_filters")
    assert name in str(named)


def test_algorithm_argument():
    for algorithm in ALGORITHMS:
        assert Conv2DLayer((None, 3, 5, 5), 4, 3, algorithm=algorithm).algorithm == algorithm
    check_raises(ValueError, lambda: Conv2DLayer((None, 3, 5, 5), 4, 3, algorithm="fft"),
                 "Conv2DLayer", "algorithm")
    assert Conv2DDNNLayer((None, 3, 5, 5), 4, 3).algorithm == "cudnn"
    assert Conv3DDNNLayer((None, 3, 5, 5, 5), 4, 3).algorithm == "cudnn"
    assert Conv2DMMLayer((None, 3, 5, 5), 4, 3).algorithm == "gemm"
    with pytest.raises(TypeError):
        Conv2DMMLayer((None, 3, 5, 5), 4, 3, algorithm="cudnn")


@pytest.mark.parametrize("cls", [Conv2DLayer, Conv2DDNNLayer, Conv2DMMLayer])
def test_runtime_errors(cls):
    name = cls.__name__
    layer = cls(InputLayer((None, 3, None, None)), 4, 4)
    check_raises(ValueError, lambda: layer.get_output_for(torch.randn(2, 3, 8)), name, "4D")
    check_raises(ValueError, lambda: layer.get_output_for(torch.randn(2, 5, 8, 8)), name,
                 "channels")
    check_raises(ValueError, lambda: get_output(layer, torch.randn(2, 3, 2, 2)), name, "empty")
    check_raises(ValueError, lambda: layer.get_output_for(torch.randn(2, 3, 8, 2)), name,
                 "empty")
    untied = cls(InputLayer((None, 3, 8, 8)), 4, 3, untie_biases=True)
    check_raises(ValueError, lambda: untied.get_output_for(torch.randn(2, 3, 9, 8)), name,
                 "untie_biases")
