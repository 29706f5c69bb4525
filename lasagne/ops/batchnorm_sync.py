"""Batch normalization with statistics over the global batch of several
processes (``torch.distributed``), for data-parallel training.

Each process holds a part of the global mini-batch. The statistics are
those of the whole batch, exactly as one process holding all of it would
compute them:

* forward: each process computes its count ``n_i``, mean ``m_i`` and sum of
  squared deviations ``M2_i`` per kept position (a stable one-pass
  variance), the triples are all-gathered (``world_size x 3 x K`` numbers,
  in float64) and combined pairwise-exactly (Chan et al.)::

      N    = sum_i n_i
      mean = sum_i n_i m_i / N
      M2   = sum_i M2_i + sum_i n_i (m_i - mean)**2
      var  = M2 / N                       (biased, as Lasagne's)

  Every process combines the same gathered numbers in the same order, so
  the global statistics (and any moving averages built from them) are
  bitwise identical on every process. No sum-of-squares cancellation: the
  spread of the per-process means enters as squared differences.
* backward: with ``xhat = (x - mean) * inv_std`` and ``dy`` the gradient of
  the output, each process sums ``dy`` and ``dy * xhat`` over its part, the
  two sums are all-reduced, and::

      dx = gamma * inv_std * (dy - sum(dy) / N - xhat * sum(dy * xhat) / N)

  with the sums over the global batch: the exact gradient of the sum of the
  processes' losses. ``dgamma``/``dbeta`` are the local sums (each process's
  loss depends on them only through its own outputs); the data-parallel
  wrapper averages them with the other gradients, as it averages the
  losses.

Without ``torch.distributed`` initialized, or with a process group of one
process, every function here computes plain batch normalization (same maths,
no communication), so the same code runs on one process.

The collectives are ``torch.distributed.all_gather`` and ``all_reduce``
(any backend: NCCL on CUDA, Gloo on CPU) on ``group`` (default: the default
process group). Every process must call these functions the same number of
times in the same order, as for any collective.
"""

import torch

