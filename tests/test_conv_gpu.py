"""Convolution on CUDA: agreement with the CPU reference for every case of
``test_conv.py``, cuDNN really used by the dnn layers, bitwise reproducible
GEMM gradients, bounded GEMM memory, autocast and channels-last.

Run on the GPU machine: ``pytest -m gpu tests/test_conv_gpu.py``.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lasagne.layers import Conv2DLayer, InputLayer, get_output
from lasagne.layers.corrmm import Conv2DMMLayer
from lasagne.layers.dnn import Conv2DDNNLayer, Conv3DDNNLayer
from lasagne.ops.conv import ALGORITHMS, conv_nd
from lasagne.ops.conv_gemm import DEFAULT_WORKSPACE_BYTES

from harness import check_raises
from test_conv import CORE, EDGES, GEOMETRY, PADS, STRIDES, np_relu, out_len, ref_conv, ref_pads

pytestmark = pytest.mark.gpu

CUDA = "cuda"


@pytest.fixture
def no_tf32():
    """Exact float32 arithmetic in cuDNN and cuBLAS for the duration."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _run_cuda(layer, x, gout):
    """Output and input/W/b gradients of ``layer`` on CUDA, float32."""
    xt = torch.tensor(x, dtype=torch.float32, device=CUDA, requires_grad=True)
    out = layer.get_output_for(xt)
    params = [layer.W] + ([layer.b] if layer.b is not None else [])
    grads = torch.autograd.grad(out, [xt] + params, torch.tensor(gout, dtype=torch.float32,
                                                                  device=CUDA))
    return [t.detach().cpu().double().numpy() for t in (out,) + tuple(grads)]


def _reference_with_grads(x, W, b, stride, pad, flip, groups):
    """Float64 CPU output and gradients (the forward is checked against
    ``ref_conv``; the gradients come from PyTorch's CPU autograd, which the
    CPU suite checks with gradcheck)."""
    xt = torch.tensor(x, device="cpu", requires_grad=True)
    Wt = torch.tensor(W, device="cpu", requires_grad=True)
    bt = torch.tensor(b, device="cpu", requires_grad=True)
    out = conv_nd(xt, Wt, stride, pad, flip, groups, "auto")
    out = torch.relu(out + (bt.view((1, -1) + (1,) * (out.ndim - 2)) if bt.ndim == 1 else bt))
    np.testing.assert_allclose(out.detach().numpy(),
                               ref_conv(x, W, b, stride, pad, flip, groups, np_relu),
                               rtol=1e-10, atol=1e-10)
    gout = np.random.default_rng().standard_normal(tuple(out.shape))
    grads = torch.autograd.grad(out, (xt, Wt, bt), torch.tensor(gout, device="cpu"))
    return gout, [out.detach().numpy()] + [g.numpy() for g in grads]


def _compare(layer_factory, x, W, b, stride, pad, flip, groups):
    gout, expected = _reference_with_grads(x, W, b, stride, pad, flip, groups)
    for algorithm in ALGORITHMS:
        with torch.device(CUDA):
            layer = layer_factory(algorithm)
        for got, want, what in zip(_run_cuda(layer, x, gout), expected,
                                   ("output", "grad input", "grad W", "grad b")):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4,
                                       err_msg="{} {}".format(algorithm, what))


