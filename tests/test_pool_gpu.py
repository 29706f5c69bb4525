"""Pooling and spatial pyramid pooling on CUDA: agreement with the CPU path
(float32, bfloat16, float16, channels-last), deterministic backward (bitwise
equal over two runs, overlapping windows included), no host synchronisation
per call, and PyTorch's deterministic mode. Skipped without CUDA."""

import contextlib

import numpy as np
import pytest
import torch

from lasagne.layers import InputLayer, get_output
from lasagne.layers.dnn import MaxPool2DDNNLayer, Pool3DDNNLayer, SpatialPyramidPoolingDNNLayer
from lasagne.ops.pool import pool
from lasagne.ops.spp import spatial_pyramid_pool

pytestmark = pytest.mark.gpu

MODES = ("max", "average_inc_pad", "average_exc_pad")

POOL_CASES = [  # pool_size, stride, pad, ignore_border, input size
    ((3,), (2,), (2,), True, (17,)),
    ((4,), (3,), (0,), False, (10,)),
    ((2, 2), (2, 2), (0, 0), True, (16, 17)),
    ((3, 3), (2, 2), (1, 1), True, (15, 16)),
    ((3, 3), (1, 1), (1, 1), True, (14, 14)),       # GoogLeNet
    ((3, 3), (1, 1), (2, 2), True, (9, 11)),        # pad > pool // 2
    ((4, 5), (2, 3), (3, 4), True, (10, 9)),        # pad = pool - 1
    ((2, 4), (3, 5), (1, 2), True, (11, 12)),       # stride > pool
    ((3, 3), (2, 2), (0, 0), False, (12, 13)),      # partial windows
    ((5, 4), (2, 1), (0, 0), False, (3, 2)),        # input shorter than the pool
    ((2, 2, 2), (2, 2, 2), (0, 0, 0), True, (6, 8, 9)),      # PyTorch's 3D kernels
    ((2, 3, 2), (2, 3, 3), (1, 2, 0), True, (5, 7, 6)),      # non-overlapping, padded
    ((3, 3, 3), (1, 2, 2), (1, 2, 1), True, (6, 7, 8)),      # overlapping: separable
    ((3, 2, 3), (2, 1, 2), (0, 0, 0), False, (5, 4, 7)),
]

SPP_CASES = [([4, 2, 1], (13, 13)), ([6, 3, 2, 1], (17, 23)), ([4, 3, 1], (2, 11)),
             ([4], (10, 10)), ([8, 1], (5, 6))]


def distinct(shape, dtype=torch.float32, seed=0):
    """Distinct values (well apart in float32), negative and positive, so the
    argmax of every window is unique."""
    g = torch.Generator().manual_seed(seed)
    n = int(np.prod(shape))
    values = (torch.randperm(n, generator=g).to(torch.float64) - n / 2) / n * 8
    return values.reshape(shape).to(dtype)


def run(fn, x, grad=None):
    """Output and input gradient (for a fixed random output gradient)."""
    x = x.detach().requires_grad_(True)
    y = fn(x)
    if grad is None:
        g = torch.Generator().manual_seed(1)
        grad = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (gx,) = torch.autograd.grad(y, x, grad.to(device=y.device, dtype=y.dtype))
    return y, gx, grad


def pool_fn(case, mode):
    k, s, p, ib, _ = case
    return lambda t: pool(t, k, s, p, mode, ib)


def spp_fn(dims, mode, implementation):
    return lambda t: spatial_pyramid_pool(t, dims, mode, implementation)


def all_fns():
    for case in POOL_CASES:
        for mode in MODES:
            yield "pool{}-{}".format(case, mode), pool_fn(case, mode), (2, 5) + case[4]
    for dims, size in SPP_CASES:
        for mode in ("max", "average_exc_pad"):
            for implementation in ("fast", "kaiming"):
                yield ("spp{}{}-{}-{}".format(dims, size, mode, implementation),
                       spp_fn(dims, mode, implementation), (2, 5) + size)


FNS = list(all_fns())