__all__ = ["world_size", "batch_norm_train_sync", "batch_norm_stats_sync"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def world_size(group=None):
    """The number of processes of ``group`` (default: the default group);
    1 when ``torch.distributed`` is unavailable or not initialized."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return 1
    return dist.get_world_size(group)


def _stat_dtype(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _resolve_axes(axes, ndim):
    if isinstance(axes, str):
        if axes != "auto":
            raise ValueError("axes must be 'auto', an int or a tuple of ints, got {!r}".format(
                axes))
        return (0,) + tuple(range(2, ndim))
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(sorted(a % ndim for a in axes))


def _local_moments(xs, axes):
    """Count, mean and sum of squared deviations of ``xs`` over ``axes``
    (mean and M2 zero for an empty part)."""
    count = 1
    for a in axes:
        count *= xs.shape[a]
    kept = [s for d, s in enumerate(xs.shape) if d not in axes]
    if count == 0:
        zeros = xs.new_zeros(kept)
        return 0, zeros, zeros
    var, mean = torch.var_mean(xs, dim=axes, correction=0)
    return count, mean, var * count


def _global_moments(xs, axes, group):
    """Global count N, mean and biased variance (``xs``'s dtype) over
    ``axes`` and over every process of ``group``. N is an int on one
    process, else a tensor of the statistics' shape (kept on the device:
    no host synchronization)."""
    count, mean, m2 = _local_moments(xs, axes)
    size = world_size(group)
    if size == 1:
        if count == 0:
            raise ValueError("batch normalization of an empty batch")
        return count, mean, m2 / count
    mean64, m2_64 = mean.to(torch.float64), m2.to(torch.float64)
    packed = torch.stack([torch.full_like(mean64, float(count)), mean64, m2_64])
    parts = [torch.empty_like(packed) for _ in range(size)]
    torch.distributed.all_gather(parts, packed.contiguous(), group=group)
    gathered = torch.stack(parts)            # (size, 3, *kept)
    counts, means, m2s = gathered[:, 0], gathered[:, 1], gathered[:, 2]
    total = counts.sum(dim=0)       # an empty global batch gives NaN, as torch's batch norm
    g_mean = (counts * means).sum(dim=0) / total
    g_m2 = m2s.sum(dim=0) + (counts * (means - g_mean) ** 2).sum(dim=0)
    return total.to(xs.dtype), g_mean.to(xs.dtype), (g_m2 / total).to(xs.dtype)


def _shape(x, axes):
    return [1 if d in axes else x.shape[d] for d in range(x.ndim)]


class _SyncBatchNorm(torch.autograd.Function):
    """``y = (x - mean) * (gamma * inv_std) + beta`` (optionally rectified)
    with global batch statistics; returns ``(y, mean, inv_std)``."""

    @staticmethod
    def forward(ctx, x, gamma, beta, axes, epsilon, relu, group):
        sdt = _stat_dtype(x)
        xs = x.to(sdt)
        count, mean, var = _global_moments(xs, axes, group)
        inv_std = torch.rsqrt(var + epsilon)
        shape = _shape(x, axes)
        scale = inv_std if gamma is None else gamma.to(sdt) * inv_std
        y = (xs - mean.view(shape)) * scale.view(shape)
        if beta is not None:
            y = y + beta.to(sdt).view(shape)
        if relu:
            y = torch.relu(y)
        ctx.save_for_backward(x, mean, inv_std, gamma, beta)
        ctx.axes, ctx.relu, ctx.group, ctx.count = axes, relu, group, count
        ctx.mark_non_differentiable(mean, inv_std)
        return y.to(x.dtype), mean, inv_std

    @staticmethod
    def backward(ctx, dy, _dmean, _dinv_std):
        x, mean, inv_std, gamma, beta = ctx.saved_tensors
        axes = ctx.axes
        sdt = mean.dtype
        shape = _shape(x, axes)
        g = torch.ones_like(mean) if gamma is None else gamma.to(sdt)
        xhat = (x.to(sdt) - mean.view(shape)) * inv_std.view(shape)
        dyf = dy.to(sdt)
        if ctx.relu:
            z = xhat * g.view(shape)
            if beta is not None:
                z = z + beta.to(sdt).view(shape)
            dyf = torch.where(z > 0, dyf, torch.zeros_like(dyf))
        sum_dy = dyf.sum(dim=axes)
        sum_dy_xhat = (dyf * xhat).sum(dim=axes)
        dx = dgamma = dbeta = None
        if ctx.needs_input_grad[0]:
            sums = torch.stack([sum_dy, sum_dy_xhat])
            if world_size(ctx.group) > 1:
                torch.distributed.all_reduce(sums, group=ctx.group)
            means = sums / ctx.count          # ctx.count: an int or a tensor of mean's shape
            dx = (g * inv_std).view(shape) * (dyf - means[0].view(shape)
                                              - xhat * means[1].view(shape))
            dx = dx.to(x.dtype)
        if gamma is not None and ctx.needs_input_grad[1]:
            dgamma = sum_dy_xhat.to(gamma.dtype)
        if beta is not None and ctx.needs_input_grad[2]:
            dbeta = sum_dy.to(beta.dtype)
        return dx, dgamma, dbeta, None, None, None, None


def batch_norm_train_sync(x, gamma=None, beta=None, axes="auto", epsilon=1e-4, activation=None,
                          group=None):
    """Normalize ``x`` with the statistics of the global batch (the union of
    every process's ``x``; see the module documentation).

    Parameters
    ----------
    x : torch.Tensor
        This process's part of the batch. The parts may differ in size along
        the normalized axes, not along the kept ones.
    gamma, beta : torch.Tensor or None
        Scale and shift of the statistics' shape; None fixes 1 and 0.
    axes : 'auto', int or tuple of int (default: 'auto')
        The axes to normalize over (``'auto'``: all but axis 1).
    epsilon : float (default: 1e-4)
    activation : None or 'relu'
        A rectifier applied to the result.
    group : torch.distributed.ProcessGroup or None
        The processes sharing statistics (default: the default group).

    Returns
    -------
    y : torch.Tensor
        Same shape and dtype as ``x``, differentiable with respect to ``x``
        (through the global statistics), ``gamma`` and ``beta``.
    batch_mean, batch_inv_std : torch.Tensor
        The global statistics (no gradient), float32 (float64 for float64
        input), identical on every process.
    """
    if activation not in (None, "relu"):
        raise ValueError("activation must be None or 'relu', got {!r}".format(activation))
    axes = _resolve_axes(axes, x.ndim)
    return _SyncBatchNorm.apply(x, gamma, beta, axes, float(epsilon), activation == "relu",
                                group)


def batch_norm_stats_sync(x, axes="auto", epsilon=1e-4, group=None):
    """The global batch mean and inverse standard deviation over ``axes``
    and every process of ``group``, without gradient.

    Returns
    -------
    mean, inv_std : torch.Tensor
        Of the kept axes' shape; float32 (float64 for float64 input),
        identical on every process.
    """
    axes = _resolve_axes(axes, x.ndim)
    with torch.no_grad():
        _, mean, var = _global_moments(x.to(_stat_dtype(x)), axes, group)
        return mean, torch.rsqrt(var + epsilon)
