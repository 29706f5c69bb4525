"""Batch normalization: training with batch statistics, inference with given
statistics, and the statistics alone.

The maths, over the normalized ``axes`` of ``x``::

    mean    = mean(x)                      (biased, per kept position)
    inv_std = 1 / sqrt(var(x) + epsilon)   (biased variance)
    y       = (x - mean) * (gamma * inv_std) + beta

``axes='auto'`` normalizes over every axis but 1 ("spatial" batch norm;
for a 2D input the same as per-activation), ``axes=0`` over the batch axis
only ("per-activation": one statistic per feature map position). Any other
set of axes works too. Statistics and parameters have the input's shape with
the normalized axes removed.

Backends of :func:`batch_norm_train`:

``'native'``
    ``torch.native_batch_norm``: one fused PyTorch kernel (any device) that
    returns the output and the batch statistics and saves only the input and
    the statistics for backward. Other axes sets reach it through a
    ``(A, K, B)`` view of the input (a copy only when the kept axes are not
    adjacent in memory).
``'cudnn'``
    ``torch.cudnn_batch_norm``, called explicitly (CUDA). Spatial mode passes
    the tensor as it is (NCHW or channels_last), per-activation mode a 2D
    ``(N, features)`` view, which cuDNN normalizes per activation. Its
    autograd saves the input, ``gamma``, the two per-channel statistics and
    cuDNN's reserve space: never a normalized copy. cuDNN takes float32,
    float16 (with float32 parameters) and float64; PyTorch's wrapper rejects
    bfloat16 input with float32 parameters (and PyTorch itself never sends
    bfloat16 batch norm to cuDNN), so bfloat16 is served by ``'triton'``.
``'triton'``
    Our Triton kernels (:mod:`lasagne.ops.batchnorm_triton`, CUDA): float32,
    float16 and bfloat16 input with float32 statistics, optionally fused
    with a rectifier (``activation='relu'``) forward and backward; saves the
    input and the statistics only, the backward recomputes the rest. They
    are the ``lasagne::batch_norm_act`` custom op (CPU: a reference
    implementation of the same maths), so ``torch.compile`` traces them.
``'dnn'``
    The policy of :class:`lasagne.layers.dnn.BatchNormDNNLayer`
    (:func:`dnn_backend`): on CUDA, the Triton kernels on planar batches
    with large planes, cuDNN for other float32/float16 spatial batch norm,
    ``'native'`` for the rest; on CPU ``'native'``.

Mixed precision: float16/bfloat16 inputs take float32 ``gamma``/``beta``,
compute in float32 and return float32 statistics; the output has the
input's dtype (as PyTorch's batch norm does under ``torch.autocast``).
Float64 inputs compute and return float64.
"""

import importlib.util
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

__all__ = ["spatial_axes", "normalize_axes", "param_shape", "batch_norm_train",
           "batch_norm_train_resolved",
           "batch_norm_infer", "batch_norm_stats", "cudnn_unavailable_reason",
           "triton_unavailable_reason", "BACKENDS"]

BACKENDS = ("native", "cudnn", "triton", "dnn")
ACTIVATIONS = (None, "relu")

# cuDNN's batch-norm kernels index with 32-bit integers and misbehave for very
# large batches in training (the limits PyTorch applies before using cuDNN);
# beyond them the 'cudnn' backend computes with 'native' instead.
_CUDNN_MAX_NUMEL = 2 ** 31 - 1
_CUDNN_MAX_BATCH_TRAIN = 880801

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# looked up once, without importing Triton (and so outside any compiled region)
_HAS_TRITON = importlib.util.find_spec("triton") is not None


# -- axes and shapes -------------------------------------------------------------------------

def spatial_axes(ndim):
    """The axes ``'auto'`` stands for: every axis but axis 1."""
    return (0,) + tuple(range(2, ndim))


