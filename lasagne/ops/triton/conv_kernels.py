"""Implicit-GEMM convolution kernels (Triton): forward, data gradient
("dgrad") and weight gradient ("wgrad"), for 2D and 3D cross-correlation
with any stride, symmetric zero padding and groups.

Every kernel works on 5-D views ``(N, C, D, H, W)`` (a 2D convolution is a 3D
one with ``D = T = 1``) and reads all strides, so any memory layout is
correct; two layouts are fast:

* channels-last (NHWC / NDHWC, ``stride(1) == 1``): a tile of output
  positions is a run of consecutive flattened positions ``(n, d, h, w)``,
  and the reduction dimension is ordered ``(t, r, s, c)`` with the channel
  innermost, so every operand row the kernel loads is a contiguous run of
  channels (16-byte vector loads when ``C`` is a multiple of 8);
* planar (NCHW / NCDHW): a tile of output positions is a small 2D spatial
  patch ``TILE_H x TILE_W`` of one sample (``TILE_W`` a power of two), so
  that consecutive lanes walk along ``w`` and loads stay coalesced.

Nothing is ever materialised: the im2col gather is done by masked loads
(out-of-image taps load zero) straight into the matrix-product operands.

Forward, ``y = x (*) w``::

    GEMM  M = N*OD*OH*OW output positions, N = K/G filters,
          reduction = T*R*S*(C/G) ordered (tap, channel-block)
    grid  (M tiles x filter tiles with the filter tile fastest, so that the
           programs sharing one input tile run together; G)

Data gradient: ``dx[n, c, i] = sum_{k, r: i + p - r = o*s} dy[n, k, o] w[k, c, r]``.
With stride ``s > 1`` only the taps ``r = (i + p) mod s (mod s)`` reach input
``i``, so the input positions are split into the ``s_d*s_h*s_w`` phases
``i mod s`` and each phase is an ordinary stride-1 implicit GEMM over just
its own taps: no multiply is spent on the zeros a strided transposed
convolution would insert. Grid ``(tiles of the phase grid x channel tiles,
G * phases)``; every element of ``dx`` is written exactly once (positions
reached by no window get zero).

Weight gradient: ``dw[k, c, tap] = sum_{p} dy[n, k, o(p)] x[n, c, i(o(p), tap)]``,
a GEMM ``M = K/G, N = taps * C/G, reduction over P = N*OD*OH*OW``. ``P`` is
huge and ``M x N`` small, so the reduction is split into ``SPLIT`` contiguous
ranges (chosen on the host for enough programs to fill the GPU, under a
workspace cap); each program writes its float32 partial sum to a workspace
``[SPLIT, K, taps, C/G]`` and a second kernel adds the partials in the fixed
order ``0..SPLIT-1`` and casts. No atomics anywhere: results are bitwise
reproducible for a given configuration (and the default configuration is a
fixed function of the problem).

Accumulation is float32 (``tl.dot``); float32 operands use TF32 tensor cores
when ``precision='tf32'`` and exact float32 products with ``'ieee'``.
"""

import functools
import itertools

import torch
import triton
import triton.language as tl

from . import interpreting
from .launch import layout, needs_int64

__all__ = ["conv_forward", "conv_dgrad", "conv_wgrad", "Config", "default_config",
           "candidate_configs", "wgrad_split", "interpreting"]


def _patch_interpreter():
    """Triton 3.6's interpreter turns a scalar into a 1-element array and
    converts it with ``int(array)``, which numpy >= 2.4 rejects, so a loop
    over a run-time bound fails there. Patch the conversion (interpreter
    only; compiled kernels are unaffected)."""
    try:
        from triton.runtime import interpreter as _interp
    except ImportError:  # pragma: no cover
        return
    orig = getattr(_interp, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "_lasagne_index_fix", False):
        return
    import numpy as np

    def patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__",
                       lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    patched._lasagne_index_fix = True
    _interp._patch_lang_tensor = patched


if interpreting():
    _patch_interpreter()


# --- configurations -------------------------------------------------------------------------------

class Config(tuple):
    """Block sizes of one kernel launch: ``(BLOCK_M, BLOCK_N, BLOCK_K,
    num_warps, num_stages)``. For the forward ``M`` is output positions,
    ``N`` filters and ``K`` input channels per tap; for dgrad ``M`` is input
    positions, ``N`` input channels, ``K`` filters; for wgrad ``M`` is
    filters, ``N`` input channels, ``K`` output positions."""

    def __new__(cls, bm, bn, bk, warps=4, stages=3):
        return super().__new__(cls, (int(bm), int(bn), int(bk), int(warps), int(stages)))

    bm = property(lambda self: self[0])
    bn = property(lambda self: self[1])
    bk = property(lambda self: self[2])
    warps = property(lambda self: self[3])
    stages = property(lambda self: self[4])

    def __getnewargs__(self):  # pickling (the benchmark compiles in worker processes)
        return tuple(self)

    def __repr__(self):
        return "Config({}x{}x{}, w{}, s{})".format(*self)


