"""The Triton pooling and SPP kernels (lasagne.ops.triton) against float64
loop references written here.

* CPU: run only under Triton's interpreter (``TRITON_INTERPRET=1`` set before
  pytest starts) and when Triton is installed; tiny shapes, the interpreter
  is slow. CI without Triton skips them.
* GPU (``@pytest.mark.gpu``): the kernels on CUDA against the references and
  against the portable ops, bitwise-reproducible backward, ``opcheck`` of the
  custom ops, ``torch.compile(fullgraph=True)``, bf16/fp16 and channels-last.

    TRITON_INTERPRET=1 pytest tests/test_pool_kernels.py     # CPU, interpreter
    pytest tests/test_pool_kernels.py -m gpu                 # on a CUDA machine
"""

import itertools
import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
HAS_CUDA = torch.cuda.is_available()
cpu_interp = pytest.mark.skipif(not INTERPRET, reason="CPU kernel tests need TRITON_INTERPRET=1")
gpu = pytest.mark.gpu

MODES = ("max", "average_inc_pad", "average_exc_pad")


def _fix_interpreter():
    """Two test-side shims for Triton 3.6's interpreter (compiled kernels are
    unaffected):

    * it turns a scalar tensor into an int with ``int(array)``, which numpy 2
      rejects for its shape-(1,) scalars, so runtime ``range`` loops fail
      under the interpreter only: take the single element instead;
    * it computes ``maxnum``/``minnum`` (``tl.maximum``/``tl.minimum``
      without NaN propagation) with ``np.maximum``/``np.minimum``, which
      propagate NaN; the GPU instructions return the other operand, as
      ``np.fmax``/``np.fmin`` do.
    """
    from triton.runtime import interpreter
    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__",
                       lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))
    if getattr(original, "__name__", "") != "patched":
        interpreter._patch_lang_tensor = patched
    builder = interpreter.InterpreterBuilder
    builder.create_maxnumf = lambda self, lhs, rhs: self.binary_op(lhs, rhs, np.fmax)
    builder.create_minnumf = lambda self, lhs, rhs: self.binary_op(lhs, rhs, np.fmin)


if INTERPRET:
    _fix_interpreter()


# --- references (float64, plain loops) --------------------------------------------------------

def out_length(L, k, s, p, ignore_border):
    if ignore_border:
        return -(-(L + 2 * p - k + 1) // s)
    if s >= k:
        return -(-L // s)
    return max(0, -(-(L - k) // s)) + 1


def ref_pool(x, k, s, p, mode, ignore_border=True):
    """Forward and the argmax/divisor bookkeeping, from the definitions."""
    x = np.asarray(x, dtype=np.float64)
    N, C = x.shape[:2]
    Ls = x.shape[2:]
    out = tuple(out_length(L, ki, si, pi, ignore_border) for L, ki, si, pi in zip(Ls, k, s, p))
    y = np.zeros((N, C) + out)
    for o in itertools.product(*[range(n) for n in out]):
        starts = [oi * si - pi for oi, si, pi in zip(o, s, p)]
        ends = [st + ki for st, ki in zip(starts, k)]
        lo = [max(st, 0) for st in starts]
        hi = [min(e, L) for e, L in zip(ends, Ls)]
        win = x[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo, hi))]
        flat = win.reshape(N, C, -1)
        if mode == "max":
            y[(slice(None), slice(None)) + o] = flat.max(-1)
        else:
            if mode == "average_inc_pad":
                div = np.prod([min(e, L + pi) - st for st, e, L, pi in zip(starts, ends, Ls, p)])
            else:
                div = flat.shape[-1]
            y[(slice(None), slice(None)) + o] = flat.sum(-1) / div
    return y


def ref_pool_grad(x, gy, k, s, p, mode, ignore_border=True):
    """Gradient: each window's gradient goes to its first maximum in
    row-major window order (max), or is spread over its divisor."""
    x = np.asarray(x, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    N, C = x.shape[:2]
    Ls = x.shape[2:]
    out = gy.shape[2:]
    gx = np.zeros_like(x)
    for o in itertools.product(*[range(n) for n in out]):
        starts = [oi * si - pi for oi, si, pi in zip(o, s, p)]
        ends = [st + ki for st, ki in zip(starts, k)]
        lo = [max(st, 0) for st in starts]
        hi = [min(e, L) for e, L in zip(ends, Ls)]
        shape = [b - a for a, b in zip(lo, hi)]
        g = gy[(slice(None), slice(None)) + o]
        if mode == "max":
            win = x[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo, hi))]
            am = win.reshape(N, C, -1).argmax(-1)
            for n in range(N):
                for c in range(C):
                    pos = np.unravel_index(am[n, c], shape)
                    idx = (n, c) + tuple(a + q for a, q in zip(lo, pos))
                    gx[idx] += g[n, c]
        else:
            if mode == "average_inc_pad":
                div = np.prod([min(e, L + pi) - st for st, e, L, pi in zip(starts, ends, Ls, p)])
            else:
                div = np.prod(shape)
            sl = (slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo, hi))
            gx[sl] += (g / div).reshape((N, C) + (1,) * len(shape))
    return gx