def normalize_axes(axes, ndim):
    """Resolve ``axes`` to a sorted tuple of non-negative axes.

    Parameters
    ----------
    axes : 'auto', int or iterable of int
    ndim : int
        Number of dimensions of the input.

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        For an axis out of range, a repeated axis or an unknown string.
    TypeError
        For an axis that is not an int.
    """
    if isinstance(axes, str):
        if axes != "auto":
            raise ValueError("axes must be 'auto', an int or a tuple of ints, got {!r}".format(
                axes))
        return spatial_axes(ndim)
    items = (axes,) if not isinstance(axes, (tuple, list)) else tuple(axes)
    out = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, int) and not hasattr(a, "__index__"):
            raise TypeError("axes must be 'auto', an int or a tuple of ints, got {!r}".format(
                axes))
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError("axes={!r} is out of range for a {}D input".format(axes, ndim))
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError("axes={!r} names an axis twice".format(axes))
    return tuple(sorted(out))


def param_shape(shape, axes):
    """The shape of the statistics and parameters: ``shape`` without ``axes``."""
    return tuple(s for d, s in enumerate(shape) if d not in axes)


def _stat_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _broadcast_shape(x, axes):
    return [1 if d in axes else x.shape[d] for d in range(x.ndim)]


# -- the (A, K, B) view: kept axes as one block between normalized ones -------------------------

class _Blocked(object):
    """``x`` seen as a contiguous ``(A, K, B)`` tensor, with K the kept
    positions, A and B the normalized ones before and after them in memory.

    Made by permuting the axes into memory order, which is a view whenever
    the kept axes are adjacent in memory (NCHW and channels_last, spatial and
    per-activation); otherwise the input is copied once into that order.
    """

    def __init__(self, x, axes):
        ndim = x.ndim
        kept = [d for d in range(ndim) if d not in axes]
        self.kept = kept
        perm = self._memory_perm(x, axes, kept)
        if perm is None:
            perm = [d for d in range(ndim) if d in axes] + kept
            xp = x.permute(perm).contiguous()
            outer = [d for d in range(ndim) if d in axes]
            block, inner = kept, []
        else:
            perm, outer, block, inner = perm
            xp = x.permute(perm)
        self.perm = perm
        self.block = block
        self.permuted_shape = [x.shape[d] for d in perm]
        self.block_shape = [x.shape[d] for d in block]
        A = _prod(x.shape[d] for d in outer)
        K = _prod(self.block_shape)
        B = _prod(x.shape[d] for d in inner)
        self.x3 = xp.view(A, K, B)
        self.inverse = [perm.index(d) for d in range(ndim)]

    @staticmethod
    def _memory_perm(x, axes, kept):
        ndim = x.ndim
        big = [d for d in range(ndim) if x.shape[d] != 1]
        order = sorted(big, key=lambda d: -x.stride(d))
        pos = [i for i, d in enumerate(order) if d in kept]
        if pos:
            i0, i1 = pos[0], pos[-1]
            if i1 - i0 + 1 != len(pos):
                return None
        else:
            i0 = i1 = len(order)
        ones_kept = [d for d in kept if x.shape[d] == 1]
        ones_norm = [d for d in range(ndim) if d in axes and x.shape[d] == 1]
        outer = order[:i0]
        block = order[i0:i1 + 1] + ones_kept if pos else ones_kept
        inner = order[i1 + 1:] + ones_norm if pos else order[i0:] + ones_norm
        perm = outer + block + inner
        if not x.permute(perm).is_contiguous():
            return None
        return perm, outer, block, inner

    def restore(self, y3):
        """The ``(A, K, B)`` result back in the input's logical shape."""
        return y3.view(self.permuted_shape).permute(self.inverse)

    def flat_param(self, p):
        """A parameter of the kept axes' shape as the K-vector in block order."""
        if p is None:
            return None
        return p.permute([self.kept.index(d) for d in self.block]).reshape(-1)

    def unflat(self, v):
        """A K-vector in block order back in the kept axes' shape."""
        return v.view(self.block_shape).permute([self.block.index(d) for d in self.kept])


# -- availability --------------------------------------------------------------------------------

def cudnn_unavailable_reason(x=None):
    """Why cuDNN batch norm cannot run (on ``x``), or None if it can."""
    if x is not None and not x.is_cuda:
        return "the input is on {}, cuDNN runs on CUDA devices".format(x.device)
    if not torch.backends.cudnn.is_available():
        return "this PyTorch build has no cuDNN"
    if not torch.backends.cudnn.enabled:
        return "cuDNN is disabled (torch.backends.cudnn.enabled is False)"
    return None


