"""The GEMM convolution algorithm on CUDA: implicit-GEMM Triton kernels
(:mod:`lasagne.ops.triton.conv_kernels`) registered as ``torch.library``
custom operators, so that autograd, ``torch.compile`` (``fullgraph=True``),
fake tensors and autocast all see one opaque, deterministic op.

Operators (namespace ``lasagne``)::

    conv_igemm(x, w, stride, padding, groups) -> y
    conv_igemm_dgrad(dy, w, x_shape, stride, padding, groups, channels_last) -> dx
    conv_igemm_wgrad(x, dy, w_shape, stride, padding, groups) -> dw

``conv_igemm`` is a cross-correlation (no flip) of a 4-D ``(N, C, H, W)`` or
5-D ``(N, C, D, H, W)`` input with ``(K, C/groups, *filter)`` weights,
symmetric zero padding, any stride; float32 (TF32 tensor cores when
``torch.backends.cudnn.allow_tf32`` is set, as for cuDNN convolutions),
float16 and bfloat16 with float32 accumulation. The output is channels-last
when the input is. Its backward runs the two gradient operators, which use
no atomics: gradients are bitwise identical from run to run. Under
``torch.autocast`` the op runs in the autocast dtype, like ``F.conv2d``.

The extra memory is bounded: the forward and data-gradient kernels use none
beyond their outputs (and a re-laid-out copy of the weights); the weight
gradient uses a float32 workspace of at most an eighth of its largest
operand (:func:`lasagne.ops.triton.conv_kernels.wgrad_workspace_cap`).

Importing this module needs only torch; Triton is imported on the first
call. The ops run on CUDA tensors, or on CPU tensors under Triton's
interpreter (``TRITON_INTERPRET=1``, for tests).
"""

import importlib.util
import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..utils import autocast_dtype

