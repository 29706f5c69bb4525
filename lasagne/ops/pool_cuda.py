"""The pooling fast path: our Triton kernels as the ``lasagne::pool`` custom op.

``torch.ops.lasagne.pool(x, pool_size, stride, pad, mode, ignore_border)``
computes exactly :func:`lasagne.ops.pool.pool` (Lasagne's semantics: any pad
below the pool size, ``average_inc_pad`` / ``average_exc_pad`` divisors,
``ignore_border=False`` partial windows) for 1D, 2D and 3D pooling.

* CUDA, float32 / float16 / bfloat16: the Triton kernels of
  :mod:`lasagne.ops.triton.pool_kernels` (Triton is imported on the first
  CUDA call, never on import). The backward writes every input gradient once
  (no atomics, bitwise reproducible). Max pooling sends a window's gradient
  to its first maximum in row-major window order (as PyTorch's max pooling
  does for distinct values and ties alike). When the gradient will be needed
  (grad mode on, input requiring grad), :func:`pool` runs max pooling as
  ``lasagne::max_pool_codes``: the forward also writes each window's
  first-max offset as one byte, and the backward reads those bytes instead of
  the input (which it does not keep). ``lasagne::pool``'s own backward
  recomputes them from the input.
* Anything else (CPU, float64): :func:`reference_pool` and
  :func:`reference_pool_backward`, the same function in plain tensor
  operations (deterministic too).

The op is registered with ``torch.library`` (fake implementation, autograd),
so ``torch.compile(fullgraph=True)`` traces through it. It has no autocast
rule: pooling runs in its input's dtype (averages accumulate in float32),
like PyTorch's pooling under autocast. The backward op itself is not
differentiable (no double backward).

:func:`cuda_kernel` is the hook :func:`lasagne.ops.pool.pool` calls on CUDA
tensors; it declines (returns None) what the kernels do not cover, and the
portable path runs.
"""

import importlib.util
from typing import List, Tuple

import torch
from torch.autograd.function import once_differentiable

from .eager import saved_input_function
from .lengths import pool_output_length

__all__ = ["pool", "supported", "unsupported_reason", "cuda_kernel", "reference_pool",
           "reference_pool_backward", "KERNEL_DTYPES"]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Whether Triton is installed (looked up without importing it).
TRITON_FOUND = importlib.util.find_spec("triton") is not None

# Largest window (elements) the kernels unroll; larger ones go to the portable path.
MAX_WINDOW = 64
# Smallest input (bytes) whose max pooling the default hook (measured_kernel)
# sends to the kernels: below it the host cost of the call outweighs the
# device time saved (see measured_kernel).
MIN_MAX_POOL_BYTES = 64 << 20
# Largest number of windows an input element belongs to (backward loop size).
MAX_WINDOWS_PER_INPUT = 32


def _is_channels_last(x):
    return x.shape[1] > 1 and x.stride(1) == 1


def _empty_out(x, shape, dtype=None, channels_last=None):
    """Empty ``shape`` like ``x`` (its dtype unless ``dtype``), channels-last
    if ``x`` is (or as ``channels_last`` says)."""
    if channels_last is None:
        channels_last = _is_channels_last(x)
    if channels_last:
        perm_shape = (shape[0],) + tuple(shape[2:]) + (shape[1],)
        return x.new_empty(perm_shape, dtype=dtype).movedim(-1, 1)
    return x.new_empty(shape, dtype=dtype)


def _out_size(x, pool_size, stride, pad, ignore_border):
    return tuple(pool_output_length(L, k, s, p, ignore_border)
                 for L, k, s, p in zip(x.shape[2:], pool_size, stride, pad))


# --- reference: plain tensor operations (any device, any float dtype) -----------------------

def _padded(x, pool_size, stride, pad, out, fill):
    """``x`` padded by ``pad`` on both sides of each axis, plus what a final
    partial window needs at the end; returns it and the per-axis end padding."""
    widths, ends = [], []
    for L, k, s, p, o in zip(x.shape[2:], pool_size, stride, pad, out):
        extra = max(0, (o - 1) * s + k - (L + 2 * p))
        ends.append(p + extra)
        widths.append((p, p + extra))
    flat = [w for pair in reversed(widths) for w in pair]
    if any(flat):
        x = torch.nn.functional.pad(x, flat, value=fill)
    return x, ends


