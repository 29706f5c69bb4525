"""Convolution: one entry point, :func:`conv_nd`, over 1 to 3 spatial axes,
with Lasagne's padding modes, filter flipping, groups and an explicit choice
of algorithm; and :func:`add_bias` for tied or untied biases.

Algorithms
----------
``'auto'``
    ``torch.nn.functional.conv{1,2,3}d``: PyTorch picks the kernel (cuDNN
    for most CUDA cases, oneDNN or its own kernels on the CPU).
``'cudnn'``
    On CUDA, cuDNN and nothing else: never a silent fallback to another
    kernel. A missing or disabled cuDNN is a ``RuntimeError``. With a tied
    bias the call is ``aten.convolution`` (one operator for convolution and
    bias, forward and backward) after PyTorch's own backend selection
    (``torch._C._select_conv_backend``) has confirmed that it runs cuDNN;
    where it would not (e.g. a depthwise convolution PyTorch sends to its
    own kernel), cuDNN is called directly (``torch.cudnn_convolution``) and
    the bias added after. On any other device the same function is computed
    by ``F.conv*d``. Inside ``torch.compile`` the call is expressed as
    ``aten.convolution`` (which the compiler understands and which PyTorch
    routes to cuDNN on CUDA).
``'gemm'``
    Explicit im2col + matrix product with a bounded workspace, on every
    device (:mod:`lasagne.ops.conv_gemm`): deterministic.

Mixed precision: under ``torch.autocast`` the input and weights are cast to
the autocast dtype before any algorithm runs, as autocast does for PyTorch's
convolutions, and a bias is added in the output's dtype, so no float32 copy
of an activation is made. A channels-last input gives a channels-last output.
"""

import torch
import torch.nn.functional as F

from ..utils import autocast_dtype
from .conv_gemm import conv_gemm
from .lengths import check_positive_lengths, resolve_conv_pad

__all__ = ["conv_nd", "convolve", "add_bias", "ALGORITHMS"]

ALGORITHMS = ("auto", "cudnn", "gemm")

_TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_AUTOCAST_ELIGIBLE = (torch.float32, torch.float16, torch.bfloat16)
# PyTorch's own convolution backend selection (a private API: without it,
# every cuDNN convolution takes the explicit path)
_CUDNN_BACKEND = getattr(getattr(torch._C, "_ConvBackend", None), "Cudnn", None)


def _autocast(input, W):
    """Cast ``input`` and ``W`` to the autocast dtype where autocast is on
    for their device (float64 stays, as with autocast)."""
    dtype = autocast_dtype(input.device.type)
    if dtype is None:
        return input, W
    if input.dtype != dtype and input.dtype in _AUTOCAST_ELIGIBLE:
        input = input.to(dtype)
    if W.dtype != dtype and W.dtype in _AUTOCAST_ELIGIBLE:
        W = W.to(dtype)
    return input, W


def _check(where, input, W, stride, pads, num_groups):
    """Shape checks on every call; the messages are formatted only on failure."""
    nd = W.ndim - 2
    if input.ndim != nd + 2:
        raise ValueError("{}: expected a {}D input (batch, channels, {} spatial axes), got "
                         "shape {}".format(where, nd + 2, nd, tuple(input.shape)))
    if input.shape[1] != W.shape[1] * num_groups:
        raise ValueError("{}: the input has {} channels, the weights W of shape {} with "
                         "num_groups={} expect {}".format(where, input.shape[1],
                                                          tuple(W.shape), num_groups,
                                                          W.shape[1] * num_groups))
    sizes, filters = input.shape[2:], W.shape[2:]
    for i in range(nd):
        if sizes[i] + 2 * pads[i] < filters[i]:
            out = [(s + 2 * p - k) // st + 1 if s + 2 * p - k >= 0 else s + 2 * p - k + 1
                   for s, p, k, st in zip(sizes, pads, filters, stride)]
            check_positive_lengths(where, out, "input spatial size {} with filter_size={}, "
                                   "pad={} is too small".format(tuple(sizes), tuple(filters),
                                                                tuple(pads)))


def _cudnn_flags():
    return (torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled(),
            torch.backends.cudnn.allow_tf32)


def _runs_cudnn(input, W, b, stride, pads, num_groups):
    """Whether ``aten.convolution`` on these arguments runs cuDNN (PyTorch's
    own backend selection, ~4 µs of host time)."""
    if _CUDNN_BACKEND is None:
        return False
    nd = len(pads)
    return torch._C._select_conv_backend(input, W, b, stride, pads, (1,) * nd, False,
                                         (0,) * nd, num_groups) == _CUDNN_BACKEND


