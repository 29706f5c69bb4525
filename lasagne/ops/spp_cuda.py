"""The spatial pyramid pooling fast path: our Triton kernels as the
``lasagne::spp`` custom op.

``torch.ops.lasagne.spp(x, pool_dims, mode, implementation)`` computes
exactly :func:`lasagne.ops.spp.spatial_pyramid_pool` on a ``(N, C, H, W)``
input: ``(N, C, sum(n*n))``, levels in order, bins row-major; ``'fast'`` bins
where they give ``n`` bins on an axis, kaiming bins elsewhere; both average
modes are the bin mean.

* CUDA, float32 / float16 / bfloat16: one Triton kernel
  (:mod:`lasagne.ops.triton.spp_kernels`) reads each ``(n, c)`` plane once and
  writes all levels' bins (planar max: from a channels-last copy, faster);
  the backward is one kernel as well, writing each input gradient without
  atomics (bitwise reproducible). Max sends a bin's
  gradient to its first maximum in row-major order within the bin. When the
  gradient will be needed (grad mode on, input requiring grad), max runs as
  ``lasagne::spp_max_codes``: the forward also writes each bin's first
  maximum as an int32 flat index, and the backward reads those instead of
  the input (which it does not keep); ``lasagne::spp``'s own backward
  recomputes them. Bin edges are computed in the kernel from the shape (no
  tables, no host-device copy per call).
* Anything else (CPU, float64): :func:`reference_spp` /
  :func:`reference_spp_backward` in plain tensor operations.

Registered with ``torch.library`` (fake implementation, autograd) so
``torch.compile(fullgraph=True)`` traces it; no autocast rule (runs in the
input's dtype); the backward op is not differentiable.
"""

import importlib.util
from typing import List, Tuple

import torch
from torch.autograd.function import once_differentiable

from .eager import saved_input_function

__all__ = ["spatial_pyramid_pool", "supported", "unsupported_reason", "cuda_kernel",
           "reference_spp", "reference_spp_backward", "KERNEL_DTYPES"]

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Whether Triton is installed (looked up without importing it).
TRITON_FOUND = importlib.util.find_spec("triton") is not None
# Most bins the kernels keep in registers for the max backward.
MAX_BINS = 128


