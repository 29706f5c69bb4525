"""Batch normalization on CUDA: agreement with the CPU path, cuDNN really
called, the Triton kernels (bfloat16 and the fused rectifier), memory kept
for backward. Run: ``pytest -m gpu tests/test_batchnorm_gpu.py -s``."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lasagne import nonlinearities
from lasagne.layers import BatchNormLayer, InputLayer, get_all_params, set_all_param_values
from lasagne.layers.dnn import BatchNormDNNLayer
from lasagne.ops import batchnorm as bn_ops

pytestmark = pytest.mark.gpu

CASES = [((64, 32), 'auto', False), ((16, 24, 20, 20), 'auto', False),
         ((16, 24, 20, 20), 'auto', True), ((16, 24, 9, 9), 0, False),
         ((16, 24, 9, 9), 0, True), ((4, 8, 5, 6, 7), 'auto', False),
         ((4, 8, 5, 6, 7), (0,), False), ((32, 1, 10, 10), 'auto', True),
         ((4, 8, 56, 56), 'auto', False), ((4, 8, 56, 56), 'auto', True),
         ((2, 4, 80, 80), 'auto', False), ((2, 4, 80, 80), 'auto', True)]


def _expected_backend(shape, axes, channels_last, dtype, relu=False):
    """The dnn layer's documented backend policy (ops/batchnorm.py), restated:
    planar (NCHW-contiguous) spatial batches (statistics over every axis but
    1, input of rank > 2) go to our Triton kernels with planes of at least
    56x56 in bfloat16 or with a fused rectifier, and of at least 80x80
    otherwise; other spatial statistics to cuDNN in float32/float16;
    everything else to PyTorch's own kernel."""
    spatial = len(shape) > 2 and axes in ('auto', (0,) + tuple(range(2, len(shape))))
    planar = not channels_last or shape[1] == 1
    plane = int(np.prod(shape[2:])) if len(shape) > 2 else 0
    least = 56 * 56 if dtype == torch.bfloat16 or relu else 80 * 80
    if spatial and planar and plane >= least and bn_ops.triton_unavailable_reason() is None:
        return "triton"
    if dtype == torch.bfloat16 or not spatial:
        return "native"
    return "cudnn"


def _pair(cls, shape, axes, dtype=torch.float32, **kwargs):
    """The same layer on CPU and on CUDA, with equal random parameters."""
    cpu = cls(InputLayer(shape), axes=axes, **kwargs)
    with torch.device("cuda"):
        gpu = cls(InputLayer(shape), axes=axes, **kwargs)
    rng = np.random.default_rng(0)
    # beta, gamma, mean, inv_std: shifts normal, scales in [0.5, 2]
    values = [rng.normal(size=p.shape) if i % 2 == 0 else rng.uniform(0.5, 2, size=p.shape)
              for i, p in enumerate(get_all_params(cpu))]
    set_all_param_values(cpu, values)
    set_all_param_values(gpu, values)
    return cpu, gpu