def _p2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def _clamp_block(b, n, lo=16):
    """Shrink block size ``b`` towards the problem size ``n`` (powers of
    two, at least ``lo``: tl.dot needs 16)."""
    return max(lo, min(b, _p2(n)))


TUNED = {
    ("fwd", "bfloat16", "cl", 256, 256): (256, 128, 64, 8, 4),
    ("dgrad", "bfloat16", "cl", 256, 256): (256, 128, 64, 8, 4),
    ("wgrad", "bfloat16", "cl", 256, 256): (128, 128, 64, 4, 4),
    ("fwd", "float32", "cl", 256, 256): (128, 256, 32, 8, 3),
    ("dgrad", "float32", "cl", 256, 256): (128, 256, 32, 8, 3),
    ("wgrad", "float32", "cl", 256, 256): (128, 256, 32, 8, 3),
    ("fwd", "float32", "planar", 256, 256): (128, 256, 32, 8, 3),
    ("dgrad", "float32", "planar", 256, 256): (128, 256, 32, 8, 3),
    ("wgrad", "float32", "planar", 256, 256): (128, 256, 32, 8, 3),
    ("fwd", "bfloat16", "cl", 64, 64): (128, 64, 64, 8, 3),
    ("dgrad", "bfloat16", "cl", 64, 64): (128, 64, 64, 4, 4),
    ("wgrad", "bfloat16", "cl", 64, 64): (64, 64, 128, 8, 3),
    ("fwd", "float32", "cl", 64, 64): (128, 64, 32, 4, 3),
    ("dgrad", "float32", "cl", 64, 64): (128, 64, 32, 4, 3),
    ("wgrad", "float32", "cl", 64, 64): (64, 64, 64, 4, 3),
    ("fwd", "float32", "planar", 64, 64): (64, 64, 32, 4, 3),
    ("dgrad", "float32", "planar", 64, 64): (64, 64, 32, 4, 3),
    ("wgrad", "float32", "planar", 64, 64): (64, 64, 32, 8, 2),
}
"""Measured best block sizes: ``(kind, dtype name, 'cl' or 'planar', C/G, K/G)``
-> ``(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)``. From the quick
sweep of ``python -m bench.bench_conv_gemm`` on an H100
(bench/results/conv_gemm-nvidia-h100-80gb-hbm3-2026-11-22-0956.json: VGG-16
conv3 and ResNet-50 3x3 problems). Problems not listed use the rule in
:func:`default_config`."""


def default_config(kind, dtype, cg, kg, positions, channels_last=True):
    """The block sizes used when none are given: a fixed function of the
    problem (never timing-dependent), so results are reproducible from run
    to run.

    Parameters
    ----------
    kind : 'fwd', 'dgrad' or 'wgrad'
    dtype : torch.dtype
    cg, kg : int
        Input and output channels per group.
    positions : int
        Output positions ``N*OD*OH*OW``.
    channels_last : bool
        Whether the kernel runs its channels-last tiling (else planar).
    """
    wide = dtype == torch.float32
    if interpreting():
        # small tiles: the interpreter runs every program one after another
        if kind == "fwd":
            return Config(32, _clamp_block(16, kg), _clamp_block(16, cg), 4, 1)
        if kind == "dgrad":
            return Config(32, _clamp_block(16, cg), _clamp_block(16, kg), 4, 1)
        return Config(_clamp_block(16, kg), _clamp_block(16, cg), 32, 4, 1)
    key = (kind, str(dtype).replace("torch.", ""), "cl" if channels_last else "planar",
           int(cg), int(kg))
    if key in TUNED:
        return Config(*TUNED[key])
    bk = 32 if wide else 64
    stages = 3 if wide else 4
    if kind == "fwd":
        bn = _clamp_block(128, kg)
        return Config(128, bn, _clamp_block(bk, cg), 8 if bn >= 128 else 4, stages)
    if kind == "dgrad":
        bn = _clamp_block(128, cg)
        return Config(128, bn, _clamp_block(bk, kg), 8 if bn >= 128 else 4, stages)
    bm = _clamp_block(128, kg)
    bn = _clamp_block(128, cg)
    return Config(bm, bn, bk, 8 if bm * bn >= 128 * 128 else 4, stages)