def spp_axis_bins(L, n, implementation):
    if implementation == "fast":
        window, step = -(-L // n), L // n
        if step >= 1 and (L - window) // step + 1 == n:
            return [(i * step, i * step + window) for i in range(n)]
    return [((i * L) // n, -(-((i + 1) * L) // n)) for i in range(n)]


def ref_spp(x, dims, mode, implementation):
    x = np.asarray(x, dtype=np.float64)
    N, C, H, W = x.shape
    cols = []
    for n in dims:
        for (h0, h1) in spp_axis_bins(H, n, implementation):
            for (w0, w1) in spp_axis_bins(W, n, implementation):
                win = x[:, :, h0:h1, w0:w1].reshape(N, C, -1)
                cols.append(win.max(-1) if mode == "max" else win.mean(-1))
    return np.stack(cols, -1)


def ref_spp_grad(x, gy, dims, mode, implementation):
    x = np.asarray(x, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    N, C, H, W = x.shape
    gx = np.zeros_like(x)
    b = 0
    for n in dims:
        for (h0, h1) in spp_axis_bins(H, n, implementation):
            for (w0, w1) in spp_axis_bins(W, n, implementation):
                g = gy[:, :, b]
                if mode == "max":
                    am = x[:, :, h0:h1, w0:w1].reshape(N, C, -1).argmax(-1)
                    for i in range(N):
                        for c in range(C):
                            dh, dw = divmod(int(am[i, c]), w1 - w0)
                            gx[i, c, h0 + dh, w0 + dw] += g[i, c]
                else:
                    gx[:, :, h0:h1, w0:w1] += (g / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
                b += 1
    return gx


# --- helpers ----------------------------------------------------------------------------------

def layout(t, cl):
    if not cl:
        return t.contiguous()
    fmt = torch.channels_last if t.ndim == 4 else torch.channels_last_3d
    if t.ndim == 3:  # 1D: channels-last through a transpose
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    return t.contiguous(memory_format=fmt)


def rel_err(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    assert np.isfinite(a).all()
    den = max(np.linalg.norm(ref), 1e-30)
    return np.linalg.norm(a - ref) / den


def poisoned(fn):
    """Run fn with torch.empty returning NaN-filled tensors, so unwritten
    outputs show."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t.fill_(77)
    torch.empty = empty
    try:
        return fn()
    finally:
        torch.empty = real_empty


def kernels():
    from lasagne.ops.triton import pool_kernels
    return pool_kernels


def kernel_grad(x, gy, k, s, p, mode):
    """The kernels' input gradient: for max, through the codes that the
    training forward writes (its output must equal the plain forward's)."""
    pk = kernels()
    codes = None
    if mode == "max":
        out = tuple(gy.shape[2:])
        y, codes = poisoned(lambda: pk.pool_forward(x, k, s, p, out, "max", codes=True))
        assert codes.dtype == torch.uint8 and codes.stride() == y.stride()
        torch.testing.assert_close(y, pk.pool_forward(x, k, s, p, out, "max"), rtol=0, atol=0,
                                   equal_nan=True)
    return poisoned(lambda: pk.pool_backward(gy, tuple(x.shape), pk.channels_last(x), k, s, p,
                                             mode, codes))


def spp_kernels():
    from lasagne.ops.triton import spp_kernels as sk
    return sk


def spp_kernel_grad(x, gy, dims, mode, implementation):
    """The SPP kernels' input gradient: for max, through the codes that the
    training forward writes (its output must equal the plain forward's)."""
    sk = spp_kernels()
    codes = None
    if mode == "max":
        y, codes = poisoned(lambda: sk.spp_forward(x, dims, "max", implementation, codes=True))
        assert codes.dtype == torch.int32 and codes.shape == y.shape
        torch.testing.assert_close(y, sk.spp_forward(x, dims, "max", implementation), rtol=0,
                                   atol=0, equal_nan=True)
    cl = x.shape[1] > 1 and x.stride(1) == 1
    return poisoned(lambda: sk.spp_backward(gy, tuple(x.shape), cl, dims, mode, implementation,
                                            codes))


# --- CPU (interpreter) ------------------------------------------------------------------------

POOL_CASES = [
    # (spatial shape, k, s, p)
    ((7, 9), (3, 3), (2, 2), (1, 1)),
    ((6, 6), (2, 2), (2, 2), (0, 0)),
    ((7, 8), (3, 3), (1, 1), (1, 1)),
    ((7, 6), (3, 3), (1, 1), (2, 2)),      # pad > k // 2
    ((9, 7), (4, 3), (3, 2), (3, 1)),      # pad = k - 1, anisotropic
    ((8, 5), (2, 3), (3, 4), (1, 2)),      # stride > pool
    ((1, 1), (1, 1), (1, 1), (0, 0)),
    ((5,), (3,), (2,), (2,)),              # 1D
    ((4, 5, 6), (2, 2, 2), (2, 2, 2), (0, 0, 0)),
    ((5, 4, 5), (3, 2, 3), (2, 1, 2), (1, 1, 2)),
]


@cpu_interp
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cl", [False, True])
def test_pool_forward_backward_interp(case, mode, cl, rng):
    spatial, k, s, p = case
    pk = kernels()
    x = torch.from_numpy(rng.standard_normal((2, 3) + spatial) - 2.0).float()
    x = layout(x, cl)
    out = tuple(out_length(L, ki, si, pi, True) for L, ki, si, pi in zip(spatial, k, s, p))
    y = poisoned(lambda: pk.pool_forward(x, k, s, p, out, mode))
    assert pk.channels_last(y) == pk.channels_last(x)
    ref = ref_pool(x.numpy(), k, s, p, mode)
    assert rel_err(y.numpy(), ref) < 1e-6
    gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
    gx = kernel_grad(x, gy, k, s, p, mode)
    assert pk.channels_last(gx) == pk.channels_last(x)
    gref = ref_pool_grad(x.numpy(), gy.numpy(), k, s, p, mode)
    assert rel_err(gx.numpy(), gref) < 1e-6


@cpu_interp
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("cl", [False, True])
def test_pool_max_codes_with_ties_interp(case, cl, rng):
    """Integer data (many ties): the first-max codes of the training forward
    send each window's gradient to its first maximum in row-major order."""
    spatial, k, s, p = case
    x = torch.from_numpy(rng.integers(-3, 2, size=(2, 3) + spatial).astype(np.float32))
    x = layout(x, cl)
    out = tuple(out_length(L, ki, si, pi, True) for L, ki, si, pi in zip(spatial, k, s, p))
    gy = torch.from_numpy(rng.standard_normal((2, 3) + out)).float()
    gx = kernel_grad(x, gy, k, s, p, "max")
    gref = ref_pool_grad(x.numpy(), gy.numpy(), k, s, p, "max")
    np.testing.assert_allclose(gx.numpy(), gref, rtol=1e-5, atol=1e-5)


@cpu_interp
@pytest.mark.parametrize("rows", [(1, 1), (3, 3), (5, 2)])
@pytest.mark.parametrize("case", [((9, 5), (3, 3), (1, 1), (1, 1)), ((11, 6), (3, 2), (2, 2), (2, 1)),
                                  ((6, 7, 5), (2, 3, 2), (1, 2, 2), (1, 1, 0)),
                                  ((10, 4), (2, 2), (3, 1), (1, 0))])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cl", [False, True])
def test_pool_row_groups_interp(rows, case, mode, cl, rng):
    """Row groups of every size (also ones that do not divide the output)."""
    pk = kernels()
    spatial, k, s, p = case
    x = layout(torch.from_numpy(rng.standard_normal((2, 3) + spatial) - 2.0).float(), cl)
    out = tuple(out_length(L, ki, si, pi, True) for L, ki, si, pi in zip(spatial, k, s, p))
    pk.CONFIG_OVERRIDE.update(fwd_rows=rows, bwd_rows=rows)
    try:
        y = poisoned(lambda: pk.pool_forward(x, k, s, p, out, mode))
        gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
        gx = kernel_grad(x, gy, k, s, p, mode)
    finally:
        pk.CONFIG_OVERRIDE.clear()
    assert rel_err(y.numpy(), ref_pool(x.numpy(), k, s, p, mode)) < 1e-6
    assert rel_err(gx.numpy(), ref_pool_grad(x.numpy(), gy.numpy(), k, s, p, mode)) < 1e-6


@cpu_interp
@pytest.mark.parametrize("spatial,k,s", [((7, 8), (3, 3), (2, 2)), ((5, 7), (2, 2), (2, 2)),
                                         ((6, 9), (3, 2), (1, 3)), ((2, 3), (3, 3), (2, 2))])
@pytest.mark.parametrize("mode", MODES)
def test_pool_ignore_border_false_interp(spatial, k, s, mode, rng):
    pk = kernels()
    x = torch.from_numpy(rng.standard_normal((2, 2) + spatial) - 1.0).float()
    out = tuple(out_length(L, ki, si, 0, False) for L, ki, si in zip(spatial, k, s))
    y = poisoned(lambda: pk.pool_forward(x, k, s, (0, 0), out, mode))
    ref = ref_pool(x.numpy(), k, s, (0, 0), mode, ignore_border=False)
    assert rel_err(y.numpy(), ref) < 1e-6
    gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
    gx = kernel_grad(x, gy, k, s, (0, 0), mode)
    gref = ref_pool_grad(x.numpy(), gy.numpy(), k, s, (0, 0), mode, ignore_border=False)
    assert rel_err(gx.numpy(), gref) < 1e-6


@cpu_interp
@pytest.mark.parametrize("cl", [False, True])
def test_pool_max_ties_and_infinities_interp(cl, rng):
    """Ties go to the first element in row-major window order; windows of
    -inf still pick a real element; padding never wins."""
    pk = kernels()
    x = torch.from_numpy(rng.integers(-2, 1, size=(2, 3, 7, 7)).astype(np.float32))
    x[0, 0] = float("-inf")
    x = layout(x, cl)
    k, s, p = (3, 3), (1, 1), (2, 2)
    out = tuple(out_length(7, 3, 1, 2, True) for _ in range(2))
    y = pk.pool_forward(x, k, s, p, out, "max")
    np.testing.assert_array_equal(y.numpy(), ref_pool(x.numpy(), k, s, p, "max"))
    gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
    gx = kernel_grad(x, gy, k, s, p, "max")
    gref = ref_pool_grad(x.numpy(), gy.numpy(), k, s, p, "max")
    np.testing.assert_allclose(gx.numpy(), gref, rtol=1e-5, atol=1e-5)


@cpu_interp
def test_pool_strided_input_interp(rng):
    """A non-contiguous input (a slice) and an expanded grad_out."""
    pk = kernels()
    base = torch.from_numpy(rng.standard_normal((2, 6, 9, 10))).float()
    x = base[:, 1:5, 1:, ::2]
    k, s, p = (3, 2), (2, 1), (1, 1)
    out = tuple(out_length(L, ki, si, pi, True) for L, ki, si, pi in zip(x.shape[2:], k, s, p))
    for mode in MODES:
        y = pk.pool_forward(x, k, s, p, out, mode)
        assert rel_err(y.numpy(), ref_pool(x.numpy(), k, s, p, mode)) < 1e-6
        gy = torch.ones(()).expand(y.shape)
        gx = kernel_grad(x, gy, k, s, p, mode)
        gref = ref_pool_grad(x.numpy(), np.ones(y.shape), k, s, p, mode)
        assert rel_err(gx.numpy(), gref) < 1e-6


SPP_SIZES = [(1, 1), (2, 3), (3, 7), (6, 11), (7, 5), (13, 13), (10, 4), (5, 2)]


@cpu_interp
@pytest.mark.parametrize("hw", SPP_SIZES)
@pytest.mark.parametrize("implementation", ["fast", "kaiming"])
@pytest.mark.parametrize("mode", ["max", "average_exc_pad"])
@pytest.mark.parametrize("cl", [False, True])
def test_spp_interp(hw, implementation, mode, cl, rng):
    sk = spp_kernels()
    dims = (4, 2, 1) if hw[0] * hw[1] % 2 else (6, 3, 2, 1)
    x = torch.from_numpy(rng.standard_normal((2, 5) + hw) - 2.0).float()
    x = layout(x, cl)
    y = poisoned(lambda: sk.spp_forward(x, dims, mode, implementation))
    ref = ref_spp(x.numpy(), dims, mode, implementation)
    assert rel_err(y.numpy(), ref) < 1e-6
    gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
    gx = spp_kernel_grad(x, gy, dims, mode, implementation)
    assert gx.stride(1) == x.stride(1) or hw == (1, 1)
    gref = ref_spp_grad(x.numpy(), gy.numpy(), dims, mode, implementation)
    assert rel_err(gx.numpy(), gref) < 1e-6


@cpu_interp
@pytest.mark.parametrize("n,L", [(4, L) for L in (1, 2, 3, 6, 7, 11, 10)] + [(3, L) for L in (1, 2, 5)])
def test_spp_fast_fallback_interp(n, L, rng):
    """Sizes where the fast bins do not give n bins fall back to kaiming on
    that axis (and n=4, L=10 where fast and kaiming bins differ)."""
    sk = spp_kernels()
    x = torch.from_numpy(rng.standard_normal((1, 3, L, L + 1)) - 1.0).float()
    for mode in ("max", "average_inc_pad"):
        y = sk.spp_forward(x, (n, 1), mode, "fast")
        assert rel_err(y.numpy(), ref_spp(x.numpy(), (n, 1), mode, "fast")) < 1e-6
        gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
        gx = spp_kernel_grad(x, gy, (n, 1), mode, "fast")
        gref = ref_spp_grad(x.numpy(), gy.numpy(), (n, 1), mode, "fast")
        assert rel_err(gx.numpy(), gref) < 1e-6


@cpu_interp
def test_spp_ties_interp(rng):
    sk = spp_kernels()
    x = torch.from_numpy(rng.integers(-1, 1, size=(2, 3, 7, 6)).astype(np.float32))
    x[1, 1] = float("-inf")
    y = sk.spp_forward(x, (4, 2, 1), "max", "kaiming")
    np.testing.assert_array_equal(y.numpy(), ref_spp(x.numpy(), (4, 2, 1), "max", "kaiming"))
    gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
    gx = spp_kernel_grad(x, gy, (4, 2, 1), "max", "kaiming")
    gref = ref_spp_grad(x.numpy(), gy.numpy(), (4, 2, 1), "max", "kaiming")
    np.testing.assert_allclose(gx.numpy(), gref, rtol=1e-5, atol=1e-5)


@cpu_interp
@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("mode", ["max", "average_exc_pad"])
def test_spp_many_chunks_interp(cl, mode, rng):
    """Planes swept in many small chunks (along h and w, several programs):
    the accumulators carry across chunks, and a tie between chunks goes to
    the element first in row-major order, even when a later chunk along w
    holds an earlier row."""
    sk = spp_kernels()
    x = layout(torch.from_numpy(rng.integers(-1, 1, size=(3, 5, 11, 13)).astype(np.float32)), cl)
    dims = (4, 3, 1)
    sk.CONFIG_OVERRIDE.update(tile=32, wmax=4, cl_block_p=2)
    try:
        assert sk._fwd_chunk(11, 13, 5, cl)[1:] != (16, 16)
        y = poisoned(lambda: sk.spp_forward(x, dims, mode, "kaiming"))
        gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
        gx = spp_kernel_grad(x, gy, dims, mode, "kaiming")
    finally:
        sk.CONFIG_OVERRIDE.clear()
    np.testing.assert_allclose(y.numpy(), ref_spp(x.numpy(), dims, mode, "kaiming"), rtol=1e-6)
    gref = ref_spp_grad(x.numpy(), gy.numpy(), dims, mode, "kaiming")
    np.testing.assert_allclose(gx.numpy(), gref, rtol=1e-5, atol=1e-5)


@cpu_interp
@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("channels", [4, 6])
def test_spp_max_backward_plane_blocks_interp(cl, channels, rng):
    """Max backward with planes per program dividing the channel count
    (each program one aligned channel run of one sample) and not (runs
    crossing samples), over several programs."""
    sk = spp_kernels()
    x = layout(torch.from_numpy(rng.standard_normal((3, channels, 7, 6))).float(), cl)
    sk.CONFIG_OVERRIDE.update(bwd_block_p=4)
    try:
        y = sk.spp_forward(x, (3, 1), "max", "fast")
        gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
        gx = spp_kernel_grad(x, gy, (3, 1), "max", "fast")
    finally:
        sk.CONFIG_OVERRIDE.clear()
    gref = ref_spp_grad(x.numpy(), gy.numpy(), (3, 1), "max", "fast")
    np.testing.assert_allclose(gx.numpy(), gref, rtol=1e-6, atol=1e-6)


# --- the custom ops (CPU reference path; and the kernels through the interpreter) -------------

def pool_cuda():
    from lasagne.ops import pool_cuda as pc
    return pc


def spp_cuda():
    from lasagne.ops import spp_cuda as sc
    return sc


@pytest.fixture
def route_interpreter():
    """Send CPU tensors through the Triton kernels (interpreter) inside the ops."""
    pc, sc = pool_cuda(), spp_cuda()
    old = pc.ROUTE_CPU_THROUGH_INTERPRETER, sc.ROUTE_CPU_THROUGH_INTERPRETER
    pc.ROUTE_CPU_THROUGH_INTERPRETER = sc.ROUTE_CPU_THROUGH_INTERPRETER = True
    try:
        yield
    finally:
        pc.ROUTE_CPU_THROUGH_INTERPRETER, sc.ROUTE_CPU_THROUGH_INTERPRETER = old


@cpu_interp
def test_ops_through_interpreter_opcheck(route_interpreter, rng):
    pc, sc = pool_cuda(), spp_cuda()
    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 7))).float().requires_grad_()
    torch.library.opcheck(torch.ops.lasagne.pool.default, (x, [3, 3], [2, 2], [2, 1], "max", True))
    torch.library.opcheck(torch.ops.lasagne.pool.default,
                          (x, [2, 3], [2, 2], [0, 0], "average_inc_pad", False))
    torch.library.opcheck(torch.ops.lasagne.spp.default, (x, [3, 1], "max", "fast"))
    y = pc.pool(x, (3, 3), (1, 1), (2, 2), "average_exc_pad")
    y.backward(torch.ones_like(y))
    gref = ref_pool_grad(x.detach().numpy(), np.ones(y.shape), (3, 3), (1, 1), (2, 2),
                         "average_exc_pad")
    assert rel_err(x.grad.numpy(), gref) < 1e-6
    x.grad = None
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    for xx in (x, xc):
        torch.library.opcheck(torch.ops.lasagne.max_pool_codes.default,
                              (xx, [3, 3], [2, 2], [1, 1], True))
        y, codes = torch.ops.lasagne.max_pool_codes(xx, [3, 2], [2, 2], [1, 0], False)
        gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
        torch.library.opcheck(torch.ops.lasagne.max_pool_codes_backward.default,
                              (gy, codes, list(xx.shape), xx is xc, [3, 2], [2, 2], [1, 0]))
        # the training path of pool(): codes kept instead of the input
        y = pc.pool(xx, (3, 2), (2, 2), (1, 0), "max", False)
        assert "MaxPoolCodes" in type(y.grad_fn).__name__
        (g,) = torch.autograd.grad(y, xx, gy)
        gref = ref_pool_grad(x.detach().numpy(), gy.numpy(), (3, 2), (2, 2), (1, 0), "max", False)
        assert rel_err(g.numpy(), gref) < 1e-6
        assert pc._is_channels_last(g) == (xx is xc)
        y = pc.pool(xx, (3, 2), (2, 2), (1, 0), "max", False)
        (g,) = torch.autograd.grad(y, xx, gy, create_graph=True)
        with pytest.raises(RuntimeError, match="not differentiable|does not require"):
            g.sum().backward()
    with torch.no_grad():   # no backward: the plain forward, no codes
        assert pc.pool(x, (3, 3), (2, 2), (1, 1), "max").grad_fn is None
    for xx in (x, xc):   # the same for max pyramid pooling
        torch.library.opcheck(torch.ops.lasagne.spp_max_codes.default, (xx, [3, 2, 1], "fast"))
        y, codes = torch.ops.lasagne.spp_max_codes(xx, [3, 2, 1], "kaiming")
        gy = torch.from_numpy(rng.standard_normal(y.shape)).float()
        torch.library.opcheck(torch.ops.lasagne.spp_max_codes_backward.default,
                              (gy, codes, list(xx.shape), xx is xc, [3, 2, 1]))
        y = sc.spatial_pyramid_pool(xx, (3, 2, 1), "max", "kaiming")
        assert "SppMaxCodes" in type(y.grad_fn).__name__
        (g,) = torch.autograd.grad(y, xx, gy)
        gref = ref_spp_grad(x.detach().numpy(), gy.numpy(), (3, 2, 1), "max", "kaiming")
        assert rel_err(g.numpy(), gref) < 1e-6
    y = sc.spatial_pyramid_pool(x, (2, 1), "max", "kaiming")
    y.backward(torch.ones_like(y))
    gref = ref_spp_grad(x.detach().numpy(), np.ones(y.shape), (2, 1), "max", "kaiming")
    assert rel_err(x.grad.numpy(), gref) < 1e-6


def test_ops_reference_path_cpu(rng):
    """The ops' CPU path (plain tensor operations) against the loop references,
    gradcheck, opcheck and torch.compile(fullgraph=True) tracing."""
    pc, sc = pool_cuda(), spp_cuda()
    x = torch.from_numpy(rng.standard_normal((2, 3, 7, 6))).requires_grad_()
    for mode in MODES:
        for k, s, p, ib in [((3, 3), (2, 2), (2, 1), True), ((3, 2), (2, 3), (0, 0), False)]:
            y = pc.pool(x, k, s, p, mode, ib)
            assert rel_err(y.detach().numpy(), ref_pool(x.detach().numpy(), k, s, p, mode, ib)) < 1e-12
            assert torch.autograd.gradcheck(lambda t: pc.pool(t, k, s, p, mode, ib), (x,))
        for impl in ("fast", "kaiming"):
            y = sc.spatial_pyramid_pool(x, (4, 2, 1), mode, impl)
            assert rel_err(y.detach().numpy(), ref_spp(x.detach().numpy(), (4, 2, 1), mode, impl)) < 1e-12
            assert torch.autograd.gradcheck(
                lambda t: sc.spatial_pyramid_pool(t, (4, 2, 1), mode, impl), (x,))
    xf = x.detach().float().contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.lasagne.pool.default, (xf, [3, 3], [2, 2], [2, 2], "max", True))
    torch.library.opcheck(torch.ops.lasagne.spp.default, (xf, [4, 2, 1], "max", "fast"))

    def f(t):
        a = pc.pool(t, (3, 3), (2, 2), (1, 1), "max")
        return a.sum() + sc.spatial_pyramid_pool(t, (2, 1), "average_exc_pad", "fast").sum()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    g1 = torch.autograd.grad(compiled(xf), xf)[0]
    g2 = torch.autograd.grad(f(xf), xf)[0]
    assert torch.equal(g1, g2)


def test_pool_op_no_double_backward():
    pc = pool_cuda()
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    y = pc.pool(x, (2, 2), (2, 2), (0, 0), "max")
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(Exception, match="not differentiable|not supported|does not require"):
        g.sum().backward()


# --- GPU ----------------------------------------------------------------------------------------

GPU_POOL_CASES = POOL_CASES + [
    ((16, 15), (3, 3), (2, 2), (1, 1)),
    ((14, 13), (2, 2), (2, 2), (0, 0)),
    ((11, 12), (3, 3), (1, 1), (1, 1)),
    ((12, 10), (5, 5), (2, 3), (4, 3)),
    ((6, 9, 10), (3, 3, 3), (2, 2, 2), (1, 1, 1)),
    ((6, 9, 10), (2, 2, 2), (1, 2, 1), (1, 0, 1)),
    ((13,), (4,), (1,), (3,)),
]

TOL = {torch.float32: 2e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}


def to_np(t):
    return t.detach().float().cpu().numpy()


@gpu
@pytest.mark.parametrize("case,dtype", [(c, d) for c in GPU_POOL_CASES
                                        for d in (torch.float32, torch.bfloat16)]
                         + [(c, torch.float16) for c in GPU_POOL_CASES[:4]])
@pytest.mark.parametrize("cl", [False, True])
def test_pool_kernels_gpu(case, dtype, cl, rng):
    pc = pool_cuda()
    spatial, k, s, p = case
    for ib in (True, False):
        if not ib and any(p):
            continue
        x = torch.from_numpy(rng.standard_normal((3, 17) + spatial) - 1.0).to("cuda", dtype)
        x = layout(x, cl)
        assert pc.supported(x, k, s, p if ib else (0,) * len(k), "max", ib)
        pp = p if ib else (0,) * len(k)
        for mode in MODES:
            xr = x.detach().clone().requires_grad_()
            y = pc.pool(xr, k, s, pp, mode, ib)
            assert y.dtype == dtype and pc._is_channels_last(y) == pc._is_channels_last(x)
            ref = ref_pool(to_np(x), k, s, pp, mode, ib)
            if mode == "max":
                np.testing.assert_array_equal(to_np(y), ref)
            else:
                assert rel_err(to_np(y), ref) < TOL[dtype]
            gy = torch.from_numpy(rng.standard_normal(y.shape)).to("cuda", dtype)
            (gx,) = torch.autograd.grad(y, xr, gy)
            (gx2,) = torch.autograd.grad(pc.pool(xr, k, s, pp, mode, ib), xr, gy)
            assert torch.equal(gx, gx2), "backward is not bitwise reproducible"
            gref = ref_pool_grad(to_np(x), to_np(gy), k, s, pp, mode, ib)
            assert rel_err(to_np(gx), gref) < TOL[dtype] * 2


@gpu
@pytest.mark.parametrize("shape,k,s,p,mode", [
    ((64, 64, 112, 112), (3, 3), (2, 2), (1, 1), "max"),
    ((32, 256, 56, 56), (2, 2), (2, 2), (0, 0), "max"),
    ((32, 256, 56, 56), (3, 3), (1, 1), (1, 1), "average_exc_pad"),
    ((32, 256, 56, 56), (3, 3), (1, 1), (1, 1), "max"),
    ((4, 64, 16, 56, 56), (2, 2, 2), (2, 2, 2), (0, 0, 0), "max"),
    ((4, 32, 16, 28, 28), (3, 3, 3), (2, 2, 2), (1, 1, 1), "average_inc_pad"),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cl", [False, True])
def test_pool_kernels_vs_portable_gpu(shape, k, s, p, mode, dtype, cl):
    """Large shapes: the kernels against the portable path (PyTorch's own
    pooling kernels) on the same device."""
    P = pytest.importorskip("lasagne.ops.pool")
    pc = pool_cuda()
    x = layout(torch.randn(shape, device="cuda", dtype=dtype), cl).requires_grad_()
    kernels_saved = dict(getattr(P, "_KERNELS", {}))
    try:
        if hasattr(P, "register_kernel"):
            P.register_kernel("cuda", None)
        y_ref = P.pool(x, k, s, p, mode)
        gy = torch.randn_like(y_ref)
        (g_ref,) = torch.autograd.grad(y_ref, x, gy)
    finally:
        if hasattr(P, "_KERNELS"):
            P._KERNELS.update(kernels_saved)
    y = pc.pool(x, k, s, p, mode)
    (g,) = torch.autograd.grad(y, x, gy)
    if mode == "max":
        assert torch.equal(y, y_ref)
        assert rel_err(to_np(g), to_np(g_ref)) < 1e-6   # same argmax, no ties in random data
    else:
        assert rel_err(to_np(y), to_np(y_ref)) < TOL[dtype]
        assert rel_err(to_np(g), to_np(g_ref)) < TOL[dtype] * 2


@gpu
def test_pool_kernels_int64_offsets_gpu():
    """More than 2**31 elements: the 64-bit indexing variant."""
    pc = pool_cuda()
    x = torch.empty((1, 2, 32768, 32769), device="cuda", dtype=torch.bfloat16)
    x.normal_()
    y = pc.pool(x, (2, 2), (2, 2), (0, 0), "max")
    tail = x[:, :, -64:, -65:-1].float()   # the inputs of the last 32 x 32 outputs
    ref = ref_pool(tail.cpu().numpy(), (2, 2), (2, 2), (0, 0), "max")
    np.testing.assert_array_equal(to_np(y[:, :, -32:, -32:]), ref)
    del y, x
    torch.cuda.empty_cache()


@gpu
def test_pool_ops_opcheck_and_compile_gpu():
    pc = pool_cuda()
    x = torch.randn(4, 8, 15, 14, device="cuda")
    for xx in (x, x.contiguous(memory_format=torch.channels_last), x.bfloat16()):
        for args in [([3, 3], [2, 2], [1, 1], "max", True), ([3, 3], [1, 1], [2, 2], "average_exc_pad", True),
                     ([2, 3], [2, 2], [0, 0], "average_inc_pad", False)]:
            torch.library.opcheck(torch.ops.lasagne.pool.default,
                                  (xx.clone().requires_grad_(),) + args)

    def f(t):
        return pc.pool(torch.relu(t), (3, 3), (2, 2), (1, 1), "max").square().sum()
    xr = x.clone().requires_grad_()
    compiled = torch.compile(f, fullgraph=True)
    g1 = torch.autograd.grad(compiled(xr), xr)[0]
    g2 = torch.autograd.grad(f(xr), xr)[0]
    torch.testing.assert_close(g1, g2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert pc.pool(x, (2, 2), (2, 2), (0, 0), "max").dtype == torch.float32


GPU_SPP_CASES = [((64, 512, 13, 13), (4, 2, 1)), ((32, 512, 17, 23), (6, 3, 2, 1)),
                 ((4, 16, 7, 11), (4, 2, 1)), ((4, 16, 3, 2), (4, 3, 2, 1)),
                 ((2, 8, 1, 1), (4, 2, 1)), ((2, 8, 40, 33), (8, 4, 2, 1))]


@gpu
@pytest.mark.parametrize("shape,dims", GPU_SPP_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("implementation", ["fast", "kaiming"])
def test_spp_kernels_gpu(shape, dims, dtype, cl, implementation, rng):
    sc = spp_cuda()
    x = layout(torch.from_numpy(rng.standard_normal(shape) - 1.0).to("cuda", dtype), cl)
    assert sc.supported(x, dims, "max", implementation)
    small = shape[0] * shape[1] <= 256
    for mode in ("max", "average_exc_pad"):
        xr = x.detach().clone().requires_grad_()
        y = sc.spatial_pyramid_pool(xr, dims, mode, implementation)
        gy = torch.from_numpy(rng.standard_normal(y.shape)).to("cuda", dtype)
        (gx,) = torch.autograd.grad(y, xr, gy)
        (gx2,) = torch.autograd.grad(sc.spatial_pyramid_pool(xr, dims, mode, implementation), xr, gy)
        assert torch.equal(gx, gx2), "backward is not bitwise reproducible"
        if small:
            ref = ref_spp(to_np(x), dims, mode, implementation)
            gref = ref_spp_grad(to_np(x), to_np(gy), dims, mode, implementation)
        else:  # the ops' reference path in float64 on the GPU
            x64 = x.double()
            ref = to_np(sc.reference_spp(x64, dims, mode, implementation))
            gref = to_np(sc.reference_spp_backward(gy.double(), x64, dims, mode, implementation))
        if mode == "max":
            np.testing.assert_array_equal(to_np(y), ref)
        else:
            assert rel_err(to_np(y), ref) < TOL[dtype]
        assert rel_err(to_np(gx), gref) < TOL[dtype] * 2


@gpu
def test_spp_vs_portable_and_compile_gpu():
    S = pytest.importorskip("lasagne.ops.spp")
    sc = spp_cuda()
    x = torch.randn(8, 64, 17, 23, device="cuda")
    saved = dict(getattr(S, "_KERNELS", {}))
    try:
        if hasattr(S, "register_kernel"):
            S.register_kernel("cuda", None)
        for mode in ("max", "average_inc_pad"):
            for impl in ("fast", "kaiming"):
                ref = S.spatial_pyramid_pool(x, (6, 3, 2, 1), mode, impl)
                out = sc.spatial_pyramid_pool(x, (6, 3, 2, 1), mode, impl)
                torch.testing.assert_close(out, ref, rtol=2e-6, atol=2e-6)
    finally:
        if hasattr(S, "_KERNELS"):
            S._KERNELS.update(saved)
    for xx in (x, x.contiguous(memory_format=torch.channels_last), x.bfloat16()):
        for mode in ("max", "average_exc_pad"):
            torch.library.opcheck(torch.ops.lasagne.spp.default,
                                  (xx.clone().requires_grad_(), [4, 2, 1], mode, "fast"))

    def f(t):
        return sc.spatial_pyramid_pool(torch.relu(t), (4, 2, 1), "max", "fast").square().sum()
    xr = x.clone().requires_grad_()
    g1 = torch.autograd.grad(torch.compile(f, fullgraph=True)(xr), xr)[0]
    g2 = torch.autograd.grad(f(xr), xr)[0]
    torch.testing.assert_close(g1, g2)


@gpu
def test_dispatch_from_public_ops_gpu(monkeypatch):
    """Once switched on (lasagne.ops.use_triton_pooling), lasagne.ops.pool.pool
    / spatial_pyramid_pool (and so the layers) reach the kernels on CUDA,
    eagerly and under torch.compile(fullgraph=True); float64 and very large
    windows go to the portable path."""
    from lasagne.ops import pool as P, spp as S, use_triton_pooling
    from lasagne.ops.triton import pool_kernels as pk, spp_kernels as sk
    # registrations go to copies, which monkeypatch drops afterwards
    monkeypatch.setattr(P, "_KERNELS", dict(P._KERNELS))
    monkeypatch.setattr(S, "_KERNELS", dict(S._KERNELS))
    use_triton_pooling(True)
    calls = []
    real_pf, real_pb, real_sf = pk.pool_forward, pk.pool_backward, sk.spp_forward
    monkeypatch.setattr(pk, "pool_forward", lambda *a, **k: calls.append("pf") or real_pf(*a, **k))
    monkeypatch.setattr(pk, "pool_backward", lambda *a, **k: calls.append("pb") or real_pb(*a, **k))
    monkeypatch.setattr(sk, "spp_forward", lambda *a, **k: calls.append("sf") or real_sf(*a, **k))
    x = torch.randn(4, 16, 15, 13, device="cuda", requires_grad=True)
    y = P.pool(x, (3, 3), (2, 2), (1, 1), "max")
    y.sum().backward()
    S.spatial_pyramid_pool(x, (4, 2, 1), "max", "fast")
    assert calls == ["pf", "pb", "sf"]
    calls.clear()

    def f(t):
        a = P.pool(t, (3, 3), (1, 1), (2, 2), "average_exc_pad")
        return a.sum() + S.spatial_pyramid_pool(t, (4, 2, 1), "max", "fast").sum()
    g1 = torch.autograd.grad(torch.compile(f, fullgraph=True)(x), x)[0]
    assert "pf" in calls and "sf" in calls
    g2 = torch.autograd.grad(f(x), x)[0]
    torch.testing.assert_close(g1, g2)
    calls.clear()
    P.pool(x.double(), (3, 3), (2, 2), (1, 1), "max")
    P.pool(x, (9, 9), (1, 1), (0, 0), "max")
    assert calls == []
