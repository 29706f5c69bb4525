"""N-d pooling with Lasagne's semantics: modes ``'max'``,
``'average_inc_pad'`` and ``'average_exc_pad'``, any pad below the pool size,
and partial windows at the end (``ignore_border=False``).

The portable path is built from PyTorch's own pooling kernels:

* A pad up to half the pool size is passed to PyTorch. A larger one (which
  PyTorch refuses) is added explicitly first: ``-inf`` for max pooling, so
  that every output is a real input element (each window holds at least one,
  as every pad is below its pool size), zeros for averaging.
* Averages are then corrected to Lasagne's divisor where PyTorch's differs:
  the divisor of a window is a product of one count per axis, so the
  correction is an outer product of small per-axis vectors (one multiply).
* ``ignore_border=False`` is PyTorch's ``ceil_mode=True`` wherever the two
  agree on the output length; where they do not (an input shorter than the
  pool) the end is padded explicitly and the divisor corrected as above.
* PyTorch's 2D (and 1D) backward kernels gather, so they are deterministic.
  Its 3D backward kernels accumulate with atomics, which is harmless only
  where windows do not overlap (each input element then receives at most
  one addition). So 3D pooling uses PyTorch's 3D kernels on CUDA only for
  non-overlapping windows outside deterministic mode; otherwise it is
  computed as a 2D pooling over the two trailing axes followed by a pooling
  over the depth axis (max and both averages are separable), with 2D
  kernels. Every path thus has a deterministic backward.

A device kernel can take over through :func:`register_kernel`.
"""

import torch
import torch.nn.functional as F

from ..utils import int_types
from .lengths import pool_output_length

__all__ = ["POOL_MODES", "pool", "pool_resolved", "register_kernel", "pool_divisors"]

POOL_MODES = ("max", "average_inc_pad", "average_exc_pad")

# Device kernels: device type -> callable(input, pool_size, stride, pad, mode,
# ignore_border) returning the pooled tensor, or None to decline a case (the
# portable path then runs). See register_kernel.
_KERNELS = {}


def register_kernel(device_type, fn):
    """Route :func:`pool` on tensors of ``device_type`` (e.g. ``'cuda'``) to
    ``fn`` first.

    ``fn(input, pool_size, stride, pad, mode, ignore_border)`` receives
    validated arguments (tuples of ints, one per pooled axis) and returns the
    output, or ``None`` for a case it does not handle. Pass ``fn=None`` to
    remove a registration. The kernel must compute exactly the function
    documented in :func:`pool`, with a deterministic backward.
    """
    if fn is None:
        _KERNELS.pop(device_type, None)
    else:
        _KERNELS[device_type] = fn


def _as_ints(where, name, value, n, minimum):
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int_types) or v < minimum
                               for v in values):
        kind = "positive" if minimum > 0 else "non-negative"
        raise ValueError("{}: {} must be a {} int or a tuple of {} {} ints, got {!r}".format(
            where, name, kind, n, kind, value))
    return tuple(int(v) for v in values)


def check_pool_args(where, n, pool_size, stride, pad, ignore_border, mode):
    """Validate pooling arguments and normalise them to n-tuples.

    Returns
    -------
    (pool_size, stride, pad) : tuples of int

    Raises
    ------
    ValueError
        On a size that is not a positive int (pad: non-negative), a pad not
        below its pool size, a pad with ``ignore_border=False``, or an
        unknown mode. Messages start with ``where``.
    """
    pool_size = _as_ints(where, "pool_size", pool_size, n, 1)
    stride = pool_size if stride is None else _as_ints(where, "stride", stride, n, 1)
    pad = _as_ints(where, "pad", pad, n, 0)
    if any(p >= k for p, k in zip(pad, pool_size)):
        raise ValueError("{}: each pad must be smaller than the pool size on its axis (so that "
                         "every window holds an input element), got pad={} with pool_size={}"
                         .format(where, pad, pool_size))
    if not ignore_border and any(pad):
        raise ValueError("{}: pad must be 0 with ignore_border=False (partial windows at the "
                         "end replace padding), got pad={}".format(where, pad))
    if mode not in POOL_MODES:
        raise ValueError("{}: mode must be one of {}, got {!r}".format(where, POOL_MODES, mode))
    return pool_size, stride, pad


