"""The implicit-GEMM convolution kernels (lasagne.ops.triton.conv_kernels)
and their custom ops (lasagne.ops.conv_gemm_cuda), against float64
references.

* CPU: run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before
  pytest starts) and when Triton is installed; tiny shapes (the interpreter
  runs every program in Python). Without the interpreter they are skipped.
* GPU (``@pytest.mark.gpu``): kernels == ``F.conv2d``/``F.conv3d`` with TF32
  off, gradients vs PyTorch autograd, bfloat16/float16 tolerance, bitwise
  reproducible gradients, ``torch.library.opcheck``, ``torch.compile``
  (``fullgraph=True``), autocast.

    TRITON_INTERPRET=1 pytest tests/test_conv_kernels.py     # CPU, interpreter
    pytest tests/test_conv_kernels.py -m gpu                 # on a CUDA machine
"""

import itertools
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
cpu_interp = pytest.mark.skipif(not INTERPRET, reason="CPU kernel tests need TRITON_INTERPRET=1")
gpu = pytest.mark.gpu


def kernels():
    from lasagne.ops.triton import conv_kernels
    return conv_kernels


def op_module():
    from lasagne.ops import conv_gemm_cuda
    return conv_gemm_cuda


# --- references ---------------------------------------------------------------------------------

def ref_conv(x, w, stride, pad, groups):
    """Forward and both gradients for output gradient ``gy`` from PyTorch's
    float64 convolution on the CPU."""
    x64 = x.detach().double().cpu().requires_grad_()
    w64 = w.detach().double().cpu().requires_grad_()
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    y = conv(x64, w64, None, tuple(stride), tuple(pad), 1, groups)
    return x64, w64, y


def ref_grads(x64, w64, y64, gy):
    gx, gw = torch.autograd.grad(y64, (x64, w64), gy.detach().double().cpu())
    return gx, gw