@pytest.mark.parametrize("untie", [False, True])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stride_kind", STRIDES)
@pytest.mark.parametrize("pad_kind", PADS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_cuda_matches_cpu_reference(nd, pad_kind, stride_kind, groups, flip, untie, no_tf32):
    rng = np.random.default_rng()
    size, K, aniso, tpad = GEOMETRY[nd]
    pad = {"int": 1, "tuple": tpad}.get(pad_kind, pad_kind)
    stride = {"1": 1, "2": 2, "aniso": aniso}[stride_kind]
    s = (stride,) * nd if isinstance(stride, int) else stride
    out = tuple(out_len(n, k, st_, p) for n, k, st_, p in zip(size, K, s, ref_pads(pad, K)))
    x = rng.standard_normal((2, 4) + size)
    W = rng.standard_normal((6, 4 // groups) + K)
    b = rng.standard_normal((6,) + (out if untie else ()))
    _compare(lambda algorithm: CORE[nd]((None, 4) + size, 6, K, stride=stride, pad=pad,
                                        untie_biases=untie, W=W.astype(np.float32),
                                        b=b.astype(np.float32), flip_filters=flip,
                                        num_groups=groups, algorithm=algorithm),
             x, W, b, stride, pad, flip, groups)


@pytest.mark.parametrize("name,size,K,stride,pad", EDGES, ids=[e[0] for e in EDGES])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_cuda_edge_sizes(nd, name, size, K, stride, pad, no_tf32):
    rng = np.random.default_rng()
    size = (size + (size[0],))[:nd]
    K = (K + (K[0],))[:nd]
    if not isinstance(stride, int):
        stride = (stride + (stride[0],))[:nd]
    if isinstance(pad, tuple):
        pad = (pad + (pad[0],))[:nd]
    x = rng.standard_normal((2, 2) + size)
    W = rng.standard_normal((3, 2) + K)
    b = rng.standard_normal(3)
    _compare(lambda algorithm: CORE[nd]((2, 2) + size, 3, K, stride=stride, pad=pad,
                                        W=W.astype(np.float32), b=b.astype(np.float32),
                                        algorithm=algorithm),
             x, W, b, stride, pad, True, 1)


# --- cuDNN is really used ------------------------------------------------------

_NATIVE_CONV_KERNELS = ("depthwise", "im2col", "col2im", "slow_conv", "vol2col", "col2vol")


def _profile(fn):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = prof.events()
    ops = {e.name for e in events if e.device_type == torch.autograd.DeviceType.CPU}
    kernels = {e.name for e in events if e.device_type == torch.autograd.DeviceType.CUDA}
    return ops, kernels


@pytest.mark.parametrize("make,shape", [
    (lambda l: Conv2DDNNLayer(l, 32, 3, pad=1), (8, 16, 20, 20)),
    (lambda l: Conv2DDNNLayer(l, 32, 3, stride=2, pad="same", num_groups=4), (8, 16, 20, 20)),
    (lambda l: Conv2DDNNLayer(l, 16, 3, pad=1, num_groups=16), (8, 16, 20, 20)),  # depthwise
    (lambda l: Conv3DDNNLayer(l, 16, 3, pad=1, flip_filters=True), (2, 8, 6, 10, 10)),
    (lambda l: Conv1DLayerCudnn(l), (4, 8, 50)),
])
def test_dnn_layers_call_cudnn(make, shape):
    with torch.device(CUDA):
        layer = make(InputLayer(shape))
        x = torch.randn(shape, requires_grad=True)
        ops, kernels = _profile(lambda: layer.get_output_for(x).sum().backward())
    assert "aten::cudnn_convolution" in ops, sorted(ops)
    # the forward is cuDNN by construction; the backward of a depthwise
    # convolution may be routed by PyTorch to its own kernels (documented)
    if layer.num_groups != layer.input_shape[1]:
        assert not [k for k in kernels if any(n in k.lower() for n in _NATIVE_CONV_KERNELS)], \
            sorted(kernels)


def Conv1DLayerCudnn(l):
    from lasagne.layers import Conv1DLayer
    return Conv1DLayer(l, 8, 5, pad="same", algorithm="cudnn")


_CUDNN_LOG_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from lasagne.layers.dnn import Conv2DDNNLayer
    from lasagne.layers.corrmm import Conv2DMMLayer
    cls = {"dnn": Conv2DDNNLayer, "mm": Conv2DMMLayer}[sys.argv[1]]
    with torch.device("cuda"):
        layer = cls((4, 16, 12, 12), 32, 3, pad=1)
        x = torch.randn(4, 16, 12, 12, requires_grad=True)
        layer.get_output_for(x).sum().backward()
        torch.cuda.synchronize()
""")


def _cudnn_api_calls(which, log_path):
    """The cuDNN executions of a process that runs one layer forward and
    backward, from cuDNN's own API log."""
    env = dict(os.environ, CUDNN_LOGLEVEL_DBG="3", CUDNN_LOGINFO_DBG="1",
               CUDNN_LOGDEST_DBG=str(log_path))
    res = subprocess.run([sys.executable, "-c", _CUDNN_LOG_SCRIPT, which], env=env,
                         capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0, res.stderr[-3000:]
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    calls = [line for line in log.splitlines()
             if "function cudnnBackendExecute" in line or "function cudnnConvolution" in line]
    return calls, log


def test_cudnn_api_log_forward_and_backward(tmp_path):
    """cuDNN's own API log: the dnn layer's forward, data gradient and
    filter gradient are (at least) three cuDNN executions; the GEMM layer
    makes none."""
    dnn_calls, log = _cudnn_api_calls("dnn", tmp_path / "dnn.log")
    mm_calls, _ = _cudnn_api_calls("mm", tmp_path / "mm.log")
    if not log:
        pytest.skip("this cuDNN build wrote no API log")
    assert len(dnn_calls) >= 3, log[-3000:]
    assert not mm_calls


def test_dnn_layers_refuse_disabled_cudnn():
    with torch.device(CUDA):
        x2, x3 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 8, 8)
        l2 = Conv2DDNNLayer((None, 3, 8, 8), 4, 3, name="c2")
        l3 = Conv3DDNNLayer((None, 3, 4, 8, 8), 4, 3)
        core = Conv2DLayer((None, 3, 8, 8), 4, 3)
        with torch.backends.cudnn.flags(enabled=False):
            check_raises(RuntimeError, lambda: l2.get_output_for(x2), "Conv2DDNNLayer", "c2",
                         "cudnn")
            check_raises(RuntimeError, lambda: l3.get_output_for(x3), "Conv3DDNNLayer", "cudnn")
            assert core.get_output_for(x2).shape == (2, 4, 6, 6)  # 'auto' needs no cuDNN


# --- GEMM: reproducible, bounded ---------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["2d", "2d-channels-last", "2d-groups-chunked", "3d"])
def test_gemm_gradients_bitwise_reproducible(case, dtype):
    torch.manual_seed(0)
    with torch.device(CUDA):
        if case == "3d":
            x = torch.randn(4, 16, 8, 12, 12)
            W = torch.randn(32, 16, 3, 3, 3)
            kw = dict(stride=(1, 2, 1), pad=1)
        else:
            x = torch.randn(16, 32, 28, 28)
            W = torch.randn(64, 32 // (4 if "groups" in case else 1), 3, 3)
            kw = dict(stride=1, pad="same")
        if case == "2d-channels-last":
            x = x.to(memory_format=torch.channels_last)
        groups = 4 if "groups" in case else 1
        cap = 200_000 if "chunked" in case else None
        x = x.to(dtype).requires_grad_()
        W = W.to(dtype).requires_grad_()
        runs = []
        for _ in range(2):
            out = conv_nd(x, W, kw["stride"], kw["pad"], True, groups, "gemm",
                          workspace_bytes=cap)
            gout = torch.cos(out.detach().float()).to(dtype)
            runs.append((out,) + torch.autograd.grad(out, (x, W), gout))
        for a, b in zip(*runs):
            assert torch.equal(a, b)


def test_gemm_memory_is_bounded():
    """VGG-16 conv3 at batch 64: the full column matrix would be 1.85 GB;
    the GEMM layer's temporaries stay near the workspace cap."""
    with torch.device(CUDA):
        layer = Conv2DMMLayer((64, 256, 56, 56), 256, 3, pad=1, nonlinearity=None, b=None)
        x = torch.randn(64, 256, 56, 56, requires_grad=True)
        out_bytes = 64 * 256 * 56 * 56 * 4
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = layer.get_output_for(x)
        torch.cuda.synchronize()
        fwd_extra = torch.cuda.max_memory_allocated() - base - out_bytes
        gout = torch.randn_like(out)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        gx, gW = torch.autograd.grad(out, (x, layer.W), gout)
        torch.cuda.synchronize()
        bwd_extra = torch.cuda.max_memory_allocated() - base - gx.numel() * 4
    full_cols = 64 * 256 * 9 * 56 * 56 * 4
    assert fwd_extra <= 1.25 * DEFAULT_WORKSPACE_BYTES < full_cols / 5, fwd_extra
    assert bwd_extra <= 1.5 * DEFAULT_WORKSPACE_BYTES, bwd_extra


# --- mixed precision and memory format ------------------------------------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [2, 3])
def test_autocast_bfloat16(nd, algorithm):
    shape = (4, 32, 16, 16) if nd == 2 else (2, 16, 6, 12, 12)
    with torch.device(CUDA):
        layer = CORE[nd](InputLayer(shape), 32, 3, pad=1, flip_filters=True,
                         algorithm=algorithm, nonlinearity=None)
        x = torch.randn(shape, requires_grad=True)
        ref = layer.get_output_for(x)
        ref_gx, ref_gW = torch.autograd.grad(ref, (x, layer.W), torch.ones_like(ref))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = layer.get_output_for(x)
        assert out.dtype == torch.bfloat16
        gx, gW = torch.autograd.grad(out, (x, layer.W), torch.ones_like(out))
    assert gx.dtype == torch.float32 and gW.dtype == torch.float32
    scale = ref.abs().max().item()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2 * scale)
    torch.testing.assert_close(gW, ref_gW, rtol=3e-2, atol=3e-2 * ref_gW.abs().max().item())
    torch.testing.assert_close(gx, ref_gx, rtol=3e-2, atol=3e-2 * ref_gx.abs().max().item())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("nd", [2, 3])
def test_channels_last(nd, groups, algorithm, no_tf32):
    fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
    shape = (4, 16, 14, 14) if nd == 2 else (2, 16, 6, 10, 10)
    with torch.device(CUDA):
        layer = CORE[nd](InputLayer(shape), 32, 3, stride=2, pad="same", num_groups=groups,
                         algorithm=algorithm, untie_biases=True)
        x = torch.randn(shape)
        results = []
        for inp in (x, x.to(memory_format=fmt)):
            inp = inp.detach().requires_grad_()
            out = layer.get_output_for(inp)
            grads = torch.autograd.grad(out, (inp, layer.W, layer.b), torch.cos(out))
            results.append((out,) + grads)
    assert results[1][0].is_contiguous(memory_format=fmt)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_channels_last_layers_agree():
    with torch.device(CUDA):
        l_in = InputLayer((8, 64, 28, 28))
        dnn = Conv2DDNNLayer(l_in, 64, 3, pad=1)
        mm = Conv2DMMLayer(l_in, 64, 3, pad=1, W=dnn.W, b=dnn.b)
        x = torch.randn(8, 64, 28, 28).to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            a, b = get_output([dnn, mm], x)
    assert a.dtype == b.dtype == torch.bfloat16
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert b.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("cls", [Conv2DDNNLayer, Conv2DMMLayer])
def test_torch_compile_fullgraph(cls):
    with torch.device(CUDA):
        layer = cls((None, 16, 20, 20), 32, 3, pad="same", flip_filters=True)
        fn = torch.compile(lambda x: layer.get_output_for(x), fullgraph=True)
        x = torch.randn(4, 16, 20, 20, requires_grad=True)
        y = fn(x)
        y.sum().backward()
        torch.testing.assert_close(y, layer.get_output_for(x), rtol=1e-3, atol=1e-3)