def _input(shape, channels_last, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.7 + 0.6
    xg = x.to("cuda", dtype)
    if channels_last:
        fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        xg = xg.contiguous(memory_format=fmt)
    return x.to(dtype).float(), xg


class _CallCounter(object):
    def __init__(self, monkeypatch, owner, name):
        self.calls = 0
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("cls", [BatchNormLayer, BatchNormDNNLayer])
@pytest.mark.parametrize("shape,axes,channels_last", CASES)
def test_agrees_with_cpu(cls, shape, axes, channels_last):
    cpu, gpu = _pair(cls, shape, axes, alpha=0.3)
    for step in range(2):
        x, xg = _input(shape, channels_last, seed=step)
        x.requires_grad_(True)
        xg.requires_grad_(True)
        for deterministic in (False, True):
            out_c = cpu.get_output_for(x, deterministic=deterministic)
            out_g = gpu.get_output_for(xg, deterministic=deterministic)
            torch.testing.assert_close(out_g.cpu(), out_c, rtol=1e-4, atol=1e-4)
            w = torch.randn(shape)
            (out_c * w).sum().backward()
            (out_g * w.cuda()).sum().backward()
        torch.testing.assert_close(xg.grad.cpu(), x.grad, rtol=1e-3, atol=1e-4)
        for pc, pg in zip(get_all_params(cpu), get_all_params(gpu)):
            torch.testing.assert_close(pg.detach().cpu(), pc.detach(), rtol=1e-5, atol=1e-5)
            if pc.grad is not None:
                torch.testing.assert_close(pg.grad.cpu(), pc.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape,axes,channels_last", [c for c in CASES])
def test_cudnn_really_used(monkeypatch, shape, axes, channels_last):
    counter = _CallCounter(monkeypatch, torch, "cudnn_batch_norm")
    _, gpu = _pair(BatchNormDNNLayer, shape, axes)
    _, xg = _input(shape, channels_last)
    xg.requires_grad_(True)
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        gpu.get_output_for(xg).sum().backward()
        torch.cuda.synchronize()
    names = sorted({e.name for e in prof.events() if e.device_type.name == "CUDA"})
    print("\n{} axes={} channels_last={}: kernels {}".format(shape, axes, channels_last, names))
    if _expected_backend(shape, axes, channels_last, torch.float32) != "cudnn":
        # per-activation statistics (cuDNN measured 3-9x slower than PyTorch's
        # own kernel) and large planar planes (our kernels, 1.6-2.8x faster)
        assert counter.calls == 0
        return
    assert counter.calls == 1
    assert not any("batch_norm_collect_statistics" in n or "batch_norm_backward_reduce" in n
                   for n in names), "PyTorch's native batch-norm kernels ran: {}".format(names)
    assert any("bn" in n.lower() or "cudnn" in n.lower() or "batchnorm" in n.lower()
               for n in names), names


def test_cudnn_disabled_is_an_error():
    _, gpu = _pair(BatchNormDNNLayer, (8, 4, 5, 5), 'auto')
    x = torch.randn(8, 4, 5, 5, device="cuda")
    with torch.backends.cudnn.flags(enabled=False):
        with pytest.raises(RuntimeError, match=r"BatchNormDNNLayer.*cuDNN.*disabled"):
            gpu.get_output_for(x)
        # the averages alone need no cuDNN
        gpu.get_output_for(x, deterministic=True)


def test_probe_cudnn_bfloat16():
    """What torch.cudnn_batch_norm does with bfloat16 input (recorded, not
    asserted: the dnn layer does not send bfloat16 to cuDNN)."""
    x = torch.randn(8, 16, 12, 12, device="cuda", dtype=torch.bfloat16)
    for wdt in (torch.float32, torch.bfloat16):
        w = torch.ones(16, device="cuda", dtype=wdt)
        b = torch.zeros(16, device="cuda", dtype=wdt)
        try:
            y, m, s, _ = torch.cudnn_batch_norm(x, w, b, None, None, True, 0.0, 1e-4)
            ref = F.batch_norm(x.float(), None, None, training=True, eps=1e-4)
            err = (y.float() - ref).abs().max().item()
            print("\ncudnn_batch_norm(bf16 input, {} params): ran, stats {}, max err {:.3g}".format(
                wdt, m.dtype, err))
        except RuntimeError as e:
            print("\ncudnn_batch_norm(bf16 input, {} params): {}".format(
                wdt, str(e).splitlines()[0]))


@pytest.mark.parametrize("shape,axes,channels_last", CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(monkeypatch, shape, axes, channels_last, dtype):
    triton_calls = None
    if bn_ops.triton_unavailable_reason() is None:
        from lasagne.ops import batchnorm_triton
        triton_calls = _CallCounter(monkeypatch, batchnorm_triton, "forward")
    cpu, gpu = _pair(BatchNormDNNLayer, shape, axes)
    x, xg = _input(shape, channels_last, dtype)
    xg.requires_grad_(True)
    out = gpu.get_output_for(xg)
    assert out.dtype == dtype and gpu.mean.dtype == torch.float32
    if channels_last and shape[1] > 1:
        assert out.stride() == xg.stride()
    ref = cpu.get_output_for(x)
    torch.testing.assert_close(out.float().cpu(), ref, rtol=2e-2, atol=3e-2)
    torch.testing.assert_close(gpu.mean.detach().cpu(), cpu.mean.detach(), rtol=1e-4,
                               atol=1e-4)
    torch.testing.assert_close(gpu.inv_std.detach().cpu(), cpu.inv_std.detach(), rtol=1e-3,
                               atol=1e-4)
    out.float().sum().backward()
    assert xg.grad.dtype == dtype and torch.isfinite(xg.grad.float()).all()
    if triton_calls is not None:
        expect = _expected_backend(shape, axes, channels_last, dtype) == "triton"
        assert triton_calls.calls == int(expect)


@pytest.mark.parametrize("shape,axes,channels_last", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_equals_unfused(shape, axes, channels_last, dtype):
    if bn_ops.triton_unavailable_reason() is not None:
        pytest.skip("Triton is not installed")
    _, a = _pair(BatchNormDNNLayer, shape, axes)
    _, b = _pair(BatchNormDNNLayer, shape, axes)
    for step in range(2):
        _, x1 = _input(shape, channels_last, dtype, seed=step)
        x2 = x1.detach().clone().requires_grad_(True)
        x1.requires_grad_(True)
        fused = a.get_fused_output_for(x1, nonlinearities.rectify)
        plain = nonlinearities.rectify(b.get_output_for(x2))
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2,
                                                                              atol=2e-2)
        assert fused.dtype == dtype
        if shape[1] > 1:
            assert fused.stride() == plain.stride()
        torch.testing.assert_close(fused.float(), plain.float(), **tol)
        w = torch.randn(shape, device="cuda", dtype=dtype)
        (fused * w).float().sum().backward()
        (plain * w).float().sum().backward()
        torch.testing.assert_close(x1.grad.float(), x2.grad.float(), **tol)
        for pa, pb in zip(get_all_params(a), get_all_params(b)):
            torch.testing.assert_close(pa.detach(), pb.detach(), rtol=1e-4, atol=1e-5)
            if pa.grad is not None:
                torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-3, atol=2e-2)


@pytest.mark.parametrize("shape", [(3, 5, 37), (200, 6, 1), (2, 3, 3000), (1, 70, 1),
                                   (4097, 130, 1), (5, 2, 3), (64, 17, 49)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("relu", [False, True])
def test_triton_op_against_reference(shape, dtype, relu):
    if bn_ops.triton_unavailable_reason() is not None:
        pytest.skip("Triton is not installed")
    g = torch.Generator(device="cuda").manual_seed(1)
    x = (torch.randn(shape, device="cuda", generator=g) * 3 + 5).to(dtype)
    gamma = torch.rand(shape[1], device="cuda", generator=g) + 0.5
    beta = torch.randn(shape[1], device="cuda", generator=g)
    dy = torch.randn(shape, device="cuda", generator=g).to(dtype)
    y, m, s = torch.ops.lasagne.batch_norm_act(x, gamma, beta, 1e-4, relu)
    yr, mr, sr = bn_ops.reference_forward(x, gamma, beta, 1e-4, relu)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(m, mr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, sr, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y.float(), yr.float(), **tol)
    dx, dg, db = torch.ops.lasagne.batch_norm_act_backward(dy, x, m, s, gamma, beta, relu)
    dxr, dgr, dbr = bn_ops.reference_backward(dy, x, m, s, gamma, beta, relu)
    torch.testing.assert_close(dg, dgr, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(db, dbr, rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(dx.float(), dxr.float(), **tol)


def _memory(fn, x):
    """(bytes kept after forward beyond the input and output, peak bytes
    over forward and backward beyond the input)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn(x)
    torch.cuda.synchronize()
    kept = torch.cuda.memory_allocated() - base - out.numel() * out.element_size()
    out.backward(torch.ones_like(out))
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    x.grad = None
    return kept, peak


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_memory_kept_for_backward(dtype):
    shape = (32, 64, 56, 56)
    nbytes = torch.Size(shape).numel() * torch.tensor([], dtype=dtype).element_size()
    _, layer = _pair(BatchNormDNNLayer, shape, 'auto')
    w = torch.ones(64, device="cuda", requires_grad=True)
    b = torch.zeros(64, device="cuda", requires_grad=True)
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)

    def plain(x):
        return F.relu(F.batch_norm(x, None, None, w, b, training=True, eps=1e-4))

    def naive(x):  # saves a normalized copy, as a plain composition does
        m = x.float().mean((0, 2, 3), keepdim=True)
        v = x.float().var((0, 2, 3), keepdim=True, unbiased=False)
        return F.relu(((x - m) * torch.rsqrt(v + 1e-4)).to(dtype) * w[:, None, None].to(dtype)
                      + b[:, None, None].to(dtype))

    def ours(x):
        return nonlinearities.rectify(layer.get_output_for(x))

    def fused(x):
        return layer.get_fused_output_for(x, nonlinearities.rectify)

    results = {name: _memory(fn, x) for name, fn in
               [("plain", plain), ("naive", naive), ("ours", ours), ("fused", fused)]}
    for name, (kept, peak) in results.items():
        print("\n{} {}: kept {:.2f}x input, peak fwd+bwd {:.2f}x input".format(
            dtype, name, kept / nbytes, peak / nbytes))
    slack = 0.05 * nbytes
    # cuDNN / our kernels keep no normalized copy: nothing beyond the input
    # and the (shared) output, like F.batch_norm, unlike a composition
    assert results["ours"][0] <= results["plain"][0] + slack
    assert results["naive"][0] >= results["ours"][0] + 0.9 * nbytes
    if bn_ops.triton_unavailable_reason() is None:
        assert results["fused"][0] <= results["plain"][0] + slack
        # no separate normalized output forward, no gradient of it backward
        assert results["fused"][1] <= results["plain"][1] - 0.9 * nbytes


def test_autocast():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1).cuda()
    _, layer = _pair(BatchNormDNNLayer, (4, 16, 10, 10), 'auto')
    x = torch.randn(4, 8, 10, 10, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = conv(x)
        out = layer.get_output_for(h)
        fused = layer.get_fused_output_for(h, nonlinearities.rectify)
    assert h.dtype == out.dtype == fused.dtype == torch.bfloat16
    assert layer.mean.dtype == torch.float32


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_compile_fullgraph(fused, dtype):
    _, layer = _pair(BatchNormDNNLayer, (4, 16, 10, 10), 'auto')

    def step(x):
        if fused:
            return layer.get_fused_output_for(x, nonlinearities.rectify,
                                              batch_norm_update_averages=False)
        return layer.get_output_for(x, batch_norm_update_averages=False)
    compiled = torch.compile(step, fullgraph=True)
    x = torch.randn(4, 16, 10, 10, device="cuda", dtype=dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(compiled(x).float(), step(x).float(), **tol)