def _bins(L, n, implementation):
    if implementation == "fast":
        window, step = -(-L // n), L // n
        if step >= 1 and (L - window) // step + 1 == n:
            return [(i * step, i * step + window) for i in range(n)]
    return [((i * L) // n, -(-((i + 1) * L) // n)) for i in range(n)]


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def reference_spp(x, pool_dims, mode, implementation):
    """Spatial pyramid pooling in plain tensor operations (one reduction per bin)."""
    H, W = x.shape[2:]
    cols = []
    for n in pool_dims:
        for h0, h1 in _bins(H, n, implementation):
            for w0, w1 in _bins(W, n, implementation):
                win = x[:, :, h0:h1, w0:w1]
                if mode == "max":
                    cols.append(win.amax((2, 3)))
                else:
                    cols.append(win.to(_acc_dtype(x.dtype)).mean((2, 3)).to(x.dtype))
    return torch.stack(cols, 2).contiguous()


def _is_channels_last(x):
    return x.shape[1] > 1 and x.stride(1) == 1


def _empty_like_x(x, shape=None, channels_last=None):
    """Empty ``shape`` (default ``x``'s) like ``x``, channels-last if ``x``
    is (or as ``channels_last`` says)."""
    N, C, H, W = x.shape if shape is None else shape
    if _is_channels_last(x) if channels_last is None else channels_last:
        return x.new_empty((N, H, W, C)).permute(0, 3, 1, 2)
    return x.new_empty((N, C, H, W))


def reference_spp_backward(grad_out, x, pool_dims, mode, implementation):
    """Gradient of :func:`reference_spp`: each bin's gradient onto its first
    maximum (row-major within the bin), or spread over the bin; bins added in
    order (deterministic)."""
    H, W = x.shape[2:]
    acc = _acc_dtype(x.dtype)
    gx = torch.zeros(x.shape, dtype=acc, device=x.device)
    g = grad_out.to(acc)
    b = 0
    for n in pool_dims:
        for h0, h1 in _bins(H, n, implementation):
            for w0, w1 in _bins(W, n, implementation):
                gb = g[:, :, b]
                if mode == "max":
                    win = x[:, :, h0:h1, w0:w1].flatten(2)
                    first = win.argmax(2, keepdim=True)
                    onehot = torch.zeros(win.shape, dtype=acc, device=x.device)
                    onehot.scatter_(2, first, 1.0)
                    gx[:, :, h0:h1, w0:w1] += (onehot * gb[:, :, None]).view(
                        win.shape[:2] + (h1 - h0, w1 - w0))
                else:
                    gx[:, :, h0:h1, w0:w1] += (gb / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
                b += 1
    out = _empty_like_x(x)
    out.copy_(gx)
    return out


# --- which cases the kernels take --------------------------------------------------------------

def _geometry_reason(x, pool_dims):
    if x.ndim != 4:
        return "input of shape {} (expected 4D)".format(tuple(x.shape))
    bins = sum(n * n for n in pool_dims)
    if bins > MAX_BINS:
        return "{} bins (at most {})".format(bins, MAX_BINS)
    return None


def unsupported_reason(x, pool_dims, mode, implementation):
    """Why the Triton kernels do not take this case, or None if they do."""
    if not x.is_cuda:
        return "the input is on {}".format(x.device)
    if x.dtype not in KERNEL_DTYPES:
        return "dtype {} (the kernels take float32, float16, bfloat16)".format(x.dtype)
    reason = _geometry_reason(x, pool_dims)
    if reason is not None:
        return reason
    if not TRITON_FOUND:
        return "Triton is not installed"
    return None


def supported(x, pool_dims, mode, implementation):
    """True when the Triton kernels compute this case (plain checks on
    constants, so that ``torch.compile`` traces them;
    :func:`unsupported_reason` says why not)."""
    bins = 0
    for n in pool_dims:
        bins += n * n
    return (x.is_cuda and x.dtype in KERNEL_DTYPES and TRITON_FOUND and x.ndim == 4
            and bins <= MAX_BINS)


# Tests set this (with TRITON_INTERPRET=1) to send CPU tensors through the
# kernels under Triton's interpreter; the library itself never does.
ROUTE_CPU_THROUGH_INTERPRETER = False


def _use_kernels(x, pool_dims, mode, implementation):
    if x.is_cuda:
        return supported(x, pool_dims, mode, implementation)
    if not ROUTE_CPU_THROUGH_INTERPRETER:
        return False
    from .triton import interpreting
    return (interpreting() and x.dtype in KERNEL_DTYPES and x.ndim == 4
            and sum(n * n for n in pool_dims) <= MAX_BINS)


# --- the custom ops ------------------------------------------------------------------------------

def _spp_forward(x, pool_dims, mode, implementation):
    """The forward of ``lasagne::spp`` (kernel or reference)."""
    if _use_kernels(x, pool_dims, mode, implementation):
        from .triton import spp_kernels
        return spp_kernels.spp_forward(x, pool_dims, mode, implementation)
    return reference_spp(x, pool_dims, mode, implementation)


def _spp_backward(grad_out, x, pool_dims, mode, implementation):
    """The backward of ``lasagne::spp`` (kernel or reference)."""
    if _use_kernels(x, pool_dims, mode, implementation):
        from .triton import spp_kernels
        codes = None
        if mode == "max":
            _, codes = spp_kernels.spp_forward(x, pool_dims, mode, implementation, codes=True)
        return spp_kernels.spp_backward(grad_out, tuple(x.shape), _is_channels_last(x),
                                        pool_dims, mode, implementation, codes)
    return reference_spp_backward(grad_out, x, pool_dims, mode, implementation)


@torch.library.custom_op("lasagne::spp", mutates_args=())
def _spp_op(x: torch.Tensor, pool_dims: List[int], mode: str,
            implementation: str) -> torch.Tensor:
    return _spp_forward(x, pool_dims, mode, implementation)


@_spp_op.register_fake
def _(x, pool_dims, mode, implementation):
    return x.new_empty((x.shape[0], x.shape[1], sum(n * n for n in pool_dims)))


@torch.library.custom_op("lasagne::spp_backward", mutates_args=())
def _spp_backward_op(grad_out: torch.Tensor, x: torch.Tensor, pool_dims: List[int], mode: str,
                     implementation: str) -> torch.Tensor:
    return _spp_backward(grad_out, x, pool_dims, mode, implementation)


@_spp_backward_op.register_fake
def _(grad_out, x, pool_dims, mode, implementation):
    return _empty_like_x(x)


def _setup(ctx, inputs, output):
    x, pool_dims, mode, implementation = inputs
    ctx.save_for_backward(x)
    ctx.args = (list(pool_dims), mode, implementation)


def _grad(ctx, grad_out):
    (x,) = ctx.saved_tensors
    return torch.ops.lasagne.spp_backward(grad_out, x, *ctx.args), None, None, None


_spp_op.register_autograd(_grad, setup_context=_setup)


def _no_double_backward(ctx, grad):
    raise NotImplementedError(
        "the backward of Lasagne's spatial pyramid pooling kernels is not differentiable: "
        "double backward through them is not supported")


def _setup_bwd(ctx, inputs, output):
    pass


_spp_backward_op.register_autograd(_no_double_backward, setup_context=_setup_bwd)

# eager mode: the same functions without torch.library's Python layers (lasagne.ops.eager)
_SppFunction = saved_input_function("SppKernelFunction", _spp_forward, _spp_backward)


# --- max pyramid pooling whose backward will run: bin argmaxes instead of the input ------------

def _max_codes_forward(x, pool_dims, implementation):
    from .triton import spp_kernels
    return spp_kernels.spp_forward(x, pool_dims, "max", implementation, codes=True)


def _max_codes_backward(grad_out, codes, input_shape, channels_last, pool_dims):
    from .triton import spp_kernels
    return spp_kernels.spp_backward(grad_out, tuple(input_shape), bool(channels_last), pool_dims,
                                    "max", None, codes)


@torch.library.custom_op("lasagne::spp_max_codes", mutates_args=())
def _spp_max_codes_op(x: torch.Tensor, pool_dims: List[int],
                      implementation: str) -> Tuple[torch.Tensor, torch.Tensor]:
    return _max_codes_forward(x, pool_dims, implementation)


@_spp_max_codes_op.register_fake
def _(x, pool_dims, implementation):
    shape = (x.shape[0], x.shape[1], sum(n * n for n in pool_dims))
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int32)


@torch.library.custom_op("lasagne::spp_max_codes_backward", mutates_args=())
def _spp_max_codes_backward_op(grad_out: torch.Tensor, codes: torch.Tensor,
                               input_shape: List[int], channels_last: bool,
                               pool_dims: List[int]) -> torch.Tensor:
    return _max_codes_backward(grad_out, codes, input_shape, channels_last, pool_dims)


@_spp_max_codes_backward_op.register_fake
def _(grad_out, codes, input_shape, channels_last, pool_dims):
    return _empty_like_x(grad_out, tuple(input_shape), channels_last)


def _setup_codes(ctx, inputs, output):
    x, pool_dims, implementation = inputs
    ctx.save_for_backward(output[1])
    ctx.args = (list(x.shape), _is_channels_last(x), list(pool_dims))


def _grad_codes(ctx, grad_out, grad_codes):
    (codes,) = ctx.saved_tensors
    return torch.ops.lasagne.spp_max_codes_backward(grad_out, codes, *ctx.args), None, None


_spp_max_codes_op.register_autograd(_grad_codes, setup_context=_setup_codes)
_spp_max_codes_backward_op.register_autograd(_no_double_backward, setup_context=_setup_bwd)


class _SppMaxCodesFunction(torch.autograd.Function):
    """Eager-mode autograd of ``lasagne::spp_max_codes`` (see
    :mod:`lasagne.ops.eager`): keeps the bin argmaxes, not the input."""

    @staticmethod
    def forward(ctx, x, pool_dims, implementation):
        y, codes = _max_codes_forward(x, pool_dims, implementation)
        ctx.save_for_backward(codes)
        ctx.args = (tuple(x.shape), _is_channels_last(x), pool_dims)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (codes,) = ctx.saved_tensors
        return _max_codes_backward(grad_out, codes, *ctx.args), None, None


# --- public entry points -------------------------------------------------------------------------

def spatial_pyramid_pool(x, pool_dims, mode="max", implementation="fast"):
    """``lasagne::spp`` on validated arguments; see
    :func:`lasagne.ops.spp.spatial_pyramid_pool` for the semantics."""
    dims = [int(n) for n in pool_dims]
    if (mode == "max" and x.requires_grad and torch.is_grad_enabled()
            and _use_kernels(x, dims, mode, implementation)):
        if torch.compiler.is_compiling():
            return torch.ops.lasagne.spp_max_codes(x, dims, implementation)[0]
        return _SppMaxCodesFunction.apply(x, dims, implementation)
    if torch.compiler.is_compiling():
        return torch.ops.lasagne.spp(x, dims, mode, implementation)
    return _SppFunction.apply(x, dims, mode, implementation)


def cuda_kernel(x, pool_dims, mode, implementation):
    """Hook for :func:`lasagne.ops.spp.register_kernel`: the kernel's result,
    or None where it does not apply (the portable path then runs)."""
    if not supported(x, pool_dims, mode, implementation):
        return None
    return spatial_pyramid_pool(x, pool_dims, mode, implementation)


def measured_kernel(x, pool_dims, mode, implementation):
    """The default hook: the kernel for max pyramid pooling only.

    Measured on an H100 (bench/results/pool_kernels-NVIDIA_H100_80GB_HBM3-
    20261122-091232.json, forward+backward, 64x512x13x13 and 32x512x17x23):
    max 0.53-1.0 ms against 1.8-2.9 ms for the portable path; the average
    modes' portable path (one matrix product) took 0.14-0.39 ms against the
    kernel's 0.58-0.98 ms, so they keep it.
    """
    if mode != "max":
        return None
    return cuda_kernel(x, pool_dims, mode, implementation)