def triton_unavailable_reason(x=None):
    """Why our Triton batch-norm kernels cannot run (on ``x``), or None."""
    if x is not None and not x.is_cuda:
        return "the input is on {}, the Triton kernels run on CUDA devices".format(x.device)
    if not _HAS_TRITON:
        return "Triton is not installed"
    return None


# -- training ----------------------------------------------------------------------------------

def batch_norm_train(x, gamma=None, beta=None, axes="auto", epsilon=1e-4, activation=None,
                     backend="native"):
    """Normalize ``x`` with its own batch statistics.

    Parameters
    ----------
    x : torch.Tensor
        The input, at least 1D.
    gamma, beta : torch.Tensor or None
        Scale and shift, of the statistics' shape; None fixes 1 and 0.
    axes : 'auto', int or tuple of int (default: 'auto')
        The axes to normalize over.
    epsilon : float (default: 1e-4)
        Added to the variance.
    activation : None or 'relu'
        A rectifier applied to the result (fused into the kernel by the
        ``'triton'`` backend).
    backend : 'native', 'cudnn', 'triton' or 'dnn' (default: 'native')
        See the module documentation.

    Returns
    -------
    y : torch.Tensor
        Same shape, dtype and memory format as ``x``; differentiable with
        respect to ``x``, ``gamma`` and ``beta``, including the dependence
        of the batch statistics on ``x``.
    batch_mean, batch_inv_std : torch.Tensor
        The batch statistics (detached), float32 (float64 for float64 input).
    """
    if activation not in ACTIVATIONS:
        raise ValueError("activation must be None or 'relu', got {!r}".format(activation))
    if backend not in BACKENDS:
        raise ValueError("backend must be one of {}, got {!r}".format(BACKENDS, backend))
    return batch_norm_train_resolved(x, gamma, beta, normalize_axes(axes, x.ndim), epsilon,
                                     activation, backend)


def batch_norm_train_resolved(x, gamma, beta, axes, epsilon, activation, backend):
    """:func:`batch_norm_train` on resolved arguments: ``axes`` as
    :func:`normalize_axes` returns them, ``activation`` and ``backend``
    valid. What layers call on every forward."""
    if backend == "dnn":
        backend = dnn_backend(x, axes, activation)
    if backend == "native":
        y, mean, inv_std = _train_native(x, gamma, beta, axes, epsilon)
    elif backend == "cudnn":
        y, mean, inv_std = _train_cudnn(x, gamma, beta, axes, epsilon)
    else:
        return _train_triton(x, gamma, beta, axes, epsilon, activation)
    if activation == "relu":
        # y is a new tensor that the backward of the normalization does not use
        y = torch.relu_(y)
    return y, mean.detach(), inv_std.detach()


# Our Triton kernels beat the alternatives only on planar (NCHW) batches with
# large planes (bench/results/nvidia-h100-80gb-hbm3-2026-11-22-0720.json:
# 128x64x112x112 and 128x256x56x56 win, 256x1024x14x14 and every NHWC case
# lose); everywhere else the dnn layer takes the faster measured backend.
_TRITON_MIN_PLANE = 56 * 56
# Without a fused rectifier, float32/float16 have cuDNN, whose planar kernel
# runs at ~5x the bytes floor (fp32) for 64 channels at every plane size:
# ours are faster from 80x80 planes on (1.6-2.8x fp32, 2.0-4.6x fp16), slower
# at 56x56 and 64x64 (bench/results/batchnorm-planes-nvidia-h100-80gb-hbm3-
# 2026-11-22-1431.json, `python -m bench.bench_batchnorm --planes`).
_TRITON_MIN_PLANE_PLAIN = 80 * 80