def pool(input, pool_size, stride=None, pad=0, mode="max", ignore_border=True, where="pool"):
    """Pool over the trailing ``n = len(pool_size)`` axes of an
    ``(n + 2)``-D tensor ``(batch, channels, *spatial)``.

    Window ``o`` on an axis of length ``L`` covers ``[o*stride - pad,
    o*stride - pad + pool_size)``; the output length is
    :func:`lasagne.ops.lengths.pool_output_length`.

    Parameters
    ----------
    input : torch.Tensor
        Floating point, any memory format PyTorch's pooling keeps
        (contiguous or channels-last).
    pool_size : int or tuple of int
        Window size per axis; an int for every axis (then ``n`` is taken from
        ``input.ndim - 2``).
    stride : int, tuple of int or None (default: None)
        Step per axis; None means ``pool_size``.
    pad : int or tuple of int (default: 0)
        Symmetric padding per axis, each below its pool size.
    mode : 'max', 'average_inc_pad' or 'average_exc_pad' (default: 'max')
        ``'max'``: maximum over the window's real elements (padding never
        wins). ``'average_inc_pad'``: window sum over ``prod(pool_size)``
        (padding counts as zeros). ``'average_exc_pad'``: window sum over the
        number of real elements in the window.
    ignore_border : bool (default: True)
        False keeps a final partial window on each axis where the input does
        not end on a window boundary (only with ``pad == 0``); such a window
        is clipped to the input, and averages divide by its clipped size.
    where : str
        Prefix of error messages (layers pass their own name).

    Returns
    -------
    torch.Tensor
        Same dtype as ``input``.

    Raises
    ------
    ValueError
        For invalid arguments (see :func:`check_pool_args`), an input of the
        wrong dimensionality, or an output that would be empty.
    """
    if isinstance(pool_size, (tuple, list)):
        n = len(pool_size)
    else:
        n = input.ndim - 2
    if n not in (1, 2, 3) or input.ndim != n + 2:
        raise ValueError("{}: expected a {} input (batch, channels, spatial axes) for {}D "
                         "pooling, got shape {}".format(
                             where, "{}D".format(n + 2) if n in (1, 2, 3) else "3D, 4D or 5D",
                             n, tuple(input.shape)))
    pool_size, stride, pad = check_pool_args(where, n, pool_size, stride, pad, ignore_border, mode)
    return pool_resolved(input, pool_size, stride, pad, mode, bool(ignore_border), where)


def pool_resolved(input, pool_size, stride, pad, mode, ignore_border, where="pool"):
    """:func:`pool` on arguments :func:`check_pool_args` has returned (and a
    valid ``mode``, a bool ``ignore_border``): what layers call on every
    forward. The input is still checked against them."""
    if input.ndim != len(pool_size) + 2:
        raise ValueError("{}: expected a {}D input (batch, channels, spatial axes) for {}D "
                         "pooling, got shape {}".format(where, len(pool_size) + 2,
                                                        len(pool_size), tuple(input.shape)))
    lengths = input.shape[2:]
    for L, k, s, p in zip(lengths, pool_size, stride, pad):
        if pool_output_length(L, k, s, p, ignore_border) < 1:
            out = tuple(pool_output_length(L_, k_, s_, p_, ignore_border)
                        for L_, k_, s_, p_ in zip(lengths, pool_size, stride, pad))
            raise ValueError("{}: the output would be empty (spatial output size {}): input "
                             "size {} is too small for pool_size={} with pad={}".format(
                                 where, out, tuple(lengths), pool_size, pad))
    kernel = _KERNELS.get(input.device.type)
    if kernel is not None:
        result = kernel(input, pool_size, stride, pad, mode, ignore_border)
        if result is not None:
            return result
    if len(pool_size) == 3 and not _native_3d_is_deterministic(input, pool_size, stride):
        return _pool3d_separable(input, pool_size, stride, pad, mode, ignore_border)
    return _pool_native(input, pool_size, stride, pad, mode, ignore_border)


def _native_3d_is_deterministic(x, pool_size, stride):
    """Whether PyTorch's 3D pooling kernels can be used: on CUDA with
    non-overlapping windows (their atomic backward then adds once per input
    element), and not in deterministic mode (where they refuse to run)."""
    return (x.is_cuda and all(s >= k for s, k in zip(stride, pool_size))
            and not torch.are_deterministic_algorithms_enabled())


# --- arithmetic of windows and divisors -------------------------------------------