def _conv_cudnn(where, input, W, b, stride, pads, num_groups):
    """cuDNN convolution plus the tied bias ``b`` (or None), in as few
    operators as PyTorch's own backend choice allows."""
    if not torch.backends.cudnn.is_available():
        raise RuntimeError("{}: algorithm 'cudnn' needs cuDNN, which this PyTorch build cannot "
                           "use (torch.backends.cudnn.is_available() is False); use "
                           "algorithm='auto' or 'gemm'".format(where))
    if not torch.backends.cudnn.enabled:
        raise RuntimeError("{}: algorithm 'cudnn' needs cuDNN, which is disabled "
                           "(torch.backends.cudnn.enabled is False)".format(where))
    if input.numel() == 0:  # nothing to compute; PyTorch handles the empty shapes
        return _TORCH_CONV[input.ndim - 2](input, W, b, stride, pads, 1, num_groups)
    if b is not None and _runs_cudnn(input, W, b, stride, pads, num_groups):
        nd = len(pads)
        return torch.convolution(input, W, b, stride, pads, (1,) * nd, False, (0,) * nd,
                                 num_groups)
    if input.ndim == 3:  # cuDNN has no 1D convolution: a height-1 2D one
        out = torch.cudnn_convolution(input.unsqueeze(2), W.unsqueeze(2), (0,) + pads,
                                      (1,) + stride, (1, 1), num_groups,
                                      *_cudnn_flags()).squeeze(2)
    else:
        out = torch.cudnn_convolution(input, W, pads, stride, (1,) * len(pads), num_groups,
                                      *_cudnn_flags())
    return out if b is None else add_bias(out, b)


def conv_nd(input, W, stride=1, pad=0, flip_filters=False, num_groups=1, algorithm="auto",
            workspace_bytes=None, b=None, where="conv_nd"):
    """Convolution or cross-correlation of a batch with a filter bank.

    Parameters
    ----------
    input : torch.Tensor
        ``(batch, channels, *spatial)``, 1 to 3 spatial axes.
    W : torch.Tensor
        ``(num_filters, channels // num_groups, *filter_size)``; used as
        stored (a flip, if asked for, is computed on a copy).
    stride : int or tuple of int (default: 1)
    pad : int, tuple of int, 'valid', 'full' or 'same' (default: 0)
        Symmetric zero padding, see
        :func:`lasagne.ops.lengths.resolve_conv_pad` ('same' with a stride
        pads ``filter_size // 2`` on both sides).
    flip_filters : bool (default: False)
        True for a true convolution (the kernel flipped on every spatial
        axis), False for a cross-correlation.
    num_groups : int (default: 1)
    algorithm : 'auto', 'cudnn' or 'gemm' (default: 'auto')
        See the module documentation.
    workspace_bytes : int, optional
        Workspace cap of the 'gemm' algorithm.
    b : torch.Tensor, optional
        A bias added to the result in its dtype: tied ``(num_filters,)``
        (computed inside the convolution operator where the algorithm
        allows) or untied ``(num_filters, *out)``.
    where : str
        How error messages name the caller (a layer passes its own name).

    Returns
    -------
    torch.Tensor
        ``(batch, num_filters, *out)`` with
        ``out = ceil((in + 2*pad - filter_size + 1) / stride)`` per axis.

    Examples
    --------
    >>> import torch
    >>> from lasagne.ops.conv import conv_nd
    >>> x, W = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    >>> conv_nd(x, W, stride=2, pad='same').shape
    torch.Size([2, 4, 4, 4])
    """
    nd = W.ndim - 2
    if isinstance(stride, int):
        stride = (stride,) * nd
    stride = tuple(stride)
    pads = resolve_conv_pad(pad, tuple(W.shape[2:]))
    if algorithm not in ALGORITHMS:
        raise ValueError("{}: algorithm must be one of {}, got {!r}".format(
            where, ALGORITHMS, algorithm))
    return convolve(input, W, stride, pads, flip_filters, num_groups, algorithm,
                    workspace_bytes, where, b)


def convolve(input, W, stride, pads, flip_filters, num_groups, algorithm, workspace_bytes=None,
             where="conv_nd", b=None):
    """:func:`conv_nd` on resolved arguments: ``stride`` and ``pads`` tuples of
    ints (one per spatial axis), ``algorithm`` one of :data:`ALGORITHMS`.

    What layers call on every forward (they resolve their arguments once, at
    construction); the input is still checked against ``W``.
    """
    compiling = torch.compiler.is_compiling()
    if not compiling:
        _check(where, input, W, stride, pads, num_groups)
    input, W = _autocast(input, W)
    if flip_filters:
        W = W.flip(tuple(range(2, W.ndim)))
    tied = None
    if b is not None and b.ndim == 1:
        tied, b = (b if b.dtype == input.dtype else b.to(input.dtype)), None
    if algorithm == "gemm":
        if input.dtype != W.dtype:
            raise TypeError("{}: the input ({}) and the weights W ({}) must have the same dtype"
                            .format(where, input.dtype, W.dtype))
        out = conv_gemm(input, W, stride, pads, num_groups, workspace_bytes)
        if tied is not None:
            out = add_bias(out, tied)
    elif algorithm == "cudnn" and input.is_cuda and not compiling:
        out = _conv_cudnn(where, input, W, tied, stride, pads, num_groups)
    else:
        out = _TORCH_CONV[W.ndim - 2](input, W, tied, stride, pads, 1, num_groups)
    return out if b is None else add_bias(out, b)


def add_bias(output, b):
    """Add a tied (``(F,)``, one per channel) or untied (``(F, *out)``, one
    per output position) bias to ``output`` ``(batch, F, *out)``, in the
    output's dtype."""
    if b.dtype != output.dtype:
        b = b.to(output.dtype)
    if b.ndim == 1:
        return output + b.view((-1,) + (1,) * (output.ndim - 2))
    return output + b