def dnn_backend(x, axes, activation=None):
    """The backend the dnn layer uses for ``x`` (see the module docs).

    Chosen from measurements on an H100: our Triton kernels on planar
    batches with planes of at least 56x56 for bfloat16 or with a fused
    rectifier, and of at least 80x80 for float32/float16 without; cuDNN for
    other float32/float16 spatial batch norm; PyTorch's own one-pass kernel
    for bfloat16 otherwise (cuDNN does not take bfloat16 with float32
    statistics) and for the per-activation mode (where it measured 5-9x
    faster than cuDNN).
    """
    if not x.is_cuda:
        return "native"
    spatial = axes == spatial_axes(x.ndim) and x.ndim > 2
    if (spatial and x.is_contiguous() and x.dtype != torch.float64
            and triton_unavailable_reason(x) is None):
        plane = _prod(x.shape[2:])
        if x.dtype == torch.bfloat16 or activation == "relu":
            if plane >= _TRITON_MIN_PLANE:
                return "triton"
        elif plane >= _TRITON_MIN_PLANE_PLAIN:
            return "triton"
    if x.dtype == torch.bfloat16 or not spatial:
        return "native"
    return "cudnn"


def _params_in(gamma, beta, dtype, K, device, need_both):
    """gamma/beta as K-vectors of ``dtype``; ones/zeros for None when needed."""
    if gamma is not None:
        if gamma.dtype != dtype:
            gamma = gamma.to(dtype)
    elif need_both:
        gamma = torch.ones(K, dtype=dtype, device=device)
    if beta is not None:
        if beta.dtype != dtype:
            beta = beta.to(dtype)
    elif need_both:
        beta = torch.zeros(K, dtype=dtype, device=device)
    return gamma, beta


def _train_native(x, gamma, beta, axes, epsilon):
    sdt = _stat_dtype(x)
    # low-precision input: give float32 parameters so that the statistics
    # come back (and are computed) in float32
    need = x.dtype in _LOW_PRECISION
    if axes == spatial_axes(x.ndim) and x.ndim >= 2:
        C = x.shape[1]
        g, b = _params_in(gamma, beta, sdt, C, x.device, need)
        return torch.native_batch_norm(x, g, b, None, None, True, 0.0, epsilon)
    view = _Blocked(x, axes)
    x3 = view.x3
    K = x3.shape[1]
    g, b = _params_in(view.flat_param(gamma), view.flat_param(beta), sdt, K, x.device, need)
    xin = x3.view(x3.shape[0], K) if x3.shape[2] == 1 else x3
    y, mean, inv_std = torch.native_batch_norm(xin, g, b, None, None, True, 0.0, epsilon)
    return view.restore(y.view(x3.shape)), view.unflat(mean), view.unflat(inv_std)


def _train_cudnn(x, gamma, beta, axes, epsilon):
    compiling = torch.compiler.is_compiling()
    reason = None if compiling else cudnn_unavailable_reason(x)
    if reason is not None:
        raise RuntimeError("cuDNN batch norm cannot run: " + reason)
    if x.dtype not in (torch.float32, torch.float16, torch.float64):
        raise TypeError("cuDNN batch norm takes float32, float16 or float64 input, got {} (use "
                        "backend='triton' or 'native' for it)".format(x.dtype))
    if x.numel() >= _CUDNN_MAX_NUMEL or x.shape[0] > _CUDNN_MAX_BATCH_TRAIN:
        return _train_native(x, gamma, beta, axes, epsilon)
    sdt = _stat_dtype(x)
    # the same ATen op; Dynamo traces the op overload, and in some PyTorch
    # versions (2.11) refuses the torch.* binding as a skipped builtin
    cudnn_batch_norm = torch.ops.aten.cudnn_batch_norm if compiling else torch.cudnn_batch_norm
    spatial = axes == spatial_axes(x.ndim)
    if spatial and x.ndim > 2:
        xin = x if _dense_for_cudnn(x) else x.contiguous()
        g, b = _params_in(gamma, beta, sdt, x.shape[1], x.device, True)
        y, mean, inv_std, _ = cudnn_batch_norm(xin, g.contiguous(), b.contiguous(), None,
                                               None, True, 0.0, epsilon)
        return y, mean, inv_std
    view = _Blocked(x, axes)
    A, K, B = view.x3.shape
    if B != 1:
        raise ValueError("the cuDNN backend normalizes over all axes but 1 (spatial) or over "
                         "the leading axes (per-activation), got axes={}".format(axes))
    g, b = _params_in(view.flat_param(gamma), view.flat_param(beta), sdt, K, x.device, True)
    y, mean, inv_std, _ = cudnn_batch_norm(view.x3.view(A, K), g.contiguous(), b.contiguous(),
                                           None, None, True, 0.0, epsilon)
    return view.restore(y.view(A, K, B)), view.unflat(mean), view.unflat(inv_std)