def _windows(xp, pool_size, stride, out):
    """``(N, C, *out, prod(pool_size))``: every window, row-major inside."""
    nd = len(pool_size)
    w = xp
    for i, (k, s) in enumerate(zip(pool_size, stride)):
        w = w.unfold(2 + i, k, s)
    w = w[(slice(None), slice(None)) + tuple(slice(0, o) for o in out)]
    return w.reshape(w.shape[:2 + nd] + (-1,))


def _divisor(x, pool_size, stride, pad, out, mode):
    """The divisor of every window, ``(1, 1, *out)``, float64 (exact counts)."""
    div = torch.ones((1, 1) + tuple(out), dtype=torch.float64, device=x.device)
    for i, (L, k, s, p, o) in enumerate(zip(x.shape[2:], pool_size, stride, pad, out)):
        start = torch.arange(o, dtype=torch.float64, device=x.device) * s - p
        if mode == "average_inc_pad":
            n = torch.clamp(start + k, max=L + p) - start
        else:
            n = torch.clamp(start + k, max=L) - torch.clamp(start, min=0)
        shape = [1] * div.ndim
        shape[2 + i] = o
        div = div * n.view(shape)
    return div


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def reference_pool(x, pool_size, stride, pad, mode, ignore_border):
    """Pooling in plain tensor operations (the op's CPU / fallback path)."""
    out = _out_size(x, pool_size, stride, pad, ignore_border)
    fill = float("-inf") if mode == "max" else 0.0
    xp, _ = _padded(x, pool_size, stride, pad, out, fill)
    win = _windows(xp, pool_size, stride, out)
    if mode == "max":
        y = win.amax(-1)
    else:
        acc = _acc_dtype(x.dtype)
        y = win.to(acc).sum(-1) / _divisor(x, pool_size, stride, pad, out, mode).to(acc)
    result = _empty_out(x, (x.shape[0], x.shape[1]) + out)
    result.copy_(y)
    return result


def reference_pool_backward(grad_out, x, pool_size, stride, pad, mode, ignore_border):
    """Gradient of :func:`reference_pool`: the window gradients added onto
    the padded input, one window offset at a time (strided slices, no
    scatter: deterministic), then the padding cropped."""
    out = tuple(grad_out.shape[2:])
    acc = _acc_dtype(x.dtype)
    fill = float("-inf") if mode == "max" else 0.0
    xp, ends = _padded(x, pool_size, stride, pad, out, fill)
    g = grad_out.to(acc)
    if mode == "max":
        first = _windows(xp, pool_size, stride, out).argmax(-1)  # first maximum
    else:
        g = g / _divisor(x, pool_size, stride, pad, out, mode).to(acc)
    gxp = torch.zeros(xp.shape, dtype=acc, device=x.device)
    offsets = torch.cartesian_prod(*[torch.arange(k) for k in pool_size]).view(-1, len(pool_size))
    for t, offset in enumerate(offsets.tolist()):
        sl = (slice(None), slice(None)) + tuple(
            slice(o_, o_ + s * (n - 1) + 1, s) for o_, s, n in zip(offset, stride, out))
        if mode == "max":
            gxp[sl] += torch.where(first == t, g, torch.zeros((), dtype=acc, device=x.device))
        else:
            gxp[sl] += g
    crop = (slice(None), slice(None)) + tuple(
        slice(p, p + L) for p, L in zip(pad, x.shape[2:]))
    result = _empty_out(x, tuple(x.shape))
    result.copy_(gxp[crop])
    return result


# --- which cases the kernels take ------------------------------------------------------------

