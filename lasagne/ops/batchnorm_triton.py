"""Triton kernels of batch normalization with an optional fused rectifier.

The maths is that of :func:`lasagne.ops.batchnorm.reference_forward` and
:func:`~lasagne.ops.batchnorm.reference_backward`, on a contiguous
``(A, K, B)`` tensor with one statistic per K (``(N, C, H*W)`` for NCHW,
``(N*H*W, C, 1)`` for channels_last, ``(N, features, 1)`` per activation).

Forward, three launches::

    stats     each program folds its share of tiles into a (count, mean, M2)
              per channel with Chan's parallel update (no cancellation), and
              writes them to a [split, K] buffer
    finalize  one program per channel block combines the splits into mean
              and inv_std = 1/sqrt(M2/n + eps)
    apply     y = (x - mean) * (gamma * inv_std) + beta, rectified if asked;
              one read of x and one write of y

Backward, three launches, saving nothing but x, mean and inv_std (plus the
per-channel gamma and beta)::

    reduce    sum(g) and sum(g * xhat) per channel and split, recomputing
              xhat = (x - mean) * inv_std, and g = dy masked by the
              rectifier's output > 0, from x
    finalize  dbeta = sum(g), dgamma = sum(g * xhat)
    apply     dx = gamma * inv_std * (g - dbeta/n - xhat * dgamma/n)

All arithmetic is float32; x, y, dy and dx keep the input dtype (float32,
float16 or bfloat16). Under ``TRITON_INTERPRET=1`` the same kernels run on
CPU tensors in Triton's interpreter, which is how the CPU tests check them.
"""

import functools

import torch
import triton
import triton.language as tl

from .triton import interpreting
from .triton.launch import KernelLaunch, pow2

__all__ = ["forward", "backward"]

_TILE = 4096            # elements one program loads per step
_PROGRAMS_PER_SM = 8    # target grid size for the reduction kernels
_FINAL_BLOCK = 128


@functools.lru_cache(maxsize=None)
def _sm_count(index):
    return torch.cuda.get_device_properties(index).multi_processor_count