__all__ = ["conv_igemm", "supported", "unsupported_reason"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# decided once, at import (plain constants keep the checks traceable by torch.compile)
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def _kernels():
    from .triton import conv_kernels
    return conv_kernels


def unsupported_reason(x, w, stride=None, padding=None, groups=1):
    """Why the implicit-GEMM kernels cannot compute this convolution, or
    None if they can."""
    if not _HAS_TRITON:
        return "Triton is not installed"
    if not (x.is_cuda or (x.device.type == "cpu" and _INTERPRET)):
        return "the input is on {}; the implicit-GEMM kernels run on CUDA".format(x.device)
    if w.device != x.device:
        return "input and weights are on different devices"
    if x.dtype not in _DTYPES or w.dtype != x.dtype:
        return "dtypes {} / {} (supported: float32, float16, bfloat16, equal)".format(
            x.dtype, w.dtype)
    if x.ndim not in (4, 5) or w.ndim != x.ndim:
        return "only 2D and 3D convolutions"
    if stride is not None and (len(stride) != x.ndim - 2 or min(stride) < 1):
        return "stride {}".format(stride)
    if padding is not None and (len(padding) != x.ndim - 2 or min(padding) < 0):
        return "padding {}".format(padding)
    if groups < 1 or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        return "channels do not match groups"
    return None


def supported(x, w, stride=None, padding=None, groups=1):
    """True when :func:`conv_igemm` can run on these operands."""
    return unsupported_reason(x, w, stride, padding, groups) is None


def _is_channels_last(x):
    return x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous()


def _format(ndim, channels_last):
    if not channels_last:
        return torch.contiguous_format
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def _out_shape(x_shape, w_shape, stride, padding):
    return [x_shape[0], w_shape[0]] + [
        (i + 2 * p - k) // s + 1
        for i, k, s, p in zip(x_shape[2:], w_shape[2:], stride, padding)]


# --- the operators --------------------------------------------------------------------------------

@torch.library.custom_op("lasagne::conv_igemm", mutates_args=())
def _conv_igemm(x: Tensor, w: Tensor, stride: list[int], padding: list[int],
                groups: int) -> Tensor:
    return _kernels().conv_forward(x, w, list(stride), list(padding), groups)


@_conv_igemm.register_fake
def _conv_igemm_fake(x, w, stride, padding, groups):
    shape = _out_shape(x.shape, w.shape, stride, padding)
    return torch.empty(shape, dtype=x.dtype, device=x.device,
                       memory_format=_format(x.ndim, _is_channels_last(x)))


@torch.library.custom_op("lasagne::conv_igemm_dgrad", mutates_args=())
def _conv_igemm_dgrad(dy: Tensor, w: Tensor, x_shape: list[int], stride: list[int],
                      padding: list[int], groups: int, channels_last: bool) -> Tensor:
    return _kernels().conv_dgrad(dy, w, list(x_shape), list(stride), list(padding), groups,
                                 channels_last)


@_conv_igemm_dgrad.register_fake
def _conv_igemm_dgrad_fake(dy, w, x_shape, stride, padding, groups, channels_last):
    return torch.empty(list(x_shape), dtype=dy.dtype, device=dy.device,
                       memory_format=_format(len(x_shape), channels_last))


@torch.library.custom_op("lasagne::conv_igemm_wgrad", mutates_args=())
def _conv_igemm_wgrad(x: Tensor, dy: Tensor, w_shape: list[int], stride: list[int],
                      padding: list[int], groups: int) -> Tensor:
    return _kernels().conv_wgrad(x, dy, list(w_shape), list(stride), list(padding), groups)


@_conv_igemm_wgrad.register_fake
def _conv_igemm_wgrad_fake(x, dy, w_shape, stride, padding, groups):
    return torch.empty(list(w_shape), dtype=x.dtype, device=x.device)


def _setup_context(ctx, inputs, output):
    x, w, stride, padding, groups = inputs
    ctx.save_for_backward(x, w)
    ctx.conf = (list(stride), list(padding), groups)


def _grads(ctx, gy, dgrad, wgrad):
    """dx and dw (where needed) from ``dgrad`` and ``wgrad``: the ops, or in
    eager mode their implementations."""
    x, w = ctx.saved_tensors
    stride, padding, groups = ctx.conf
    dx = dw = None
    if ctx.needs_input_grad[0]:
        dx = dgrad(gy, w, list(x.shape), stride, padding, groups, _is_channels_last(x))
    if ctx.needs_input_grad[1]:
        dw = wgrad(x, gy, list(w.shape), stride, padding, groups)
    return dx, dw, None, None, None


def _backward(ctx, gy):
    return _grads(ctx, gy, torch.ops.lasagne.conv_igemm_dgrad,
                  torch.ops.lasagne.conv_igemm_wgrad)


_conv_igemm.register_autograd(_backward, setup_context=_setup_context)


class _ConvIgemmFunction(torch.autograd.Function):
    """Eager mode: the kernels without torch.library's Python layers (see
    :mod:`lasagne.ops.eager`)."""

    @staticmethod
    def forward(ctx, x, w, stride, padding, groups):
        ctx.save_for_backward(x, w)
        ctx.conf = (stride, padding, groups)
        return _kernels().conv_forward(x, w, stride, padding, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        kernels = _kernels()
        return _grads(ctx, gy, kernels.conv_dgrad, kernels.conv_wgrad)


# --- autocast: run in the autocast dtype, as PyTorch's convolutions do ----------------------------

_autocast_lib = torch.library.Library("lasagne", "IMPL")


def _autocast_cast(x, w, dtype):
    """``x`` and ``w`` in the autocast ``dtype`` (float64 stays, as with autocast)."""
    if x.dtype in _DTYPES:
        x = x.to(dtype)
    if w.dtype in _DTYPES:
        w = w.to(dtype)
    return x, w


def _register_autocast(device_type, key_name):
    key = getattr(torch._C.DispatchKey, key_name)
    op = torch.ops.lasagne.conv_igemm.default

    def autocast_kernel(keyset, x, w, stride, padding, groups):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            x, w = _autocast_cast(x, w, torch.get_autocast_dtype(device_type))
            return op(x, w, stride, padding, groups)

    _autocast_lib.impl("conv_igemm", autocast_kernel, key_name, with_keyset=True)


_register_autocast("cuda", "AutocastCUDA")
_register_autocast("cpu", "AutocastCPU")  # the interpreter path (tests)


def conv_igemm(x, w, stride, padding, groups=1):
    """Cross-correlation of ``x`` with ``w`` by the implicit-GEMM kernels.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` or ``(N, C, D, H, W)``, any memory layout
        (channels-last is the fast one), on CUDA.
    w : torch.Tensor
        ``(K, C // groups, *filter_size)``, same dtype and device; applied
        as given (no flip).
    stride, padding : sequence of int
        One per spatial axis; ``padding`` is symmetric zero padding.
    groups : int

    Returns
    -------
    torch.Tensor
        ``(N, K, *out)`` with ``out = (in + 2*pad - filter) // stride + 1``,
        channels-last when ``x`` is, differentiable (deterministic backward).

    Examples
    --------
    >>> y = conv_igemm(x, w, (1, 1), (1, 1))   # doctest: +SKIP
    """
    args = ([int(s) for s in stride], [int(p) for p in padding], int(groups))
    if torch.compiler.is_compiling():
        return torch.ops.lasagne.conv_igemm(x, w, *args)
    dtype = autocast_dtype(x.device.type)
    if dtype is not None:  # what the op's autocast registration does
        x, w = _autocast_cast(x, w, dtype)
    return _ConvIgemmFunction.apply(x, w, *args)