def _dense_for_cudnn(x):
    """Contiguous, or channels_last(_3d): the layouts cuDNN takes as they are."""
    if x.is_contiguous():
        return True
    if x.ndim == 4:
        return x.is_contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.is_contiguous(memory_format=torch.channels_last_3d)
    return False


def _prod(sizes):
    out = 1
    for s in sizes:
        out *= s
    return out


def _train_triton(x, gamma, beta, axes, epsilon, activation):
    if x.is_cuda:
        reason = triton_unavailable_reason(x)
        if reason is not None:
            raise RuntimeError("the Triton batch-norm kernels cannot run: " + reason)
    allowed = (torch.float32, torch.float16, torch.bfloat16)
    if x.dtype not in allowed and not (x.dtype == torch.float64 and not x.is_cuda):
        raise TypeError("the Triton batch-norm kernels take float32, float16 or bfloat16 "
                        "input, got {}".format(x.dtype))
    if x.ndim > 2 and axes == spatial_axes(x.ndim) and x.is_contiguous():
        # planar spatial batches, the case the dnn layer sends here: a view
        # of (N, C, H*W), parameters as they are (the general view costs
        # ~30 us more host time per call and two autograd nodes)
        view = None
        x3 = x.view(x.shape[0], x.shape[1], _prod(x.shape[2:]))
        g, b = gamma, beta
    else:
        view = _Blocked(x, axes)
        x3 = view.x3 if view.x3.is_contiguous() else view.x3.contiguous()
        g, b = view.flat_param(gamma), view.flat_param(beta)
    sdt = _stat_dtype(x)
    g = None if g is None else g.to(sdt).contiguous()
    b = None if b is None else b.to(sdt).contiguous()
    y3, mean, inv_std = _batch_norm_act(x3, g, b, float(epsilon), activation == "relu")
    if view is None:
        return y3.view(x.shape), mean, inv_std
    return view.restore(y3), view.unflat(mean), view.unflat(inv_std)


# -- statistics alone and inference -------------------------------------------------------------

def batch_norm_stats(x, axes="auto", epsilon=1e-4):
    """The batch mean and inverse standard deviation of ``x`` over ``axes``,
    without normalizing (and without gradient).

    Returns
    -------
    mean, inv_std : torch.Tensor
        Of the kept axes' shape; float32 (float64 for float64 input).
    """
    axes = normalize_axes(axes, x.ndim)
    with torch.no_grad():
        xs = x.to(_stat_dtype(x))
        var, mean = torch.var_mean(xs, dim=axes, correction=0)
        return mean, torch.rsqrt(var + epsilon)


def batch_norm_infer(x, mean, inv_std, gamma=None, beta=None, axes="auto", activation=None):
    """Normalize ``x`` with given statistics:
    ``(x - mean) * (gamma * inv_std) + beta``.

    Parameters
    ----------
    x : torch.Tensor
    mean, inv_std : torch.Tensor
        Of the kept axes' shape.
    gamma, beta : torch.Tensor or None
        Of the kept axes' shape; None fixes 1 and 0.
    axes : 'auto', int or tuple of int
    activation : None or 'relu'

    Returns
    -------
    torch.Tensor
        Same shape and dtype as ``x``. Float32 and float64 inputs are
        computed in one elementwise pass (``addcmul``) that is differentiable
        with respect to every argument and saves only ``x`` and a
        per-channel scale. Float16/bfloat16 inputs go through PyTorch's
        one-pass batch-norm kernel in float32 arithmetic, differentiable
        with respect to ``x``, ``gamma`` and ``beta`` (the statistics get no
        gradient there).
    """
    if activation not in ACTIVATIONS:
        raise ValueError("activation must be None or 'relu', got {!r}".format(activation))
    axes = normalize_axes(axes, x.ndim)
    if x.dtype in _LOW_PRECISION:
        y = _infer_low_precision(x, mean, inv_std, gamma, beta, axes)
    else:
        dt = x.dtype
        shape = _broadcast_shape(x, axes)
        scale = inv_std.to(dt) if gamma is None else gamma.to(dt) * inv_std.to(dt)
        shift = -mean.to(dt) * scale
        if beta is not None:
            shift = shift + beta.to(dt)
        y = torch.addcmul(shift.reshape(shape), x, scale.reshape(shape))
    if activation == "relu":
        y = torch.relu(y)
    return y