def _config(A, K, B, device):
    """Tile shape (BLOCK_A, BLOCK_K, BLOCK_B), number of splits of the tile
    range per channel block, and warps."""
    if B == 1:
        # channels contiguous: a tile is BLOCK_A rows of BLOCK_K channels
        bk, bb = min(pow2(K), 256), 1
    elif B < 64:
        # short planes: a tile spans whole planes of several channels
        bb = pow2(B)
        bk = min(pow2(K), max(1, 512 // bb))
    else:
        # long planes, one channel per tile: the block length wasting least
        bk = 1
        bb = min((1024, 512, 256, 128, 64), key=lambda c: (-(-B // c) * c, -c))
    ba = max(1, min(pow2(A), _TILE // (bk * bb)))
    k_blocks = -(-K // bk)
    n_tiles = (-(-A // ba)) * (-(-B // bb))
    if device.type == "cuda" and not interpreting():
        target = _PROGRAMS_PER_SM * _sm_count(device.index if device.index is not None
                                              else torch.cuda.current_device())
    else:
        target = 4
    split = max(1, min(n_tiles, -(-target // k_blocks)))
    per_prog = -(-n_tiles // split)
    split = -(-n_tiles // per_prog)
    warps = 8 if ba * bk * bb >= 4096 else 4
    return (ba, bk, bb), k_blocks, split, per_prog, warps


# -- forward ---------------------------------------------------------------------------------------

@triton.jit
def _tile(t, n_tiles, A, K, B, ks, kmask, tiles_b, BLOCK_A: tl.constexpr,
          BLOCK_B: tl.constexpr):
    """Offsets, mask and element count of tile t for the channel block ks
    (all masked, count 0, past the last tile)."""
    ta = t // tiles_b
    tb = t % tiles_b
    a = ta * BLOCK_A + tl.arange(0, BLOCK_A)
    b = tb * BLOCK_B + tl.arange(0, BLOCK_B)
    offs = (a[:, None, None].to(tl.int64) * K * B + ks[None, :, None] * B + b[None, None, :])
    valid = t < n_tiles
    mask = ((a < A)[:, None, None] & kmask[None, :, None] & (b < B)[None, None, :]) & valid
    count = (tl.minimum(A - ta * BLOCK_A, BLOCK_A) * tl.minimum(B - tb * BLOCK_B, BLOCK_B))
    count = tl.where(valid, count, 0)
    return offs, mask, count.to(tl.float32)


@triton.jit
def _stats_kernel(x_ptr, part_mean_ptr, part_m2_ptr, part_n_ptr, A, K, B, tiles_b, n_tiles,
                  per_prog, BLOCK_A: tl.constexpr, BLOCK_K: tl.constexpr,
                  BLOCK_B: tl.constexpr):
    kb = tl.program_id(0)
    s = tl.program_id(1)
    ks = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < K
    mean = tl.zeros([BLOCK_K], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_K], dtype=tl.float32)
    n = tl.zeros([BLOCK_K], dtype=tl.float32)
    for i in range(0, per_prog):
        offs, mask, count = _tile(s * per_prog + i, n_tiles, A, K, B, ks, kmask, tiles_b,
                                  BLOCK_A, BLOCK_B)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tile_mean = tl.sum(tl.sum(x, axis=2), axis=0) / tl.maximum(count, 1.0)
        d = tl.where(mask, x - tile_mean[None, :, None], 0.0)
        tile_m2 = tl.sum(tl.sum(d * d, axis=2), axis=0)
        total = n + count
        delta = tile_mean - mean
        w = count / tl.maximum(total, 1.0)
        mean = mean + delta * w
        m2 = m2 + tile_m2 + delta * delta * (n * w)
        n = total
    out = s * K + ks
    tl.store(part_mean_ptr + out, mean, mask=kmask)
    tl.store(part_m2_ptr + out, m2, mask=kmask)
    tl.store(part_n_ptr + out, n, mask=kmask)


@triton.jit
def _stats_finalize_kernel(part_mean_ptr, part_m2_ptr, part_n_ptr, mean_ptr, inv_std_ptr, K,
                           split, eps, BLOCK: tl.constexpr):
    ks = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    kmask = ks < K
    n = tl.zeros([BLOCK], dtype=tl.float32)
    weighted = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(0, split):
        ns = tl.load(part_n_ptr + s * K + ks, mask=kmask, other=0.0)
        ms = tl.load(part_mean_ptr + s * K + ks, mask=kmask, other=0.0)
        n += ns
        weighted += ns * ms
    mean = weighted / n
    m2 = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(0, split):
        ns = tl.load(part_n_ptr + s * K + ks, mask=kmask, other=0.0)
        ms = tl.load(part_mean_ptr + s * K + ks, mask=kmask, other=0.0)
        m2s = tl.load(part_m2_ptr + s * K + ks, mask=kmask, other=0.0)
        d = ms - mean
        m2 += m2s + ns * d * d
    var = tl.maximum(m2 / n, 0.0)
    tl.store(mean_ptr + ks, mean, mask=kmask)
    tl.store(inv_std_ptr + ks, 1.0 / tl.sqrt(var + eps), mask=kmask)


@triton.jit
def _channel_params(mean_ptr, inv_std_ptr, gamma_ptr, beta_ptr, ks, kmask,
                    HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr):
    mean = tl.load(mean_ptr + ks, mask=kmask, other=0.0)
    inv_std = tl.load(inv_std_ptr + ks, mask=kmask, other=0.0)
    if HAS_GAMMA:
        scale = tl.load(gamma_ptr + ks, mask=kmask, other=0.0) * inv_std
    else:
        scale = inv_std
    if HAS_BETA:
        shift = tl.load(beta_ptr + ks, mask=kmask, other=0.0)
    else:
        shift = tl.zeros_like(mean)
    return mean, inv_std, scale, shift


@triton.jit
def _apply_kernel(x_ptr, y_ptr, mean_ptr, inv_std_ptr, gamma_ptr, beta_ptr, A, K, B, tiles_b,
                  n_tiles, per_prog, BLOCK_A: tl.constexpr, BLOCK_K: tl.constexpr,
                  BLOCK_B: tl.constexpr, HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr,
                  RELU: tl.constexpr):
    kb = tl.program_id(0)
    s = tl.program_id(1)
    ks = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < K
    mean, inv_std, scale, shift = _channel_params(mean_ptr, inv_std_ptr, gamma_ptr, beta_ptr,
                                                  ks, kmask, HAS_GAMMA, HAS_BETA)
    for i in range(0, per_prog):
        offs, mask, count = _tile(s * per_prog + i, n_tiles, A, K, B, ks, kmask, tiles_b,
                                  BLOCK_A, BLOCK_B)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = (x - mean[None, :, None]) * scale[None, :, None] + shift[None, :, None]
        if RELU:
            y = tl.maximum(y, 0.0)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


# -- backward --------------------------------------------------------------------------------------

@triton.jit
def _grad_out(x, dy, mean, inv_std, scale, shift, RELU: tl.constexpr):
    """xhat and the gradient reaching the normalization (dy masked by the
    rectifier, recomputed exactly as in the forward)."""
    xc = x - mean[None, :, None]
    xhat = xc * inv_std[None, :, None]
    if RELU:
        z = xc * scale[None, :, None] + shift[None, :, None]
        g = tl.where(z > 0.0, dy, 0.0)
    else:
        g = dy
    return xhat, g


@triton.jit
def _grad_reduce_kernel(dy_ptr, x_ptr, mean_ptr, inv_std_ptr, gamma_ptr, beta_ptr,
                        part_g_ptr, part_gx_ptr, A, K, B, tiles_b, n_tiles, per_prog,
                        BLOCK_A: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr,
                        HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr,
                        RELU: tl.constexpr):
    kb = tl.program_id(0)
    s = tl.program_id(1)
    ks = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < K
    mean, inv_std, scale, shift = _channel_params(mean_ptr, inv_std_ptr, gamma_ptr, beta_ptr,
                                                  ks, kmask, HAS_GAMMA, HAS_BETA)
    acc_g = tl.zeros([BLOCK_A, BLOCK_K, BLOCK_B], dtype=tl.float32)
    acc_gx = tl.zeros([BLOCK_A, BLOCK_K, BLOCK_B], dtype=tl.float32)
    for i in range(0, per_prog):
        offs, mask, count = _tile(s * per_prog + i, n_tiles, A, K, B, ks, kmask, tiles_b,
                                  BLOCK_A, BLOCK_B)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        xhat, g = _grad_out(x, dy, mean, inv_std, scale, shift, RELU)
        acc_g += g
        acc_gx += g * xhat
    out = s * K + ks
    tl.store(part_g_ptr + out, tl.sum(tl.sum(acc_g, axis=2), axis=0), mask=kmask)
    tl.store(part_gx_ptr + out, tl.sum(tl.sum(acc_gx, axis=2), axis=0), mask=kmask)


@triton.jit
def _grad_finalize_kernel(part_g_ptr, part_gx_ptr, dbeta_ptr, dgamma_ptr, K, split,
                          BLOCK: tl.constexpr):
    ks = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    kmask = ks < K
    sg = tl.zeros([BLOCK], dtype=tl.float32)
    sgx = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(0, split):
        sg += tl.load(part_g_ptr + s * K + ks, mask=kmask, other=0.0)
        sgx += tl.load(part_gx_ptr + s * K + ks, mask=kmask, other=0.0)
    tl.store(dbeta_ptr + ks, sg, mask=kmask)
    tl.store(dgamma_ptr + ks, sgx, mask=kmask)


@triton.jit
def _grad_apply_kernel(dy_ptr, x_ptr, dx_ptr, mean_ptr, inv_std_ptr, gamma_ptr, beta_ptr,
                       dbeta_ptr, dgamma_ptr, inv_n, A, K, B, tiles_b, n_tiles, per_prog,
                       BLOCK_A: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr,
                       HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr,
                       RELU: tl.constexpr):
    kb = tl.program_id(0)
    s = tl.program_id(1)
    ks = kb * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = ks < K
    mean, inv_std, scale, shift = _channel_params(mean_ptr, inv_std_ptr, gamma_ptr, beta_ptr,
                                                  ks, kmask, HAS_GAMMA, HAS_BETA)
    c_g = tl.load(dbeta_ptr + ks, mask=kmask, other=0.0) * inv_n
    c_gx = tl.load(dgamma_ptr + ks, mask=kmask, other=0.0) * inv_n
    for i in range(0, per_prog):
        offs, mask, count = _tile(s * per_prog + i, n_tiles, A, K, B, ks, kmask, tiles_b,
                                  BLOCK_A, BLOCK_B)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        xhat, g = _grad_out(x, dy, mean, inv_std, scale, shift, RELU)
        dx = scale[None, :, None] * (g - c_g[None, :, None] - xhat * c_gx[None, :, None])
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# -- launchers -------------------------------------------------------------------------------------

def _check(x3, *vectors):
    if x3.ndim != 3 or not x3.is_contiguous():
        raise ValueError("expected a contiguous (A, K, B) tensor, got shape {} strides {}".format(
            tuple(x3.shape), x3.stride()))
    for v in vectors:
        if v is not None and (v.dtype != torch.float32 or not v.is_contiguous()):
            raise ValueError("per-channel tensors must be contiguous float32")


def _tiling(A, K, B, device):
    """``(blocks, k_blocks, split, sweep)`` shared by the forward and backward
    plans: the block sizes and warps (launch keywords), the grid
    ``(k_blocks, split)`` of the sweeping kernels and their scalar
    arguments ``(A, K, B, tiles_b, n_tiles, per_prog)``."""
    (ba, bk, bb), k_blocks, split, per_prog, warps = _config(A, K, B, device)
    tiles_b = -(-B // bb)
    sweep = (A, K, B, tiles_b, (-(-A // ba)) * tiles_b, per_prog)
    return dict(BLOCK_A=ba, BLOCK_K=bk, BLOCK_B=bb, num_warps=warps), k_blocks, split, sweep


@functools.lru_cache(maxsize=256)
def _forward_plan(A, K, B, device, epsilon, has_gamma, has_beta, relu):
    """``(split, stats, finalize, apply)``: the number of partial statistics
    per channel and the three launches of :func:`forward` for one shape."""
    blocks, k_blocks, split, sweep = _tiling(A, K, B, device)
    return (split,
            KernelLaunch(_stats_kernel, (k_blocks, split), sweep, blocks),
            KernelLaunch(_stats_finalize_kernel, (-(-K // _FINAL_BLOCK),),
                         (K, split, float(epsilon)), dict(BLOCK=_FINAL_BLOCK)),
            KernelLaunch(_apply_kernel, (k_blocks, split), sweep,
                         dict(blocks, HAS_GAMMA=has_gamma, HAS_BETA=has_beta, RELU=relu)))


def forward(x3, gamma, beta, epsilon, relu):
    """``(y, mean, inv_std)`` of a contiguous ``(A, K, B)`` tensor; gamma and
    beta are float32 K-vectors or None."""
    _check(x3, gamma, beta)
    A, K, B = x3.shape
    split, stats, finalize, apply = _forward_plan(A, K, B, x3.device, float(epsilon),
                                                  gamma is not None, beta is not None, bool(relu))
    f32 = dict(dtype=torch.float32, device=x3.device)
    part_mean, part_m2, part_n = torch.empty((3, split, K), **f32).unbind(0)
    mean = torch.empty(K, **f32)
    inv_std = torch.empty(K, **f32)
    y = torch.empty_like(x3)
    stats(x3, part_mean, part_m2, part_n)
    finalize(part_mean, part_m2, part_n, mean, inv_std)
    apply(x3, y, mean, inv_std, mean if gamma is None else gamma, mean if beta is None else beta)
    return y, mean, inv_std


@functools.lru_cache(maxsize=256)
def _backward_plan(A, K, B, device, has_gamma, has_beta, relu):
    """``(split, reduce, finalize, apply)``: the number of partial sums per
    channel and the three launches of :func:`backward` for one shape."""
    blocks, k_blocks, split, sweep = _tiling(A, K, B, device)
    meta = dict(blocks, HAS_GAMMA=has_gamma, HAS_BETA=has_beta, RELU=relu)
    return (split,
            KernelLaunch(_grad_reduce_kernel, (k_blocks, split), sweep, meta),
            KernelLaunch(_grad_finalize_kernel, (-(-K // _FINAL_BLOCK),), (K, split),
                         dict(BLOCK=_FINAL_BLOCK)),
            KernelLaunch(_grad_apply_kernel, (k_blocks, split), (1.0 / (A * B),) + sweep, meta))


def backward(dy3, x3, mean, inv_std, gamma, beta, relu):
    """``(dx, dgamma, dbeta)`` for :func:`forward`'s output gradient ``dy3``."""
    _check(x3, mean, inv_std, gamma, beta)
    if dy3.shape != x3.shape or not dy3.is_contiguous():
        dy3 = dy3.contiguous().view(x3.shape)
    A, K, B = x3.shape
    split, reduce, finalize, apply = _backward_plan(A, K, B, x3.device, gamma is not None,
                                                    beta is not None, bool(relu))
    f32 = dict(dtype=torch.float32, device=x3.device)
    part_g, part_gx = torch.empty((2, split, K), **f32).unbind(0)
    dbeta = torch.empty(K, **f32)
    dgamma = torch.empty(K, **f32)
    dx = torch.empty_like(x3)
    g_ptr = mean if gamma is None else gamma
    b_ptr = mean if beta is None else beta
    reduce(dy3, x3, mean, inv_std, g_ptr, b_ptr, part_g, part_gx)
    finalize(part_g, part_gx, dbeta, dgamma)
    apply(dy3, x3, dx, mean, inv_std, g_ptr, b_ptr, dbeta, dgamma)
    return dx, dgamma, dbeta