def loop_conv2d(x, w, stride, pad, groups):
    """Cross-correlation straight from the definition, float64 numpy loops."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    Kg = K // groups
    OH = (H + 2 * pad[0] - R) // stride[0] + 1
    OW = (W + 2 * pad[1] - S) // stride[1] + 1
    y = np.zeros((N, K, OH, OW))
    for n, k, oh, ow in itertools.product(range(N), range(K), range(OH), range(OW)):
        g = k // Kg
        acc = 0.0
        for c, r, s in itertools.product(range(Cg), range(R), range(S)):
            ih = oh * stride[0] - pad[0] + r
            iw = ow * stride[1] - pad[1] + s
            if 0 <= ih < H and 0 <= iw < W:
                acc += x[n, g * Cg + c, ih, iw] * w[k, c, r, s]
        y[n, k, oh, ow] = acc
    return y


def rel_err(a, b):
    a = a.detach().double().cpu()
    b = b.detach().double().cpu()
    assert torch.isfinite(a).all(), "non-finite values (unwritten output?)"
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def layout(t, channels_last):
    if not channels_last:
        return t.contiguous()
    return t.contiguous(memory_format=torch.channels_last if t.ndim == 4
                        else torch.channels_last_3d)


def poisoned(shape, dtype, device, channels_last=False):
    t = torch.full(shape, float("nan"), dtype=dtype, device=device)
    return layout(t, channels_last)


def run_all(x, w, stride, pad, groups, gy, configs=(None, None, None), split=None):
    """Forward, dgrad and wgrad through the kernels into NaN-poisoned outputs."""
    ck = kernels()
    cl = ck._channels_last(x)
    y = poisoned(ck.out_shape(x.shape, w.shape, stride, pad), x.dtype, x.device, cl)
    ck.conv_forward(x, w, stride, pad, groups, out=y, config=configs[0], precision="ieee")
    dx = poisoned(x.shape, x.dtype, x.device, cl)
    ck.conv_dgrad(gy, w, x.shape, stride, pad, groups, out=dx, config=configs[1],
                  precision="ieee")
    dw = poisoned(w.shape, w.dtype, w.device)
    ck.conv_wgrad(x, gy, w.shape, stride, pad, groups, out=dw, config=configs[2],
                  precision="ieee", split=split)
    return y, dx, dw


def check_case(x, w, stride, pad, groups, tol, configs=(None, None, None), split=None):
    x64, w64, y64 = ref_conv(x, w, stride, pad, groups)
    gy = torch.randn(y64.shape, dtype=torch.float64).to(x.dtype).to(x.device)
    gy = layout(gy, kernels()._channels_last(x))
    y, dx, dw = run_all(x, w, stride, pad, groups, gy, configs, split)
    gx64, gw64 = ref_grads(x64, w64, y64, gy)
    assert y.shape == y64.shape and dx.shape == x.shape and dw.shape == w.shape
    assert rel_err(y, y64) < tol, "forward"
    assert rel_err(dx, gx64) < tol, "dgrad"
    assert rel_err(dw, gw64) < tol, "wgrad"
    return y, dx, dw


# --- CPU (interpreter) --------------------------------------------------------------------------

# (N, C, spatial, K, filter, stride, pad, groups)
CASES_2D = [
    (2, 3, (5, 7), 4, (3, 3), (1, 1), (1, 1), 1),
    (2, 4, (5, 7), 6, (3, 3), (2, 2), (0, 0), 2),
    (2, 8, (7, 5), 5, (1, 1), (1, 1), (0, 0), 1),
    (2, 8, (7, 5), 4, (1, 1), (2, 2), (0, 0), 1),     # 1x1 stride 2: rows no window reads
    (2, 5, (6, 7), 3, (3, 2), (2, 3), (2, 1), 1),     # anisotropic, stride > filter
    (1, 4, (5, 5), 4, (5, 5), (1, 1), (2, 2), 2),     # pad 2
    (1, 3, (4, 4), 2, (4, 4), (1, 1), (0, 0), 1),     # filter = input
    (2, 3, (1, 1), 4, (1, 1), (1, 1), (0, 0), 1),     # 1x1 input
    (2, 4, (3, 4), 4, (3, 3), (3, 2), (2, 2), 1),     # pad = filter - 1, stride 3
    (2, 6, (7, 6), 6, (3, 3), (1, 2), (1, 0), 3),
]


@cpu_interp
@pytest.mark.parametrize("case", CASES_2D)
@pytest.mark.parametrize("cl", [False, True])
def test_conv2d_interp(case, cl):
    N, C, sp, K, f, st, pd, g = case
    x = layout(torch.randn((N, C) + sp), cl)
    w = torch.randn((K, C // g) + f)
    check_case(x, w, st, pd, g, 1e-6)


@cpu_interp
def test_conv2d_loop_reference_interp():
    x = torch.randn(2, 4, 6, 5)
    w = torch.randn(6, 2, 3, 2)
    y = kernels().conv_forward(x, w, (2, 1), (1, 2), 2, precision="ieee")
    ref = loop_conv2d(x.numpy(), w.numpy(), (2, 1), (1, 2), 2)
    assert rel_err(y, torch.from_numpy(ref)) < 1e-6


CASES_3D = [
    (1, 3, (3, 4, 4), 4, (3, 3, 3), (1, 1, 1), (1, 1, 1), 1),
    (1, 4, (4, 5, 3), 4, (2, 3, 1), (2, 1, 2), (1, 0, 0), 2),
]


@cpu_interp
@pytest.mark.parametrize("case", CASES_3D)
@pytest.mark.parametrize("cl", [False, True])
def test_conv3d_interp(case, cl):
    N, C, sp, K, f, st, pd, g = case
    x = layout(torch.randn((N, C) + sp), cl)
    w = torch.randn((K, C // g) + f)
    check_case(x, w, st, pd, g, 1e-6)


@cpu_interp
@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("problem,configs", [
    # channel blocks dividing the channels (unmasked channel loads), several
    # position tiles
    (((2, 32, 5, 6), (32, 16, 3, 3), 2),
     ((16, 16, 16, 4, 1), (16, 16, 16, 4, 1), (16, 16, 16, 4, 1))),
    # channel and filter blocks not dividing them, two filter tiles
    (((1, 40, 5, 6), (36, 20, 3, 3), 2),
     ((32, 16, 16, 4, 1), (32, 16, 16, 4, 1), (16, 16, 32, 4, 1))),
])
def test_configs_interp(problem, configs, cl):
    xs, ws, g = problem
    x = layout(torch.randn(xs), cl)
    w = torch.randn(ws)
    check_case(x, w, (1, 2), (1, 1), g, 1e-6, configs=configs)


@cpu_interp
@pytest.mark.parametrize("split", [1, 2, 5])
def test_wgrad_split_interp(split):
    """Partial sums through the workspace (or straight into dw for split 1)
    give the same weight gradient; and the result is reproducible."""
    ck = kernels()
    x = layout(torch.randn(3, 4, 6, 6), True)
    w = torch.randn(4, 4, 3, 3)
    x64, w64, y64 = ref_conv(x, w, (1, 1), (1, 1), 1)
    gy = layout(torch.randn(y64.shape), True)
    _, gw64 = ref_grads(x64, w64, y64, gy)
    cfg = (16, 16, 16, 4, 1)
    dw1 = ck.conv_wgrad(x, gy, w.shape, (1, 1), (1, 1), 1, config=cfg, split=split)
    dw2 = ck.conv_wgrad(x, gy, w.shape, (1, 1), (1, 1), 1, config=cfg, split=split)
    assert rel_err(dw1, gw64) < 1e-6
    assert torch.equal(dw1, dw2)


@cpu_interp
def test_wgrad_noncontiguous_out_interp():
    """dw written through arbitrary strides (here: a channels-last view)."""
    ck = kernels()
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(3, 4, 3, 3)
    x64, w64, y64 = ref_conv(x, w, (1, 1), (1, 1), 1)
    gy = torch.randn(y64.shape).float()
    _, gw64 = ref_grads(x64, w64, y64, gy)
    for split in (1, 3):
        out = poisoned(w.shape, torch.float32, "cpu", channels_last=True)
        ck.conv_wgrad(x, gy, w.shape, (1, 1), (1, 1), 1, out=out, split=split,
                      config=(16, 16, 16, 4, 1))
        assert rel_err(out, gw64) < 1e-6


@cpu_interp
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("cl", [False, True])
def test_half_precision_interp(dtype, tol, cl):
    """Half-precision operands, float32 accumulation; the reference uses the
    same rounded operand values in float64."""
    x = layout(torch.randn(2, 6, 5, 7).to(dtype), cl)
    w = torch.randn(4, 3, 3, 3).to(dtype)
    y, dx, dw = check_case(x, w, (2, 1), (1, 1), 2, tol)
    assert y.dtype == dx.dtype == dw.dtype == dtype


@cpu_interp
def test_op_autograd_interp():
    conv_igemm = op_module().conv_igemm
    x = layout(torch.randn(2, 4, 5, 6), True).requires_grad_()
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    y = conv_igemm(x, w, (2, 1), (1, 1), 2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    gy = torch.randn_like(y)
    y.backward(gy)
    x64, w64, y64 = ref_conv(x, w, (2, 1), (1, 1), 2)
    gx64, gw64 = ref_grads(x64, w64, y64, gy)
    assert rel_err(y, y64) < 1e-6
    assert rel_err(x.grad, gx64) < 1e-6
    assert rel_err(w.grad, gw64) < 1e-6
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    # only one of the gradients asked for
    (gw_only,) = torch.autograd.grad(conv_igemm(x.detach(), w, (2, 1), (1, 1), 2), (w,), gy)
    assert rel_err(gw_only, gw64) < 1e-6


@cpu_interp
def test_op_autocast_interp():
    conv_igemm = op_module().conv_igemm
    x = torch.randn(2, 4, 5, 6)
    w = torch.randn(4, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv_igemm(x, w, (1, 1), (1, 1), 1)
    assert y.dtype == torch.bfloat16
    _, _, y64 = ref_conv(x.bfloat16(), w.bfloat16(), (1, 1), (1, 1), 1)
    assert rel_err(y, y64) < 1e-2


@cpu_interp
def test_op_opcheck_interp():
    op_module()  # registers the ops
    x = layout(torch.randn(2, 4, 4, 5), True).requires_grad_()
    w = torch.randn(4, 2, 3, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.lasagne.conv_igemm.default, (x, w, [2, 1], [1, 0], 2))


@cpu_interp
def test_op_compile_fullgraph_interp():
    """Dynamo and AOTAutograd trace the op (fake impl, autograd formula)
    without graph breaks; the CPU run uses the eager backend chain."""
    conv_igemm = op_module().conv_igemm

    def f(x, w):
        return torch.relu(conv_igemm(x, w, (1, 1), (1, 1), 1)) * 2.0

    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    y = compiled(x, w)
    y.sum().backward()
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    f(x, w).sum().backward()
    assert torch.allclose(y, f(x, w))
    assert torch.equal(gx, x.grad) and torch.equal(gw, w.grad)


def test_configs_are_valid():
    """Every configuration the benchmark sweeps is launchable: powers of two
    of at least 16 (tl.dot's minimum), at most 256."""
    ck = kernels()
    for kind in ("fwd", "dgrad", "wgrad"):
        for dtype in (torch.float32, torch.bfloat16):
            for cg, kg in ((3, 64), (64, 64), (256, 256), (32, 8)):
                cfgs = ck.candidate_configs(kind, dtype, cg, kg)
                assert cfgs
                for c in cfgs + [ck.default_config(kind, dtype, cg, kg, 10 ** 6)]:
                    for b in c[:3]:
                        assert 16 <= b <= 256 and b & (b - 1) == 0, (kind, c)


def test_wgrad_split_bounds():
    ck = kernels()
    dev = torch.device("cpu")
    assert ck.wgrad_split(100, 1000, 10, 1 << 30, dev) == 1
    # the workspace cap wins over the occupancy target
    assert ck.wgrad_split(1, 10 ** 6, 1 << 20, 3 << 20, dev) <= 3
    # never more splits than position tiles allow
    assert ck.wgrad_split(1, 8, 1, 1 << 30, dev) == 1


# --- GPU ----------------------------------------------------------------------------------------

def cuda_ref(x, w, stride, pad, groups, gy):
    """PyTorch on CUDA in float64: forward and both gradients."""
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    y = conv(x64, w64, None, tuple(stride), tuple(pad), 1, groups)
    gx, gw = torch.autograd.grad(y, (x64, w64), gy.double())
    return y, gx, gw


GPU_CASES = [
    # (N, C, spatial, K, filter, stride, pad, groups)
    (4, 64, (14, 14), 64, (3, 3), (1, 1), (1, 1), 1),
    (4, 32, (15, 13), 48, (3, 3), (2, 2), (1, 1), 1),
    (2, 3, (33, 31), 64, (7, 7), (2, 2), (3, 3), 1),
    (4, 64, (9, 9), 128, (1, 1), (2, 2), (0, 0), 1),
    (2, 40, (11, 12), 36, (3, 2), (1, 3), (2, 0), 4),
    (2, 16, (6, 10, 9), 24, (3, 3, 3), (1, 2, 1), (1, 1, 1), 1),
    (2, 8, (5, 6, 7), 8, (3, 1, 3), (2, 1, 1), (1, 0, 2), 2),
]


@pytest.fixture
def no_tf32():
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@gpu
@pytest.mark.parametrize("case", GPU_CASES)
@pytest.mark.parametrize("cl", [False, True])
def test_gpu_fp32_exact(case, cl, no_tf32):
    """Forward, dgrad and wgrad (ieee float32) against float64 on CUDA, and
    against F.conv with TF32 off: relative 1e-5."""
    N, C, sp, K, f, st, pd, g = case
    x = layout(torch.randn((N, C) + sp, device="cuda"), cl)
    w = torch.randn((K, C // g) + f, device="cuda")
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    gy = layout(torch.randn(kernels().out_shape(x.shape, w.shape, st, pd), device="cuda"), cl)
    y, dx, dw = run_all(x, w, st, pd, g, gy)
    y64, gx64, gw64 = cuda_ref(x, w, st, pd, g, gy)
    for ours, ref in ((y, y64), (dx, gx64), (dw, gw64)):
        assert rel_err(ours, ref) < 1e-6
        assert (ours.double() - ref).abs().max() <= 1e-5 * ref.abs().max() + 1e-6
    torch_y = conv(x, w, None, st, pd, 1, g)
    assert torch.allclose(y, torch_y, rtol=1e-5, atol=1e-5 * torch_y.abs().max().item())


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", GPU_CASES[:6])
def test_gpu_half(case, dtype):
    N, C, sp, K, f, st, pd, g = case
    x = layout(torch.randn((N, C) + sp, device="cuda", dtype=dtype), True)
    w = (torch.randn((K, C // g) + f, device="cuda") / (C // g * np.prod(f)) ** 0.5).to(dtype)
    gy = layout(torch.randn(kernels().out_shape(x.shape, w.shape, st, pd), device="cuda",
                            dtype=dtype), True)
    y, dx, dw = run_all(x, w, st, pd, g, gy)
    y64, gx64, gw64 = cuda_ref(x, w, st, pd, g, gy)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    assert rel_err(y, y64) < tol and rel_err(dx, gx64) < tol and rel_err(dw, gw64) < tol
    assert y.dtype == dx.dtype == dw.dtype == dtype


@gpu
@pytest.mark.parametrize("cl", [False, True])
def test_gpu_tf32_close(cl):
    """Default precision (TF32 as cuDNN) is within TF32 error."""
    x = layout(torch.randn(8, 64, 20, 20, device="cuda"), cl)
    w = torch.randn(64, 64, 3, 3, device="cuda")
    y = op_module().conv_igemm(x, w, (1, 1), (1, 1), 1)
    y64 = F.conv2d(x.double(), w.double(), None, 1, 1)
    assert rel_err(y, y64) < 2e-3


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cl", [False, True])
def test_gpu_op_grads_vs_autograd(dtype, cl):
    conv_igemm = op_module().conv_igemm
    x = layout(torch.randn(8, 32, 17, 19, device="cuda", dtype=dtype), cl).requires_grad_()
    w = (torch.randn(48, 16, 3, 3, device="cuda") * 0.1).to(dtype).requires_grad_()
    y = conv_igemm(x, w, (2, 1), (1, 1), 2)
    gy = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, w), gy)
    xr = x.detach().requires_grad_()
    wr = w.detach().requires_grad_()
    yr = F.conv2d(xr, wr, None, (2, 1), (1, 1), 1, 2)
    gxr, gwr = torch.autograd.grad(yr, (xr, wr), gy)
    tol = 1e-2 if dtype == torch.bfloat16 else 3e-3  # both sides may use TF32
    assert rel_err(y, yr) < tol and rel_err(gx, gxr) < tol and rel_err(gw, gwr) < tol
    assert y.is_contiguous(memory_format=torch.channels_last) == cl
    assert gx.is_contiguous(memory_format=torch.channels_last) == cl


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_bitwise_reproducible(dtype):
    """Op outputs and gradients bitwise identical across runs; and the weight
    gradient through a split reduction (workspace + ordered sum) too."""
    ck = kernels()
    conv_igemm = op_module().conv_igemm
    x = layout(torch.randn(32, 64, 28, 28, device="cuda", dtype=dtype), True).requires_grad_()
    w = (torch.randn(64, 64, 3, 3, device="cuda") * 0.05).to(dtype).requires_grad_()
    gy = layout(torch.randn(32, 64, 28, 28, device="cuda", dtype=dtype), True)
    results = []
    for _ in range(3):
        y = conv_igemm(x, w, (1, 1), (1, 1), 1)
        results.append((y,) + torch.autograd.grad(y, (x, w), gy))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    for split in (1, 7):
        dw1 = ck.conv_wgrad(x.detach(), gy, w.shape, (1, 1), (1, 1), 1, split=split)
        dw2 = ck.conv_wgrad(x.detach(), gy, w.shape, (1, 1), (1, 1), 1, split=split)
        assert torch.equal(dw1, dw2)
        assert rel_err(dw1, results[0][2].float()) < (1e-2 if dtype == torch.bfloat16 else 1e-3)


@gpu
@pytest.mark.parametrize("cl", [False, True])
def test_gpu_opcheck(cl):
    op_module()  # registers the ops
    x = layout(torch.randn(2, 8, 9, 10, device="cuda"), cl).requires_grad_()
    w = torch.randn(12, 4, 3, 3, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.lasagne.conv_igemm.default, (x, w, [2, 1], [1, 1], 2))
    gy = layout(torch.randn(2, 12, 5, 10, device="cuda"), cl)
    torch.library.opcheck(torch.ops.lasagne.conv_igemm_dgrad.default,
                          (gy, w.detach(), [2, 8, 9, 10], [2, 1], [1, 1], 2, cl))
    torch.library.opcheck(torch.ops.lasagne.conv_igemm_wgrad.default,
                          (x.detach(), gy, [12, 4, 3, 3], [2, 1], [1, 1], 2))


@gpu
def test_gpu_compile_fullgraph():
    conv_igemm = op_module().conv_igemm

    def f(x, w, b):
        return torch.relu(conv_igemm(x, w, (1, 1), (1, 1), 1) + b.view(1, -1, 1, 1))

    x = layout(torch.randn(4, 16, 12, 12, device="cuda"), True).requires_grad_()
    w = torch.randn(32, 16, 3, 3, device="cuda", requires_grad=True)
    b = torch.randn(32, device="cuda", requires_grad=True)
    compiled = torch.compile(f, fullgraph=True)
    y = compiled(x, w, b)
    grads = torch.autograd.grad(y.sum(), (x, w, b))
    y_e = f(x, w, b)
    grads_e = torch.autograd.grad(y_e.sum(), (x, w, b))
    assert torch.allclose(y, y_e, rtol=1e-5, atol=1e-5)
    for a, e in zip(grads, grads_e):
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-4)


@gpu
def test_gpu_autocast():
    conv_igemm = op_module().conv_igemm
    x = layout(torch.randn(4, 16, 12, 12, device="cuda"), True).requires_grad_()
    w = torch.randn(32, 16, 3, 3, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = conv_igemm(x, w, (1, 1), (1, 1), 1)
        ref = F.conv2d(x, w, None, 1, 1)
    assert y.dtype == ref.dtype == torch.bfloat16
    assert rel_err(y, ref) < 1e-2
    gx, gw = torch.autograd.grad(y.float().sum(), (x, w))
    assert gx.dtype == gw.dtype == torch.float32

    def f(x, w):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return conv_igemm(x, w, (1, 1), (1, 1), 1)

    assert torch.compile(f, fullgraph=True)(x, w).dtype == torch.bfloat16


@gpu
def test_gpu_sweep_configs():
    """Configurations the benchmark may pick compute the right thing (one
    medium problem per kernel, NHWC bf16 and NCHW float32)."""
    ck = kernels()
    for dtype, cl in ((torch.bfloat16, True), (torch.float32, False)):
        x = layout(torch.randn(4, 64, 15, 15, device="cuda", dtype=dtype), cl)
        w = (torch.randn(64, 64, 3, 3, device="cuda") * 0.05).to(dtype)
        gy = layout(torch.randn(4, 64, 8, 8, device="cuda", dtype=dtype), cl)
        y64, gx64, gw64 = cuda_ref(x, w, (2, 2), (1, 1), 1, gy)
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
        # a few of each (the benchmark checks every one it times against cuDNN)
        for cfg in ck.candidate_configs("fwd", dtype, 64, 64)[::3]:
            y = ck.conv_forward(x, w, (2, 2), (1, 1), 1, config=cfg, precision="ieee")
            assert rel_err(y, y64) < tol, ("fwd", cfg)
        for cfg in ck.candidate_configs("dgrad", dtype, 64, 64)[::3]:
            dx = ck.conv_dgrad(gy, w, x.shape, (2, 2), (1, 1), 1, channels_last=cl, config=cfg,
                               precision="ieee")
            assert rel_err(dx, gx64) < tol, ("dgrad", cfg)
        for cfg in ck.candidate_configs("wgrad", dtype, 64, 64)[::3]:
            dw = ck.conv_wgrad(x, gy, w.shape, (2, 2), (1, 1), 1, config=cfg, precision="ieee")
            assert rel_err(dw, gw64) < tol, ("wgrad", cfg)