def layout(x, channels_last):
    if not channels_last:
        return x
    return x.to(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name, fn, shape", FNS, ids=[f[0] for f in FNS])
def test_cuda_matches_cpu_float32(name, fn, shape, channels_last):
    if channels_last and len(shape) == 3:
        pytest.skip("no channels-last layout for 3D tensors")
    x = distinct(shape)
    y_cpu, g_cpu, grad = run(fn, x.double())
    y, g, _ = run(fn, layout(x.cuda(), channels_last), grad)
    assert y.dtype == torch.float32 and g.dtype == torch.float32
    torch.testing.assert_close(y.cpu().double(), y_cpu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g.cpu().double(), g_cpu, rtol=1e-5, atol=1e-5)
    if channels_last and name.startswith("pool") and x.ndim == 4:
        # (PyTorch's own 3D average pooling returns a contiguous tensor)
        assert y.is_contiguous(memory_format=torch.channels_last), "memory format not kept"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name, fn, shape", FNS, ids=[f[0] for f in FNS])
def test_cuda_low_precision(name, fn, shape, channels_last, dtype):
    if channels_last and len(shape) == 3:
        pytest.skip("no channels-last layout for 3D tensors")
    x = distinct(shape, dtype)
    y_ref, g_ref, grad = run(fn, x.double())   # the same rounded input, in float64
    y, g, _ = run(fn, layout(x.cuda(), channels_last), grad)
    assert y.dtype == dtype and g.dtype == dtype
    scale = y_ref.abs().max().item() + 1e-3
    tol = 1.6e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(y.cpu().double() / scale, y_ref / scale, rtol=tol, atol=tol)
    gscale = g_ref.abs().max().item() + 1e-3
    torch.testing.assert_close(g.cpu().double() / gscale, g_ref / gscale, rtol=tol, atol=tol)


DETERMINISM = [  # overlapping windows, large enough for atomics to collide
    ("pool3x3s1p1", lambda t: pool(t, 3, 1, 1, "max"), (16, 64, 33, 33)),
    ("pool3x3s2p1", lambda t: pool(t, 3, 2, 1, "average_exc_pad"), (16, 64, 33, 33)),
    ("pool3x3s1p2", lambda t: pool(t, 3, 1, 2, "average_inc_pad"), (16, 64, 20, 20)),
    ("pool3d-overlap-max", lambda t: pool(t, 3, 1, 1, "max"), (4, 32, 9, 17, 17)),
    ("pool3d-overlap-avg", lambda t: pool(t, 3, 2, 1, "average_exc_pad"), (4, 32, 9, 17, 17)),
    ("pool3d-2x2x2", lambda t: pool(t, 2, 2, 0, "max"), (4, 32, 8, 16, 16)),
    ("spp-max", spp_fn([6, 3, 2, 1], "max", "fast"), (32, 128, 17, 23)),
    ("spp-max-small", spp_fn([4, 2, 1], "max", "kaiming"), (32, 128, 3, 2)),
    ("spp-mean", spp_fn([6, 3, 2, 1], "average_exc_pad", "kaiming"), (32, 128, 17, 23)),
]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name, fn, shape", DETERMINISM, ids=[d[0] for d in DETERMINISM])
def test_backward_is_bitwise_deterministic(name, fn, shape, channels_last):
    # rounded values: many exact ties, the hard case for max gradients
    x = layout((torch.randn(shape, device="cuda") * 4).round(), channels_last)
    grad = torch.randn(fn(x).shape, dtype=torch.float64)
    _, g1, _ = run(fn, x, grad)
    _, g2, _ = run(fn, x, grad)
    assert torch.equal(g1, g2), "{}: two backward passes differ".format(name)


def test_deterministic_mode_is_accepted():
    """torch.use_deterministic_algorithms(True) must not reject any path (3D
    pooling included); SPP averages use a matrix product, which needs
    CUBLAS_WORKSPACE_CONFIG like any matmul, so it is left out here."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for name, fn, shape in DETERMINISM:
            if name == "spp-mean":
                continue
            x = torch.randn(shape, device="cuda")
            _, g1, grad = run(fn, x)
            _, g2, _ = run(fn, x, grad)
            assert torch.equal(g1, g2), name
    finally:
        torch.use_deterministic_algorithms(previous)


@contextlib.contextmanager
def no_sync():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("name, fn, shape", FNS[::3] + DETERMINISM,
                         ids=[f[0] for f in FNS[::3] + DETERMINISM])
def test_no_host_synchronisation(name, fn, shape):
    x = torch.randn(shape, device="cuda", requires_grad=True)
    fn(x).sum().backward()    # first call: builds and caches constants
    with no_sync():
        y = fn(x)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))


def test_layers_on_cuda():
    l_in = InputLayer((None, 8, None, None))
    net = SpatialPyramidPoolingDNNLayer(MaxPool2DDNNLayer(l_in, 3, 1, 1), [4, 2, 1])
    x = torch.randn(4, 8, 13, 15, device="cuda")
    y = get_output(net, x)
    assert y.shape == (4, 8, 21) and y.is_cuda
    torch.testing.assert_close(y.cpu(), get_output(net, x.cpu()))
    layer = Pool3DDNNLayer(InputLayer((None, 4, 6, 7, 8)), 3, 2, 2, mode="average_exc_pad")
    x = torch.randn(2, 4, 6, 7, 8, device="cuda")
    torch.testing.assert_close(get_output(layer, x).cpu(), get_output(layer, x.cpu()))