def _infer_low_precision(x, mean, inv_std, gamma, beta, axes):
    # native_batch_norm in evaluation mode computes in float32 from a
    # variance; var = inv_std**-2 with epsilon 0 gives back inv_std.
    mean = mean.detach().float()
    var = inv_std.detach().float().pow(-2)
    if axes == spatial_axes(x.ndim) and x.ndim >= 2:
        g, b = _params_in(gamma, beta, torch.float32, x.shape[1], x.device, True)
        return torch.native_batch_norm(x, g, b, mean, var, False, 0.0, 0.0)[0]
    view = _Blocked(x, axes)
    A, K, B = view.x3.shape
    g, b = _params_in(view.flat_param(gamma), view.flat_param(beta), torch.float32, K,
                      x.device, True)
    y = torch.native_batch_norm(view.x3, g, b, view.flat_param(mean).contiguous(),
                                view.flat_param(var).contiguous(), False, 0.0, 0.0)[0]
    return view.restore(y)


# -- the fused Triton op: lasagne::batch_norm_act -------------------------------------------------
#
# Works on a contiguous (A, K, B) tensor: statistics per K over A and B.
# CUDA: the Triton kernels of batchnorm_triton (imported on first use);
# CPU: the reference below, the same maths in plain tensor operations.

def _bn_act_forward(x3, gamma, beta, epsilon, relu):
    """The forward of ``lasagne::batch_norm_act`` (kernels or reference)."""
    if x3.is_cuda:
        from . import batchnorm_triton
        return batchnorm_triton.forward(x3, gamma, beta, epsilon, relu)
    return reference_forward(x3, gamma, beta, epsilon, relu)


def _bn_act_backward(dy3, x3, mean, inv_std, gamma, beta, relu):
    """The backward of ``lasagne::batch_norm_act`` (kernels or reference)."""
    if x3.is_cuda:
        from . import batchnorm_triton
        return batchnorm_triton.backward(dy3, x3, mean, inv_std, gamma, beta, relu)
    return reference_backward(dy3, x3, mean, inv_std, gamma, beta, relu)


@torch.library.custom_op("lasagne::batch_norm_act", mutates_args=())
def _bn_act(x3: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor],
            epsilon: float, relu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _bn_act_forward(x3, gamma, beta, epsilon, relu)


@_bn_act.register_fake
def _(x3, gamma, beta, epsilon, relu):
    K = x3.shape[1]
    sdt = _stat_dtype(x3)
    return torch.empty_like(x3), x3.new_empty(K, dtype=sdt), x3.new_empty(K, dtype=sdt)