def _geometry_reason(x, pool_size, stride, mode):
    nd = len(pool_size)
    if nd not in (1, 2, 3) or x.ndim != nd + 2:
        return "input of shape {} for {}D pooling".format(tuple(x.shape), nd)
    window = 1
    for k in pool_size:
        window *= k
    if window > MAX_WINDOW:
        return "window of {} elements (at most {} are unrolled)".format(window, MAX_WINDOW)
    nw = 1
    for k, s in zip(pool_size, stride):
        nw *= -(-k // s)
    if nw > MAX_WINDOWS_PER_INPUT:
        return "each input in up to {} windows (at most {})".format(nw, MAX_WINDOWS_PER_INPUT)
    return None


def unsupported_reason(x, pool_size, stride, pad, mode, ignore_border):
    """Why the Triton kernels do not take this case, or None if they do."""
    if not x.is_cuda:
        return "the input is on {}".format(x.device)
    if x.dtype not in KERNEL_DTYPES:
        return "dtype {} (the kernels take float32, float16, bfloat16)".format(x.dtype)
    reason = _geometry_reason(x, pool_size, stride, mode)
    if reason is not None:
        return reason
    if not TRITON_FOUND:
        return "Triton is not installed"
    return None


def _geometry_ok(x, pool_size, stride, mode):
    nd = len(pool_size)
    if nd not in (1, 2, 3) or x.ndim != nd + 2:
        return False
    window, nw = 1, 1
    for k, s in zip(pool_size, stride):
        window *= k
        nw *= -(-k // s)
    return window <= MAX_WINDOW and nw <= MAX_WINDOWS_PER_INPUT


def supported(x, pool_size, stride, pad, mode, ignore_border):
    """True when the Triton kernels compute this case (plain checks on
    constants, so that ``torch.compile`` traces them;
    :func:`unsupported_reason` says why not)."""
    return (x.is_cuda and x.dtype in KERNEL_DTYPES and TRITON_FOUND
            and _geometry_ok(x, pool_size, stride, mode))


# Tests set this (with TRITON_INTERPRET=1) to send CPU tensors through the
# kernels under Triton's interpreter; the library itself never does.
ROUTE_CPU_THROUGH_INTERPRETER = False


def _use_kernels(x, pool_size, stride, pad, mode, ignore_border):
    if x.is_cuda:
        return supported(x, pool_size, stride, pad, mode, ignore_border)
    if not ROUTE_CPU_THROUGH_INTERPRETER:
        return False
    from .triton import interpreting
    return interpreting() and x.dtype in KERNEL_DTYPES and _geometry_ok(x, pool_size, stride, mode)


# --- the custom ops ----------------------------------------------------------------------------

def _pool_forward(x, pool_size, stride, pad, mode, ignore_border):
    """The forward of ``lasagne::pool`` (kernels or reference)."""
    if _use_kernels(x, pool_size, stride, pad, mode, ignore_border):
        from .triton import pool_kernels
        out = _out_size(x, pool_size, stride, pad, ignore_border)
        return pool_kernels.pool_forward(x, tuple(pool_size), tuple(stride), tuple(pad), out,
                                         mode)
    return reference_pool(x, pool_size, stride, pad, mode, ignore_border)


def _pool_backward(grad_out, x, pool_size, stride, pad, mode, ignore_border):
    """The backward of ``lasagne::pool`` (kernels or reference). Max on the
    kernels recomputes the first-max codes from ``x``."""
    if _use_kernels(x, pool_size, stride, pad, mode, ignore_border):
        from .triton import pool_kernels
        codes = None
        if mode == "max":
            _, codes = pool_kernels.pool_forward(x, tuple(pool_size), tuple(stride), tuple(pad),
                                                 tuple(grad_out.shape[2:]), mode, codes=True)
        return pool_kernels.pool_backward(grad_out, tuple(x.shape), _is_channels_last(x),
                                          tuple(pool_size), tuple(stride), tuple(pad), mode,
                                          codes)
    return reference_pool_backward(grad_out, x, pool_size, stride, pad, mode, ignore_border)


@torch.library.custom_op("lasagne::pool", mutates_args=())
def _pool_op(x: torch.Tensor, pool_size: List[int], stride: List[int], pad: List[int],
             mode: str, ignore_border: bool) -> torch.Tensor:
    return _pool_forward(x, pool_size, stride, pad, mode, ignore_border)


@_pool_op.register_fake
def _(x, pool_size, stride, pad, mode, ignore_border):
    out = _out_size(x, pool_size, stride, pad, ignore_border)
    return _empty_out(x, (x.shape[0], x.shape[1]) + out)


@torch.library.custom_op("lasagne::pool_backward", mutates_args=())
def _pool_backward_op(grad_out: torch.Tensor, x: torch.Tensor, pool_size: List[int],
                      stride: List[int], pad: List[int], mode: str,
                      ignore_border: bool) -> torch.Tensor:
    return _pool_backward(grad_out, x, pool_size, stride, pad, mode, ignore_border)


@_pool_backward_op.register_fake
def _(grad_out, x, pool_size, stride, pad, mode, ignore_border):
    return _empty_out(x, tuple(x.shape))


def _setup(ctx, inputs, output):
    x, pool_size, stride, pad, mode, ignore_border = inputs
    ctx.save_for_backward(x)
    ctx.args = (list(pool_size), list(stride), list(pad), mode, bool(ignore_border))


def _grad(ctx, grad_out):
    (x,) = ctx.saved_tensors
    gx = torch.ops.lasagne.pool_backward(grad_out, x, *ctx.args)
    return gx, None, None, None, None, None


_pool_op.register_autograd(_grad, setup_context=_setup)


def _no_double_backward(ctx, grad):
    raise NotImplementedError(
        "the backward of Lasagne's pooling kernels is not differentiable: double backward "
        "through them is not supported")


def _setup_bwd(ctx, inputs, output):
    pass


_pool_backward_op.register_autograd(_no_double_backward, setup_context=_setup_bwd)

# eager mode: the same functions without torch.library's Python layers (lasagne.ops.eager)
_PoolFunction = saved_input_function("PoolKernelFunction", _pool_forward, _pool_backward)


# --- max pooling whose backward will run: one byte per window instead of the input -------------

def _max_codes_forward(x, pool_size, stride, pad, ignore_border):
    """``(y, codes)``: the max pooling and every window's first-max offset."""
    from .triton import pool_kernels
    out = _out_size(x, pool_size, stride, pad, ignore_border)
    return pool_kernels.pool_forward(x, tuple(pool_size), tuple(stride), tuple(pad), out, "max",
                                     codes=True)


def _max_codes_backward(grad_out, codes, input_shape, channels_last, pool_size, stride, pad):
    from .triton import pool_kernels
    return pool_kernels.pool_backward(grad_out, tuple(input_shape), bool(channels_last),
                                      tuple(pool_size), tuple(stride), tuple(pad), "max", codes)


@torch.library.custom_op("lasagne::max_pool_codes", mutates_args=())
def _max_pool_codes_op(x: torch.Tensor, pool_size: List[int], stride: List[int],
                       pad: List[int], ignore_border: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    return _max_codes_forward(x, pool_size, stride, pad, ignore_border)


@_max_pool_codes_op.register_fake
def _(x, pool_size, stride, pad, ignore_border):
    shape = (x.shape[0], x.shape[1]) + _out_size(x, pool_size, stride, pad, ignore_border)
    return _empty_out(x, shape), _empty_out(x, shape, dtype=torch.uint8)


@torch.library.custom_op("lasagne::max_pool_codes_backward", mutates_args=())
def _max_pool_codes_backward_op(grad_out: torch.Tensor, codes: torch.Tensor,
                                input_shape: List[int], channels_last: bool,
                                pool_size: List[int], stride: List[int],
                                pad: List[int]) -> torch.Tensor:
    return _max_codes_backward(grad_out, codes, input_shape, channels_last, pool_size, stride,
                               pad)


@_max_pool_codes_backward_op.register_fake
def _(grad_out, codes, input_shape, channels_last, pool_size, stride, pad):
    return _empty_out(grad_out, tuple(input_shape), channels_last=channels_last)


def _setup_codes(ctx, inputs, output):
    x, pool_size, stride, pad, ignore_border = inputs
    ctx.save_for_backward(output[1])
    ctx.args = (list(x.shape), _is_channels_last(x), list(pool_size), list(stride), list(pad))


def _grad_codes(ctx, grad_out, grad_codes):
    (codes,) = ctx.saved_tensors
    gx = torch.ops.lasagne.max_pool_codes_backward(grad_out, codes, *ctx.args)
    return gx, None, None, None, None


_max_pool_codes_op.register_autograd(_grad_codes, setup_context=_setup_codes)
_max_pool_codes_backward_op.register_autograd(_no_double_backward, setup_context=_setup_bwd)


class _MaxPoolCodesFunction(torch.autograd.Function):
    """Eager-mode autograd of ``lasagne::max_pool_codes`` (see
    :mod:`lasagne.ops.eager`): keeps the codes, not the input."""

    @staticmethod
    def forward(ctx, x, pool_size, stride, pad, ignore_border):
        y, codes = _max_codes_forward(x, pool_size, stride, pad, ignore_border)
        ctx.save_for_backward(codes)
        ctx.args = (tuple(x.shape), _is_channels_last(x), pool_size, stride, pad)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (codes,) = ctx.saved_tensors
        return (_max_codes_backward(grad_out, codes, *ctx.args),) + (None,) * 4


# --- public entry points ---------------------------------------------------------------------

def pool(x, pool_size, stride, pad, mode, ignore_border=True):
    """``lasagne::pool`` on validated arguments (tuples of ints, one per
    pooled axis); see :func:`lasagne.ops.pool.pool` for the semantics."""
    if (mode == "max" and x.requires_grad and torch.is_grad_enabled()
            and _use_kernels(x, pool_size, stride, pad, mode, ignore_border)):
        args = (list(pool_size), list(stride), list(pad), bool(ignore_border))
        if torch.compiler.is_compiling():
            return torch.ops.lasagne.max_pool_codes(x, *args)[0]
        return _MaxPoolCodesFunction.apply(x, *args)
    args = (list(pool_size), list(stride), list(pad), mode, bool(ignore_border))
    if torch.compiler.is_compiling():
        return torch.ops.lasagne.pool(x, *args)
    return _PoolFunction.apply(x, *args)


def cuda_kernel(x, pool_size, stride, pad, mode, ignore_border):
    """Hook for :func:`lasagne.ops.pool.register_kernel`: the kernels' result,
    or None where they do not apply (the portable path then runs)."""
    if not supported(x, pool_size, stride, pad, mode, ignore_border):
        return None
    return pool(x, pool_size, stride, pad, mode, ignore_border)


def measured_kernel(x, pool_size, stride, pad, mode, ignore_border):
    """The default hook: the kernels for average pooling, and for max pooling
    of channels-last batches; PyTorch's kernels for planar max pooling.

    Measured on an H100, forward+backward against PyTorch's kernels
    (bench/results/pool_kernels-NVIDIA_H100_80GB_HBM3-20261122-120726.json):
    channels-last max pooling 1.09-2.67x faster in every case (2x2 s2, 3x3
    s2 p1, 3x3 s1 p1, 3x3 s2 p2, 2x2x2; float32 and bfloat16); planar max
    pooling 0.37-2.21x, slower for the common 2x2 s2 and large 3x3 s2
    cases; average pooling 3x3 s1 p1 4.2-4.8x faster in every dtype and
    layout (bench/results/pool_kernels-NVIDIA_H100_80GB_HBM3-20261122-091232.json).
    Under ``torch.compile`` max pooling stays PyTorch's operation, which
    Inductor fuses with its neighbours: with our op in its place the compiled
    VGG-16 training step at batch 128 went from 0.98-0.99x torchvision's
    time to 0.88x (bench/results/networks-2026-11-22-session4.json).
    Max pooling of inputs under ``MIN_MAX_POOL_BYTES`` stays PyTorch's too:
    a call through our kernels costs the host 0.70 ms per forward+backward
    against 0.16 ms for ``F.max_pool2d`` (two Triton launches, the autograd
    function; bench/results/max-pool-host-time-2026-11-22-session4.log),
    which made the host-bound eager VGG-16 step at batch 8 0.58x
    torchvision's; the device time saved grows with the input (0.7 ms on a
    411 MB float32 input).
    """
    if mode == "max" and (not _is_channels_last(x) or torch.compiler.is_compiling()
                          or x.numel() * x.element_size() < MIN_MAX_POOL_BYTES):
        return None
    return cuda_kernel(x, pool_size, stride, pad, mode, ignore_border)