def candidate_configs(kind, dtype, cg, kg, full=False):
    """Block-size configurations worth timing for one problem (the benchmark
    sweeps these): block sizes clamped to the channel counts, software
    pipelines that fit in a Hopper SM's shared memory (about 200 KiB used
    at most). ``full=False`` gives a short list (about a dozen tile shapes),
    ``full=True`` every tile shape and pipeline depth."""
    wide = dtype == torch.float32
    item = 4 if wide else 2
    if kind == "fwd":
        m_lim, n_lim, k_lim = None, kg, cg
    elif kind == "dgrad":
        m_lim, n_lim, k_lim = None, cg, kg
    else:
        m_lim, n_lim, k_lim = kg, cg, None

    def fits(bm, bn, bk, stages):
        return stages * (bm + bn) * bk * item <= 200 * 1024

    raw = []
    if full:
        bks = (32, 64) if wide else (32, 64, 128)
        for bm, bn, bk in itertools.product((64, 128, 256), (64, 128, 256), bks):
            if bm * bn > 256 * 128:
                continue
            for warps in (4, 8):
                for stages in (2, 3, 4, 5):
                    raw.append((bm, bn, bk, warps, stages))
    else:
        bk = 32 if wide else 64
        st = 3 if wide else 4
        for bm, bn in ((128, 64), (128, 128), (128, 256), (256, 64), (256, 128), (64, 128),
                       (64, 64)):
            raw.append((bm, bn, bk, 8 if bm * bn >= 128 * 128 else 4, st))
        raw += [(128, 128, bk, 4, st), (128, 128, bk, 8, st - 1), (128, 128, bk, 8, st + 1),
                (128, 128, 2 * bk, 8, 3), (128, 128, bk // 2, 8, st + 1)]
        if kind == "wgrad":
            # small filter banks clamp the tile: vary the reduction block and depth
            raw += [(64, 64, 2 * bk, 4, 3), (64, 64, bk, 4, st + 1), (64, 64, bk // 2, 4, st + 1),
                    (64, 64, 2 * bk, 8, 3), (64, 64, bk, 8, st)]
    out, seen = [], set()
    for bm, bn, bk, warps, stages in raw:
        bm = bm if m_lim is None else _clamp_block(bm, m_lim)
        bn = _clamp_block(bn, n_lim)
        bk = bk if k_lim is None else _clamp_block(bk, k_lim)
        cfg = Config(bm, bn, bk, warps, stages)
        if cfg in seen or not fits(bm, bn, bk, stages):
            continue
        if bm * bn < 64 * 64 and warps > 4:
            continue
        seen.add(cfg)
        out.append(cfg)
    return out


# --- the kernels ----------------------------------------------------------------------------------

@triton.jit
def _positions(tile, N, D1, D2, D3, M, BLOCK: tl.constexpr, TILE_W: tl.constexpr):
    """``BLOCK`` positions ``(n, z, y, x)`` of tile ``tile`` of the grid
    ``(N, D1, D2, D3)``, and which of them exist. ``TILE_W == 0``: the tile
    is a run of ``BLOCK`` consecutive flattened positions (channels-last);
    otherwise a ``BLOCK // TILE_W`` by ``TILE_W`` patch of one ``(n, z)``
    plane (planar layouts, consecutive lanes along ``x``)."""
    i = tl.arange(0, BLOCK)
    if TILE_W == 0:
        m = tile * BLOCK + i
        valid = m < M
        x = m % D3
        t = m // D3
        y = t % D2
        t = t // D2
        z = t % D1
        n = t // D1
    else:
        nbw = tl.cdiv(D3, TILE_W)
        nbh = tl.cdiv(D2, BLOCK // TILE_W)
        bw = tile % nbw
        t = tile // nbw
        bh = t % nbh
        t = t // nbh
        z = t % D1
        n = t // D1
        y = bh * (BLOCK // TILE_W) + i // TILE_W
        x = bw * TILE_W + i % TILE_W
        valid = (y < D2) & (x < D3) & (n < N)
        n = tl.zeros([BLOCK], dtype=tl.int32) + n
        z = tl.zeros([BLOCK], dtype=tl.int32) + z
    return n, z, y, x, valid


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, y_ptr,
                N, Cg, D, H, W, Kg, OD, OH, OW, T, R, S,
                sd, sh, sw, pd, ph, pw,
                sxn, sxc, sxd, sxh, sxw,
                swk, swc, swt, swr, sws,
                syn, syk, syd, syh, syw,
                M,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                TILE_W: tl.constexpr, EVEN_C: tl.constexpr, PRECISION: tl.constexpr,
                UPCAST: tl.constexpr, INT64: tl.constexpr):
    pid = tl.program_id(0)
    g = tl.program_id(1)
    num_n = tl.cdiv(Kg, BLOCK_N)
    pid_n = pid % num_n
    pid_m = pid // num_n

    n, od, oh, ow, mvalid = _positions(pid_m, N, OD, OH, OW, M, BLOCK_M, TILE_W)
    if INT64:
        n = n.to(tl.int64)
    id0 = od * sd - pd
    ih0 = oh * sh - ph
    iw0 = ow * sw - pw
    x_rows = x_ptr + g * Cg * sxc + n * sxn + id0 * sxd + ih0 * sxh + iw0 * sxw  # [BM]

    k = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    kmask = k < Kg
    w_cols = w_ptr + (g * Kg + k) * swk  # [BN]
    ck = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    nc = tl.cdiv(Cg, BLOCK_K)
    total = T * R * S * nc
    for it in range(0, total):
        cb = it % nc
        tap = it // nc
        s = tap % S
        tr = tap // S
        r = tr % R
        t = tr // R
        idd = id0 + t
        ihh = ih0 + r
        iww = iw0 + s
        am = mvalid & (idd >= 0) & (idd < D) & (ihh >= 0) & (ihh < H) & (iww >= 0) & (iww < W)
        c = cb * BLOCK_K + ck
        a_ptrs = (x_rows + (t * sxd + r * sxh + s * sxw))[:, None] + (c * sxc)[None, :]
        b_ptrs = (w_cols + (t * swt + r * swr + s * sws))[None, :] + (c * swc)[:, None]
        if EVEN_C:
            a = tl.load(a_ptrs, mask=am[:, None], other=0.0)
            b = tl.load(b_ptrs, mask=kmask[None, :], other=0.0)
        else:
            cm = c < Cg
            a = tl.load(a_ptrs, mask=am[:, None] & cm[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=cm[:, None] & kmask[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    y_rows = y_ptr + n * syn + od * syd + oh * syh + ow * syw
    y_ptrs = y_rows[:, None] + ((g * Kg + k) * syk)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mvalid[:, None] & kmask[None, :])


@triton.jit
def _dgrad_kernel(dy_ptr, w_ptr, dx_ptr,
                  N, Cg, D, H, W, Kg, OD, OH, OW, T, R, S,
                  sd, sh, sw, pd, ph, pw,
                  sgn, sgk, sgd, sgh, sgw,
                  swk, swc, swt, swr, sws,
                  sxn, sxc, sxd, sxh, sxw,
                  Dq, Hq, Wq, Mq,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  TILE_W: tl.constexpr, EVEN_K: tl.constexpr, PRECISION: tl.constexpr,
                  UPCAST: tl.constexpr, INT64: tl.constexpr):
    pid = tl.program_id(0)
    z = tl.program_id(1)
    phases = sd * sh * sw
    g = z // phases
    ph_i = z % phases
    a_d = ph_i // (sh * sw)
    a_h = (ph_i // sw) % sh
    a_w = ph_i % sw
    num_n = tl.cdiv(Cg, BLOCK_N)
    pid_n = pid % num_n
    pid_m = pid // num_n

    # input positions of this phase: i = a + s*q
    n, qd, qh, qw, qvalid = _positions(pid_m, N, Dq, Hq, Wq, Mq, BLOCK_M, TILE_W)
    if INT64:
        n = n.to(tl.int64)
    idd = a_d + sd * qd
    ihh = a_h + sh * qh
    iww = a_w + sw * qw
    pvalid = qvalid & (idd < D) & (ihh < H) & (iww < W)
    # taps reaching this phase: t = t0 + j*sd, output o = q + (a + p - t0) / sd - j
    t0 = (a_d + pd) % sd
    r0 = (a_h + ph) % sh
    s0 = (a_w + pw) % sw
    nt = (T - t0 + sd - 1) // sd
    nr = (R - r0 + sh - 1) // sh
    ns = (S - s0 + sw - 1) // sw
    od0 = qd + (a_d + pd - t0) // sd
    oh0 = qh + (a_h + ph - r0) // sh
    ow0 = qw + (a_w + pw - s0) // sw
    g_rows = dy_ptr + g * Kg * sgk + n * sgn + od0 * sgd + oh0 * sgh + ow0 * sgw  # [BM]

    c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = c < Cg
    w_cols = w_ptr + g * Kg * swk + c * swc  # [BN]
    kk = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    nk = tl.cdiv(Kg, BLOCK_K)
    total = nt * nr * ns * nk
    for it in range(0, total):
        kb = it % nk
        tap = it // nk
        js = tap % ns
        tr = tap // ns
        jr = tr % nr
        jt = tr // nr
        odd = od0 - jt
        ohh = oh0 - jr
        oww = ow0 - js
        am = pvalid & (odd >= 0) & (odd < OD) & (ohh >= 0) & (ohh < OH) & (oww >= 0) & (oww < OW)
        k = kb * BLOCK_K + kk
        a_ptrs = (g_rows - (jt * sgd + jr * sgh + js * sgw))[:, None] + (k * sgk)[None, :]
        w_off = (t0 + jt * sd) * swt + (r0 + jr * sh) * swr + (s0 + js * sw) * sws
        b_ptrs = (w_cols + w_off)[None, :] + (k * swk)[:, None]
        if EVEN_K:
            a = tl.load(a_ptrs, mask=am[:, None], other=0.0)
            b = tl.load(b_ptrs, mask=cmask[None, :], other=0.0)
        else:
            km = k < Kg
            a = tl.load(a_ptrs, mask=am[:, None] & km[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=km[:, None] & cmask[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    dx_rows = dx_ptr + n * sxn + idd * sxd + ihh * sxh + iww * sxw
    dx_ptrs = dx_rows[:, None] + ((g * Cg + c) * sxc)[None, :]
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=pvalid[:, None] & cmask[None, :])


@triton.jit
def _wgrad_kernel(x_ptr, dy_ptr, out_ptr,
                  N, Cg, D, H, W, Kg, OD, OH, OW, T, R, S,
                  sd, sh, sw, pd, ph, pw,
                  sxn, sxc, sxd, sxh, sxw,
                  sgn, sgk, sgd, sgh, sgw,
                  so_split, so_k, so_c, so_t, so_r, so_s,
                  P, n_ptiles, ptiles_per_split,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  TILE_W: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                  INT64: tl.constexpr):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    g = tl.program_id(2)
    num_k = tl.cdiv(Kg, BLOCK_M)
    num_c = tl.cdiv(Cg, BLOCK_N)
    pid_k = pid % num_k
    rest = pid // num_k
    pid_c = rest % num_c
    tap = rest // num_c
    s = tap % S
    r = (tap // S) % R
    t = tap // (S * R)

    k = pid_k * BLOCK_M + tl.arange(0, BLOCK_M)
    kmask = k < Kg
    c = pid_c * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = c < Cg
    g_cols = dy_ptr + (g * Kg + k) * sgk  # [BM]
    x_cols = x_ptr + (g * Cg + c) * sxc   # [BN]

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    p_lo = split * ptiles_per_split
    p_hi = tl.minimum(n_ptiles, p_lo + ptiles_per_split)
    for pt in range(p_lo, p_hi):
        n, od, oh, ow, pvalid = _positions(pt, N, OD, OH, OW, P, BLOCK_K, TILE_W)
        if INT64:
            n = n.to(tl.int64)
        a_ptrs = g_cols[:, None] + (n * sgn + od * sgd + oh * sgh + ow * sgw)[None, :]
        a = tl.load(a_ptrs, mask=kmask[:, None] & pvalid[None, :], other=0.0)
        idd = od * sd - pd + t
        ihh = oh * sh - ph + r
        iww = ow * sw - pw + s
        xm = pvalid & (idd >= 0) & (idd < D) & (ihh >= 0) & (ihh < H) & (iww >= 0) & (iww < W)
        b_ptrs = (n * sxn + idd * sxd + ihh * sxh + iww * sxw)[:, None] + x_cols[None, :]
        b = tl.load(b_ptrs, mask=xm[:, None] & cmask[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    o_ptrs = (out_ptr + split * so_split + t * so_t + r * so_r + s * so_s
              + ((g * Kg + k) * so_k)[:, None] + (c * so_c)[None, :])
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=kmask[:, None] & cmask[None, :])


@triton.jit
def _wgrad_reduce_kernel(ws_ptr, dw_ptr, SPLIT, E, CTAPS, TAPS,
                         sdk, sdc, sdtap,
                         BLOCK: tl.constexpr):
    """dw[k, c, tap] = sum over split (in order) of ws[split, k, c, tap]; ``ws``
    is contiguous ``[SPLIT, K, Cg, taps]``; ``dw`` has a stride per
    ``(k, c)`` and is contiguous over the flattened taps within them."""
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = e < E
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for sp in range(0, SPLIT):
        acc += tl.load(ws_ptr + sp * E + e, mask=m, other=0.0)
    k = e // CTAPS
    rem = e % CTAPS
    c = rem // TAPS
    tap = rem % TAPS
    tl.store(dw_ptr + k * sdk + c * sdc + tap * sdtap, acc.to(dw_ptr.dtype.element_ty), mask=m)


# --- host-side launchers --------------------------------------------------------------------------

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

LAST_KERNELS = {}
"""The compiled kernel of the latest launch per kind ('fwd', 'dgrad',
'wgrad'), for resource reports (registers, spills, shared memory)."""


def _as5d(t):
    """A 4-D (N, C, H, W) tensor as a 5-D (N, C, 1, H, W) view."""
    return t.unsqueeze(2) if t.ndim == 4 else t


def _channels_last(t):
    """True when the channel axis of ``t`` is its innermost (stride 1 and
    not a planar tensor)."""
    return t.stride(1) == 1 and t.shape[1] > 1 and not t.is_contiguous()


def _tile_w(width, block):
    """Patch width for planar layouts: the power of two (4..32, at most
    ``block // 2``) that wastes least lanes across ``width``; ties go to the
    wider patch."""
    best = None
    for tw in (32, 16, 8, 4):
        if tw > block // 2:
            continue
        waste = -(-width // tw) * tw
        if best is None or waste < best[0]:
            best = (waste, tw)
    return best[1] if best else 4


def _precision(dtype, precision):
    if interpreting():
        return "ieee"
    if dtype != torch.float32:
        return "tf32"  # Triton's default; without effect on 16-bit operands
    if precision is None:
        precision = "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    if precision not in ("tf32", "ieee"):
        raise ValueError("precision must be 'tf32' or 'ieee', got {!r}".format(precision))
    return precision


def _upcast(dtype):
    # Triton 3.6's interpreter computes bfloat16 dot products wrongly: run
    # them on float32 copies of the (exact) bfloat16 operand values.
    return interpreting() and dtype == torch.bfloat16


def _weights_with_unit_stride(w5, dim):
    """``w5`` (K, C, T, R, S) with axis ``dim`` (0 = filters, 1 = channels)
    of stride 1, as a logical view of a (possibly new) contiguous buffer."""
    if w5.stride(dim) == 1:
        # already innermost if the other axes are ordered around it
        order = sorted(range(5), key=lambda i: -w5.stride(i))
        if order[-1] == dim:
            return w5
    perm = [i for i in range(5) if i != dim] + [dim]
    buf = w5.permute(perm).contiguous()
    inv = [perm.index(i) for i in range(5)]
    return buf.permute(inv)


def _check(x, w, stride, padding, groups):
    if x.dtype not in _DTYPES or w.dtype != x.dtype:
        raise TypeError("implicit-GEMM convolution supports float32, float16 and bfloat16 "
                        "with matching input and weights, got {} and {}".format(x.dtype, w.dtype))
    nd = x.ndim - 2
    if nd not in (2, 3) or w.ndim != x.ndim or len(stride) != nd or len(padding) != nd:
        raise ValueError("expected 4-D or 5-D input and weights with one stride and pad per "
                         "spatial axis, got input {}, weights {}, stride {}, padding {}".format(
                             tuple(x.shape), tuple(w.shape), stride, padding))
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ValueError("channels {} / filters {} do not match groups={} and weights {}".format(
            x.shape[1], w.shape[0], groups, tuple(w.shape)))


def out_shape(x_shape, w_shape, stride, padding):
    """Output shape of the convolution (batch, filters, *out)."""
    sp = tuple((i + 2 * p - k) // s + 1
               for i, k, s, p in zip(x_shape[2:], w_shape[2:], stride, padding))
    return (x_shape[0], w_shape[0]) + sp


def _geometry(x5_shape, w5_shape, stride, padding):
    st = (1,) * (5 - 2 - len(stride)) + tuple(stride)
    pd = (0,) * (5 - 2 - len(padding)) + tuple(padding)
    o = out_shape(x5_shape, w5_shape, st, pd)
    return st, pd, o[2:]


def conv_forward(x, w, stride, padding, groups=1, out=None, config=None, precision=None):
    """``y = x (*) w`` (cross-correlation) by the implicit-GEMM kernel.

    Parameters
    ----------
    x : Tensor (N, C, H, W) or (N, C, D, H, W), any strides
    w : Tensor (K, C/groups, R, S) or (K, C/groups, T, R, S)
    stride, padding : sequence of int, one per spatial axis
    groups : int
    out : Tensor, optional
        Where to write ``y`` (any strides); by default a new tensor,
        channels-last when ``x`` is.
    config : Config, optional
    precision : 'tf32' or 'ieee', optional
        For float32 operands; default from ``torch.backends.cudnn.allow_tf32``.
    """
    _check(x, w, stride, padding, groups)
    if out is None:
        shape = out_shape(x.shape, w.shape, stride, padding)
        fmt = torch.contiguous_format
        if _channels_last(x):
            fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    if out.numel() == 0:
        return out
    x5, w5, y5 = _as5d(x), _as5d(w), _as5d(out)
    st, pd, (OD, OH, OW) = _geometry(x5.shape, w5.shape, stride, padding)
    N, C, D, H, W = x5.shape
    K, Cg, T, R, S = w5.shape
    Kg = K // groups
    wk = _weights_with_unit_stride(w5, 1)
    M = N * OD * OH * OW
    cl = x5.stride(1) == 1
    cfg = Config(*(config or default_config("fwd", x.dtype, Cg, Kg, M, cl)))
    tile_w = 0 if cl else _tile_w(OW, cfg.bm)
    if tile_w:
        m_tiles = N * OD * -(-OH // (cfg.bm // tile_w)) * -(-OW // tile_w)
    else:
        m_tiles = -(-M // cfg.bm)
    grid = (m_tiles * -(-Kg // cfg.bn), groups)
    LAST_KERNELS["fwd"] = _fwd_kernel[grid](
        x5, wk, y5, N, Cg, D, H, W, Kg, OD, OH, OW, T, R, S, *st, *pd,
        *x5.stride(), *wk.stride(), *y5.stride(), M,
        BLOCK_M=cfg.bm, BLOCK_N=cfg.bn, BLOCK_K=cfg.bk, TILE_W=tile_w,
        EVEN_C=Cg % cfg.bk == 0, PRECISION=_precision(x.dtype, precision),
        UPCAST=_upcast(x.dtype), INT64=needs_int64(layout(x5), layout(y5)),
        num_warps=cfg.warps, num_stages=cfg.stages)
    return out


def conv_dgrad(dy, w, x_shape, stride, padding, groups=1, channels_last=False, out=None,
               config=None, precision=None):
    """Gradient of ``conv_forward`` with respect to its input: ``dx`` of
    shape ``x_shape`` (channels-last if asked, or written into ``out``)."""
    _check(torch.empty((1, w.shape[1] * groups) + (1,) * (w.ndim - 2), device="meta",
                       dtype=dy.dtype), w, stride, padding, groups)
    x_shape = tuple(int(s) for s in x_shape)
    if out is None:
        fmt = torch.contiguous_format
        if channels_last:
            fmt = torch.channels_last if len(x_shape) == 4 else torch.channels_last_3d
        out = torch.empty(x_shape, dtype=dy.dtype, device=dy.device, memory_format=fmt)
    if out.numel() == 0:
        return out
    g5, w5, dx5 = _as5d(dy), _as5d(w), _as5d(out)
    N, C, D, H, W = dx5.shape
    K, Cg, T, R, S = w5.shape
    st, pd, (OD, OH, OW) = _geometry(dx5.shape, w5.shape, stride, padding)
    Kg = K // groups
    wk = _weights_with_unit_stride(w5, 0)
    Dq, Hq, Wq = -(-D // st[0]), -(-H // st[1]), -(-W // st[2])
    Mq = N * Dq * Hq * Wq
    cl = g5.stride(1) == 1
    cfg = Config(*(config or default_config("dgrad", dy.dtype, Cg, Kg, N * OD * OH * OW, cl)))
    tile_w = 0 if cl else _tile_w(Wq, cfg.bm)
    if tile_w:
        m_tiles = N * Dq * -(-Hq // (cfg.bm // tile_w)) * -(-Wq // tile_w)
    else:
        m_tiles = -(-Mq // cfg.bm)
    grid = (m_tiles * -(-Cg // cfg.bn), groups * st[0] * st[1] * st[2])
    LAST_KERNELS["dgrad"] = _dgrad_kernel[grid](
        g5, wk, dx5, N, Cg, D, H, W, Kg, OD, OH, OW, T, R, S, *st, *pd,
        *g5.stride(), *wk.stride(), *dx5.stride(), Dq, Hq, Wq, Mq,
        BLOCK_M=cfg.bm, BLOCK_N=cfg.bn, BLOCK_K=cfg.bk, TILE_W=tile_w,
        EVEN_K=Kg % cfg.bk == 0, PRECISION=_precision(dy.dtype, precision),
        UPCAST=_upcast(dy.dtype), INT64=needs_int64(layout(g5), layout(dx5)),
        num_warps=cfg.warps, num_stages=cfg.stages)
    return out


@functools.lru_cache(maxsize=None)
def _sm_count(index):
    return torch.cuda.get_device_properties(index).multi_processor_count


WGRAD_MIN_TILES_PER_SPLIT = 8
"""Each split of the reduction covers at least this many position tiles."""


def programs_per_sm(cfg, itemsize):
    """Rough count of ``cfg``'s programs one Hopper SM holds at once: the
    least of what shared memory (the operand pipeline), registers (the
    float32 accumulator plus about 64 per thread) and warps allow."""
    smem = cfg.stages * (cfg.bm + cfg.bn) * cfg.bk * itemsize
    threads = 32 * cfg.warps
    regs = (cfg.bm * cfg.bn // threads + 64) * threads
    return max(1, min(228 * 1024 // max(1, smem), 65536 // regs, 64 // cfg.warps))


def wgrad_split(tiles, n_ptiles, ws_bytes_per_split, cap_bytes, device, slots_per_sm=1):
    """How many ranges the weight gradient's reduction is split into.

    The kernel runs ``tiles * split`` programs of ``1/split`` of the work
    each on ``SMs * slots_per_sm`` slots, so its time goes as
    ``ceil(tiles * split / slots) / split``: the smallest ``split`` within
    5% of the best such time is taken, with each range at least
    ``WGRAD_MIN_TILES_PER_SPLIT`` position tiles long and the float32
    workspace ``split * ws_bytes_per_split`` at most ``cap_bytes`` (split 1
    needs no workspace)."""
    if device.type == "cuda" and not interpreting():
        slots = slots_per_sm * _sm_count(device.index if device.index is not None
                                         else torch.cuda.current_device())
    else:
        slots = 4
    tiles = max(1, tiles)
    s_max = min(max(1, n_ptiles // WGRAD_MIN_TILES_PER_SPLIT),
                max(1, cap_bytes // max(1, ws_bytes_per_split)))
    cost = [-(-tiles * s // slots) / s for s in range(1, s_max + 1)]
    best = min(cost)
    return next(s for s, c in enumerate(cost, 1) if c <= 1.05 * best)


def wgrad_workspace_cap(x, dy):
    """The weight gradient's workspace cap in bytes: an eighth of the larger
    of the input and the output gradient, and at least 4 MiB."""
    big = max(x.numel() * x.element_size(), dy.numel() * dy.element_size())
    return max(4 * 2 ** 20, big // 8)


def conv_wgrad(x, dy, w_shape, stride, padding, groups=1, out=None, config=None,
               precision=None, split=None):
    """Gradient of ``conv_forward`` with respect to its weights, shape
    ``w_shape``, in the input dtype (or written into ``out``).

    The reduction over output positions is split into ``split`` ranges (by
    default :func:`wgrad_split`) whose float32 partial sums go to a
    workspace and are added in a fixed order by a second kernel."""
    w_shape = tuple(int(s) for s in w_shape)
    _check(x, torch.empty(w_shape, device="meta", dtype=x.dtype), stride, padding, groups)
    if out is None:
        out = torch.empty(w_shape, dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    if dy.numel() == 0:
        return out.zero_()
    x5, g5, dw5 = _as5d(x), _as5d(dy), _as5d(out)
    N, C, D, H, W = x5.shape
    K, Cg, T, R, S = dw5.shape
    st, pd, (OD, OH, OW) = _geometry(x5.shape, dw5.shape, stride, padding)
    Kg = K // groups
    P = N * OD * OH * OW
    cl = g5.stride(1) == 1
    cfg = Config(*(config or default_config("wgrad", x.dtype, Cg, Kg, P, cl)))
    tile_w = 0 if cl else _tile_w(OW, cfg.bk)
    if tile_w:
        n_ptiles = N * OD * -(-OH // (cfg.bk // tile_w)) * -(-OW // tile_w)
    else:
        n_ptiles = -(-P // cfg.bk)
    taps = T * R * S
    tiles = -(-Kg // cfg.bm) * -(-Cg // cfg.bn) * taps
    if split is None:
        split = wgrad_split(tiles * groups, n_ptiles, K * Cg * taps * 4,
                            wgrad_workspace_cap(x, dy), x.device,
                            programs_per_sm(cfg, x.element_size()))
    split = max(1, min(int(split), n_ptiles))
    per = -(-n_ptiles // split)
    split = -(-n_ptiles // per)
    direct = split == 1
    if direct:
        target = dw5
        so = (0,) + tuple(dw5.stride())
    else:
        target = torch.empty((split, K, Cg, T, R, S), dtype=torch.float32, device=x.device)
        so = tuple(target.stride())
    grid = (tiles, split, groups)
    LAST_KERNELS["wgrad"] = _wgrad_kernel[grid](
        x5, g5, target, N, Cg, D, H, W, Kg, OD, OH, OW, T, R, S, *st, *pd,
        *x5.stride(), *g5.stride(), *so, P, n_ptiles, per,
        BLOCK_M=cfg.bm, BLOCK_N=cfg.bn, BLOCK_K=cfg.bk, TILE_W=tile_w,
        PRECISION=_precision(x.dtype, precision), UPCAST=_upcast(x.dtype),
        INT64=needs_int64(layout(x5), layout(g5)), num_warps=cfg.warps, num_stages=cfg.stages)
    if not direct:
        E = K * Cg * taps
        # the reduce kernel addresses the taps of one (k, c) by one flat index
        flat_taps = ((dw5.stride(3) == S * dw5.stride(4) or R == 1)
                     and (dw5.stride(2) == R * dw5.stride(3) or T == 1))
        dst = dw5 if flat_taps else torch.empty((K, Cg, T, R, S), dtype=out.dtype,
                                                device=out.device)
        BLOCK = 1024
        _wgrad_reduce_kernel[(-(-E // BLOCK),)](
            target, dst, split, E, Cg * taps, taps, dst.stride(0), dst.stride(1),
            dst.stride(4), BLOCK=BLOCK, num_warps=4)
        if dst is not dw5:
            dw5.copy_(dst)
    return out