@torch.library.custom_op("lasagne::batch_norm_act_backward", mutates_args=())
def _bn_act_backward_op(dy3: torch.Tensor, x3: torch.Tensor, mean: torch.Tensor,
                        inv_std: torch.Tensor, gamma: Optional[torch.Tensor],
                        beta: Optional[torch.Tensor], relu: bool
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _bn_act_backward(dy3, x3, mean, inv_std, gamma, beta, relu)


@_bn_act_backward_op.register_fake
def _(dy3, x3, mean, inv_std, gamma, beta, relu):
    return torch.empty_like(x3), torch.empty_like(mean), torch.empty_like(mean)


def _bn_act_grads(backward, dy3, saved, relu):
    """dx, dgamma, dbeta from ``backward`` (the op or its implementation)."""
    x3, mean, inv_std, gamma, beta = saved
    dx, dgamma, dbeta = backward(dy3.contiguous(), x3, mean, inv_std, gamma, beta, relu)
    dgamma = None if gamma is None else dgamma.to(gamma.dtype)
    dbeta = None if beta is None else dbeta.to(beta.dtype)
    return dx, dgamma, dbeta, None, None


def _bn_act_setup(ctx, inputs, output):
    x3, gamma, beta, epsilon, relu = inputs
    _, mean, inv_std = output
    ctx.save_for_backward(x3, mean, inv_std, gamma, beta)
    ctx.relu = relu


def _bn_act_grad(ctx, dy3, dmean, dinv_std):
    return _bn_act_grads(torch.ops.lasagne.batch_norm_act_backward, dy3, ctx.saved_tensors,
                         ctx.relu)


_bn_act.register_autograd(_bn_act_grad, setup_context=_bn_act_setup)


class _BatchNormActFunction(torch.autograd.Function):
    """Eager mode: the op's functions without torch.library's Python layers
    (see :mod:`lasagne.ops.eager`)."""

    @staticmethod
    def forward(ctx, x3, gamma, beta, epsilon, relu):
        y, mean, inv_std = _bn_act_forward(x3, gamma, beta, epsilon, relu)
        ctx.save_for_backward(x3, mean, inv_std, gamma, beta)
        ctx.relu = relu
        ctx.mark_non_differentiable(mean, inv_std)
        return y, mean, inv_std

    @staticmethod
    @once_differentiable
    def backward(ctx, dy3, dmean, dinv_std):
        return _bn_act_grads(_bn_act_backward, dy3, ctx.saved_tensors, ctx.relu)


def _batch_norm_act(x3, gamma, beta, epsilon, relu):
    if torch.compiler.is_compiling():
        return torch.ops.lasagne.batch_norm_act(x3, gamma, beta, epsilon, relu)
    return _BatchNormActFunction.apply(x3, gamma, beta, epsilon, relu)


# No autocast rule: like PyTorch's batch_norm, the op runs in the input's
# dtype with float32 statistics and parameters (casting every input to one
# dtype, which is what an autocast registration does, would round gamma/beta).


def reference_forward(x3, gamma, beta, epsilon, relu):
    """Forward of ``lasagne::batch_norm_act`` in plain tensor operations:
    ``(y, mean, inv_std)`` for a contiguous ``(A, K, B)`` input, statistics
    per K, computed in float32 (float64 for float64 input)."""
    sdt = _stat_dtype(x3)
    xf = x3.to(sdt)
    var, mean = torch.var_mean(xf, dim=(0, 2), correction=0)
    inv_std = torch.rsqrt(var + epsilon)
    scale = inv_std if gamma is None else gamma.to(sdt) * inv_std
    y = (xf - mean[None, :, None]) * scale[None, :, None]
    if beta is not None:
        y = y + beta.to(sdt)[None, :, None]
    if relu:
        y = torch.relu(y)
    return y.to(x3.dtype), mean, inv_std


def reference_backward(dy3, x3, mean, inv_std, gamma, beta, relu):
    """Backward of ``lasagne::batch_norm_act`` in plain tensor operations:
    ``(dx, dgamma, dbeta)``, recomputing the normalized input (and the
    rectifier's mask) from ``x`` and the statistics."""
    sdt = mean.dtype
    n = x3.shape[0] * x3.shape[2]
    g = torch.ones_like(mean) if gamma is None else gamma.to(sdt)
    xhat = (x3.to(sdt) - mean[None, :, None]) * inv_std[None, :, None]
    dy = dy3.to(sdt)
    if relu:
        z = xhat * g[None, :, None]
        if beta is not None:
            z = z + beta.to(sdt)[None, :, None]
        dy = torch.where(z > 0, dy, torch.zeros_like(dy))
    dbeta = dy.sum(dim=(0, 2))
    dgamma = (dy * xhat).sum(dim=(0, 2))
    dx = (g * inv_std)[None, :, None] * (dy - (dbeta / n)[None, :, None]
                                         - xhat * (dgamma / n)[None, :, None])
    return dx.to(x3.dtype), dgamma, dbeta