def _torch_length(length, k, s, p, ceil_mode):
    """The output length PyTorch's pooling computes (may be below 1)."""
    n = (length + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (n - 1) * s >= length + p:
        n -= 1
    return n


def _window_counts(out, k, s, start_offset, lo, hi):
    """Size of each window ``[o*s + start_offset, ... + k)`` clipped to
    ``[lo, hi)``, for ``o`` in ``range(out)``."""
    return [min(o * s + start_offset + k, hi) - max(o * s + start_offset, lo) for o in range(out)]


def pool_divisors(length, k, s, p, ignore_border, mode):
    """The divisor Lasagne's average pooling uses for each output position
    along one axis (the divisor of a window is the product over axes).

    ``'average_inc_pad'`` counts the window clipped to the padded input
    ``[-p, length + p)`` (always ``k`` with ``ignore_border=True``);
    ``'average_exc_pad'`` counts its real elements, ``[0, length)``.
    """
    out = pool_output_length(length, k, s, p, ignore_border)
    if mode == "average_inc_pad":
        return _window_counts(out, k, s, -p, -p, length + p)
    return _window_counts(out, k, s, -p, 0, length)


def _axis_plan(length, k, s, p, ignore_border, window_fits, native_pad_ok=True):
    """How one axis is computed: ``(native_pad, explicit_lo, explicit_hi)``.

    ``native_pad`` goes to PyTorch (which allows at most ``k // 2``),
    ``explicit_*`` is added with ``F.pad`` beforehand. ``window_fits``: the
    PyTorch kernel also needs the unpadded input to be at least one window
    long (its 3D kernels do). ``native_pad_ok=False`` pads explicitly
    whenever there is padding.
    """
    too_short = window_fits and length < k
    if ignore_border:
        if 2 * p <= k and not too_short and (native_pad_ok or p == 0):
            return p, 0, 0
        return 0, p, p
    out = pool_output_length(length, k, s, 0, False)
    if _torch_length(length, k, s, 0, True) == out and not too_short:
        return 0, 0, 0
    return 0, 0, (out - 1) * s + k - length


_POOL_FNS = {1: (F.max_pool1d, F.avg_pool1d), 2: (F.max_pool2d, F.avg_pool2d),
             3: (F.max_pool3d, F.avg_pool3d)}


def _pool_native(x, pool_size, stride, pad, mode, ignore_border):
    """Pooling over the trailing axes through PyTorch's kernels, with the
    explicit padding and divisor correction PyTorch needs for our semantics."""
    n = len(pool_size)
    if (mode == "max" and ignore_border and n < 3
            and all(2 * p <= k for p, k in zip(pad, pool_size))):
        # the common case, PyTorch's semantics exactly (what _axis_plan gives)
        return _POOL_FNS[n][0](x, pool_size, stride, pad)
    lengths = tuple(x.shape[2:])
    native_pad_ok = mode == "max" or not _cuda_channels_last(x)
    plans = [_axis_plan(L, k, s, p, ignore_border, window_fits=(n == 3),
                        native_pad_ok=native_pad_ok)
             for L, k, s, p in zip(lengths, pool_size, stride, pad)]
    native_pad = tuple(pl[0] for pl in plans)
    explicit = any(pl[1] or pl[2] for pl in plans)
    if explicit:
        # F.pad takes (last axis lo, hi, second-to-last lo, hi, ...)
        widths = [w for pl in reversed(plans) for w in (pl[1], pl[2])]
        fill = float("-inf") if mode == "max" else 0.0
        x = F.pad(x, widths, value=fill)
    max_fn, avg_fn = _POOL_FNS[n]
    ceil_mode = not ignore_border
    if mode == "max":
        return max_fn(x, pool_size, stride, native_pad, ceil_mode=ceil_mode)
    if not explicit:
        # PyTorch's own divisors are exactly ours here
        return _channels_last_grad(x, avg_fn(x, pool_size, stride, native_pad,
                                             ceil_mode=ceil_mode,
                                             count_include_pad=(mode == "average_inc_pad")))
    y = _channels_last_grad(x, avg_fn(x, pool_size, stride, native_pad, ceil_mode=ceil_mode,
                                      count_include_pad=True))
    # PyTorch divided by the window clipped to its padded input; rescale to ours
    factors = []
    for L, k, s, p, (npad, lo, hi) in zip(lengths, pool_size, stride, pad, plans):
        ours = pool_divisors(L, k, s, p, ignore_border, mode)
        theirs = _window_counts(len(ours), k, s, -p, -(lo + npad), L + hi + npad)
        factors.append(tuple(t / o for t, o in zip(theirs, ours)))
    if all(f == 1.0 for fs in factors for f in fs):
        return y
    return y * _outer_product(factors, y.dtype, y.device)


def _cuda_channels_last(x):
    """Whether ``x`` is a channels-last (and not also contiguous) CUDA batch."""
    return (x.is_cuda and x.ndim == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


# PyTorch 2.11's CUDA average pooling computes wrong input gradients for
# channels-last batches when it pads itself (measured on an H100: 70-100% of
# the gradient wrong, forward right), and when the gradient it receives has
# another layout. Channels-last average pooling therefore pads explicitly
# (``native_pad_ok`` in _pool_native) and receives a channels-last gradient.

def _channels_last_grad(x, y):
    """``y``, whose gradient reaches PyTorch's average pooling in
    channels-last layout when ``x`` is a channels-last CUDA batch."""
    if y.requires_grad and _cuda_channels_last(x):
        return _ChannelsLastGrad.apply(y)
    return y


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient channels-last."""

    @staticmethod
    def forward(ctx, y):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


def _outer_product(factors, dtype, device):
    """The tensor ``prod_a factors[a][o_a]`` of shape ``(1, 1, *out)``,
    cached per device (built once, no host-device copy afterwards)."""
    factors = tuple(factors)
    key = ("pool_scale", factors, dtype, device)

    def build():
        result = torch.ones((1, 1) + tuple(len(f) for f in factors), dtype=torch.float64)
        for axis, f in enumerate(factors):
            shape = [1] * result.ndim
            shape[2 + axis] = len(f)
            result = result * torch.tensor(f, dtype=torch.float64).view(shape)
        return result.to(dtype=dtype, device=device)
    return cached_constant(key, build)


# --- constants built from shapes ---------------------------------------------------

_CONSTANTS = {}
_CONSTANTS_LIMIT = 512


def cached_constant(key, build):
    """A tensor (or a tuple of them) that depends only on shapes and
    arguments, built once per key.

    ``build()`` makes it (on the CPU, then moved to the device: one
    host-to-device copy the first time a geometry is seen); later calls
    return the cached tensor, so a steady-state call does no transfer and no
    synchronisation. While ``torch.compile`` traces, or a CUDA graph is being
    captured, the cache is bypassed (the traced graph keeps its own
    constant); run a call eagerly before capturing a CUDA graph.
    """
    if torch.compiler.is_compiling():
        return build()
    value = _CONSTANTS.get(key)
    if value is None:
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return build()
        if len(_CONSTANTS) >= _CONSTANTS_LIMIT:
            _CONSTANTS.clear()
        value = _CONSTANTS[key] = build()
    return value


# --- 3D as two 2D poolings -----------------------------------------------------------

def _pool3d_separable(x, pool_size, stride, pad, mode, ignore_border):
    """3D pooling as a 2D pooling over (H, W) then one over D.

    Max is separable; so are both averages, since a window's divisor is a
    product of per-axis counts. Each stage runs through PyTorch's 2D
    kernels (deterministic gather-based backward) on views of ``x``
    (no copy for contiguous or channels_last_3d inputs).
    """
    (kd, kh, kw), (sd, sh, sw), (pd, ph, pw) = pool_size, stride, pad
    N, C, D, H, W = x.shape
    pool_hw = (kh, kw, sh, sw, ph, pw) != (1, 1, 1, 1, 0, 0)
    pool_d = (kd, sd, pd) != (1, 1, 0)
    if not (pool_hw or pool_d):
        return x.clone()  # a 1x1x1 window with stride 1: the identity, as a new tensor
    if pool_hw:
        if x.is_contiguous():
            y = _pool_native(x.flatten(1, 2), (kh, kw), (sh, sw), (ph, pw), mode, ignore_border)
            x = y.unflatten(1, (C, D))
        else:
            if not x.is_contiguous(memory_format=torch.channels_last_3d):
                x = x.contiguous(memory_format=torch.channels_last_3d)
            # (N, D, C, H, W) -> (N*D, C, H, W): a channels_last 2D view
            y = _pool_native(x.transpose(1, 2).flatten(0, 1), (kh, kw), (sh, sw), (ph, pw), mode,
                             ignore_border)
            x = y.unflatten(0, (N, D)).transpose(1, 2)
    if pool_d:
        Ho, Wo = x.shape[3:]
        # (N, C, D, Ho*Wo) is a view in both layouts; pool D with a (kd, 1) window
        y = _pool_native(x.flatten(3), (kd, 1), (sd, 1), (pd, 0), mode, ignore_border)
        x = y.unflatten(3, (Ho, Wo))
    return x


# --- CUDA fast path (lasagne.ops.pool_cuda) ---------------------------------------------
# Our Triton kernels (the lasagne::pool custom op) plug in through register_kernel; by
# default (lasagne.ops.use_triton_pooling('measured')) they take average pooling only,
# where they measured faster than PyTorch's kernels (bench/NOTES.md).
