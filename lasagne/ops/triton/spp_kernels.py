"""Triton kernels for spatial pyramid pooling (one pass over the input for
all pyramid levels, forward and backward).

Semantics: :func:`lasagne.ops.spp.spatial_pyramid_pool`. Output ``(N, C, B)``
with ``B = sum(n*n)``, levels in order, each level's ``n x n`` bins
row-major. Bins on an axis of length ``L`` (exact integer arithmetic, in the
kernel, from ``L`` and ``n``):

* kaiming: bin ``i`` = ``[floor(i*L/n), ceil((i+1)*L/n))``;
* fast: ``[i*floor(L/n), i*floor(L/n) + ceil(L/n))``, on the axes (per
  level) where the host found that it gives ``n`` bins (bit ``l`` of
  ``FAST_H``/``FAST_W``); kaiming elsewhere.

Forward, one pass: a program owns ``BLOCK_P`` planes (consecutive
``(n, c)``; channels of one sample in a channels-last batch) and all their
bins, and sweeps the planes once in ``[BLOCK_P, HCH, WCH]`` chunks. Per
chunk and level it reduces the columns of each bin column (``n`` reductions
over the chunk), then the rows of each bin (``n*n`` reductions of those), and
folds the results into the bins' accumulators (registers). Every input
element is loaded once (a planar batch's max runs on a channels-last copy:
one more read and write of the input, faster than the planar sweep, see
:func:`spp_forward`). Max propagates NaN (and returns +0.0 for a bin whose
maximum is a zero of either sign); means accumulate in float32. With
``CODES`` the max forward also writes each bin's first maximum as the flat
index ``h*W + w`` (int32; NaN counts as the largest, ties go to the smaller
index), which the backward reads instead of the input.

Backward, max: a program owns ``BLOCK_P`` whole planes: it zero-fills them,
then adds each bin's gradient at the bin's code, bins in a fixed order, by
the thread that owns the plane (a barrier after the zero-fill, whose tiles
map planes to other threads). No atomics; the order of the additions is
fixed, so results are bitwise reproducible. (An element that is the maximum
of several bins receives their sum accumulated in the output dtype.)

* Backward, mean: separable. For a chunk of ``WCH`` columns, per level and
  bin row ``bh``, ``T[bh, w] = sum over bins bw containing w of
  g[bh, bw] / (|bh| |bw|)`` (kept in registers); then each row ``h`` of
  ``grad_input`` is written once as the sum of ``T[bh]`` over the bin rows
  containing ``h``, over all levels.
"""

import functools

import torch
import triton
import triton.language as tl

from .launch import (KernelLaunch, cdiv, config_key, empty_in_layout, is_channels_last,
                     layout_strides, needs_int64, pow2, pow2_floor)

SPP_MAX, SPP_MEAN = 0, 1


@triton.jit
def _bin(i: tl.constexpr, L, N: tl.constexpr, fast):
    """``[start, end)`` of bin ``i`` of ``N`` on an axis of length ``L``
    (``fast``: 1 for the fast bins, 0 for kaiming; scalars)."""
    ks = (i * L) // N
    ke = ((i + 1) * L + N - 1) // N
    fs = i * (L // N)
    fe = fs + (L + N - 1) // N
    return ks + fast * (fs - ks), ke + fast * (fe - ke)


@triton.jit
def _plane_setup(P_TOTAL, C, INT64: tl.constexpr, EVEN_P: tl.constexpr,
                 BLOCK_P: tl.constexpr):
    """The ``BLOCK_P`` planes of this program: validity, sample and channel.
    With ``EVEN_P`` (``BLOCK_P`` divides the channel count) the planes are
    consecutive channels of one sample, all valid: a scalar sample, a
    channel run the compiler knows to be contiguous and aligned, and a
    constant mask, so that channels-last accesses vectorize."""
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    first = pid * BLOCK_P
    if EVEN_P:
        n = first // C
        c = tl.multiple_of(first % C, BLOCK_P) + tl.arange(0, BLOCK_P)
        pvalid = tl.full([BLOCK_P], 1, tl.int1)
    else:
        pl = first + tl.arange(0, BLOCK_P)
        pvalid = pl < P_TOTAL
        n = pl // C
        c = pl % C
    return pvalid, n, c


_SIZES = ["C", "H", "W", "P_TOTAL", "FAST_H", "FAST_W"]


@triton.jit
def _init_level(NL: tl.constexpr, MODE: tl.constexpr, CODES: tl.constexpr,
                BLOCK_P: tl.constexpr):
    """The accumulators of one level's ``NL*NL`` bins: sums (means), order
    keys (max) or, with codes, 64-bit keys ``key << 32 | (2**31-1 - flat)``
    whose maximum is the bin's largest value at its smallest flat index."""
    accs = ()
    for i in tl.static_range(NL * NL):
        if MODE != 0:
            accs = accs + (tl.zeros([BLOCK_P], tl.float32),)
        elif CODES:
            accs = accs + (tl.full([BLOCK_P], -(2 ** 63), tl.int64),)
        else:
            accs = accs + (tl.full([BLOCK_P], -(2 ** 31), tl.int32),)
    return accs


@triton.jit
def _fold_level(accs, v, h, w, H, W, fast_h, fast_w, NL: tl.constexpr, MODE: tl.constexpr):
    """Fold one ``[BLOCK_P, HCH, WCH]`` chunk ``v`` (rows ``h``, columns
    ``w``; sums, or the keys of :func:`_init_level`) into a level's bins:
    each bin column reduced over the chunk's columns, then each bin over
    the chunk's rows. Elements outside a bin count as 0 (sums) or as the
    smallest key."""
    cvs = ()
    for bw in tl.static_range(NL):
        ws, we = _bin(bw, W, NL, fast_w)
        wm = ((w >= ws) & (w < we))[None, None, :]
        if MODE != 0:
            cvs = cvs + (tl.sum(tl.where(wm, v, 0.0), 2),)
        else:
            cvs = cvs + (tl.max(tl.where(wm, v, _lowest(v)), 2),)
    new_a = ()
    for bh in tl.static_range(NL):
        hs, he = _bin(bh, H, NL, fast_h)
        hm = ((h >= hs) & (h < he))[None, :]
        for bw in tl.static_range(NL):
            if MODE != 0:
                new_a = new_a + (accs[bh * NL + bw] + tl.sum(tl.where(hm, cvs[bw], 0.0), 1),)
            else:
                rv = tl.max(tl.where(hm, cvs[bw], _lowest(cvs[bw])), 1)
                new_a = new_a + (tl.maximum(accs[bh * NL + bw], rv),)
    return new_a


@triton.jit
def _lowest(k):
    """The smallest key of ``k``'s integer type."""
    if k.dtype == tl.int64:
        return -(2 ** 63)
    else:
        return -(2 ** 31)


@triton.jit
def _store_level(yb, cb, accs, pvalid, H, W, fast_h, fast_w, syb,
                 NL: tl.constexpr, OFF: tl.constexpr, MODE: tl.constexpr, CODES: tl.constexpr):
    for bh in tl.static_range(NL):
        hs, he = _bin(bh, H, NL, fast_h)
        for bw in tl.static_range(NL):
            ws, we = _bin(bw, W, NL, fast_w)
            acc = accs[bh * NL + bw]
            if MODE != 0:
                out = acc / ((he - hs) * (we - ws)).to(tl.float32)
            elif CODES:
                out = _key_value((acc >> 32).to(tl.int32))
                code = 0x7FFFFFFF - (acc & 0x7FFFFFFF).to(tl.int32)
                tl.store(cb + (OFF + bh * NL + bw) * syb, code, mask=pvalid)
            else:
                out = _key_value(acc)
            tl.store(yb + (OFF + bh * NL + bw) * syb, out.to(yb.dtype.element_ty), mask=pvalid)


@triton.jit
def _order_key(v):
    """An int32 whose signed order is ``v``'s (float32) order, NaN (made
    positive) above everything and -0.0 equal to +0.0: max reductions then
    run on integers (native, NaN propagating)."""
    v = tl.where(v != v, float("nan"), v + 0.0)
    b = v.to(tl.int32, bitcast=True)
    return tl.where(b < 0, b ^ 0x7FFFFFFF, b)


@triton.jit
def _key_value(k):
    """The float32 of an :func:`_order_key` (NaN stays NaN)."""
    b = tl.where(k < 0, k ^ 0x7FFFFFFF, k)
    return b.to(tl.float32, bitcast=True)


# Sizes are not specialised on (one compiled kernel per pow2 size bucket),
# strides are (vector widths).
@triton.jit(do_not_specialize=_SIZES)
def spp_fwd_kernel(x_ptr, y_ptr, c_ptr, C, H, W, P_TOTAL, FAST_H, FAST_W,
                   sxn, sxc, sxh, sxw, syn, syc, syb,
                   DIMS: tl.constexpr, OFFS: tl.constexpr,
                   MODE: tl.constexpr, CODES: tl.constexpr, INT64: tl.constexpr,
                   BLOCK_P: tl.constexpr, HCH: tl.constexpr, WCH: tl.constexpr):
    """All bins of ``BLOCK_P`` planes in one sweep over them (module doc).
    ``c_ptr`` (with ``CODES``) has ``y``'s strides. Accumulators: a tuple
    per level of its bins' ``[BLOCK_P]`` vectors. Max reduces integer order
    keys (:func:`_order_key`), with codes 64-bit keys that carry the flat
    index, so that every reduction is a plain integer maximum. The planes
    are not taken as one aligned channel run (``EVEN_P``): vector loads
    along the channels would give each thread that many planes' bins to
    hold (compiled for sm_90, [6, 3, 2, 1] with codes on 512 channels: 254
    registers without, a 1.5 kB (float32) or 3.3 kB (bfloat16) spill per
    thread with)."""
    pvalid, n, c = _plane_setup(P_TOTAL, C, INT64, False, BLOCK_P)
    xb = x_ptr + (n * sxn + c * sxc)
    hr = tl.arange(0, HCH)
    wr = tl.arange(0, WCH)
    accs = ()
    for lev in tl.static_range(len(DIMS)):
        accs = accs + (_init_level(DIMS[lev], MODE, CODES, BLOCK_P),)
    for h0 in range(0, H, HCH):
        h = h0 + hr
        for w0 in range(0, W, WCH):
            w = w0 + wr
            m = pvalid[:, None, None] & ((h < H)[:, None] & (w < W)[None, :])[None, :, :]
            ptr = xb[:, None, None] + (h[:, None] * sxh + w[None, :] * sxw)[None, :, :]
            v = tl.load(ptr, mask=m, other=0.0).to(tl.float32)
            if MODE == 0:
                v = _order_key(v)
                if CODES:
                    flat = (h[:, None] * W + w[None, :])[None, :, :]
                    v = (v.to(tl.int64) << 32) | (0x7FFFFFFF - flat).to(tl.int64)
            new_a = ()
            for lev in tl.static_range(len(DIMS)):
                new_a = new_a + (_fold_level(accs[lev], v, h, w, H, W, (FAST_H >> lev) & 1,
                                             (FAST_W >> lev) & 1, DIMS[lev], MODE),)
            accs = new_a
    yb = y_ptr + (n * syn + c * syc)
    cb = c_ptr + (n * syn + c * syc)
    for lev in tl.static_range(len(DIMS)):
        _store_level(yb, cb, accs[lev], pvalid, H, W, (FAST_H >> lev) & 1,
                     (FAST_W >> lev) & 1, syb, DIMS[lev], OFFS[lev], MODE, CODES)


@triton.jit(do_not_specialize=_SIZES)
def spp_bwd_max_kernel(c_ptr, gy_ptr, gx_ptr, C, H, W, P_TOTAL,
                       scn, scc, scb, sgn, sgc, sgb, sdn, sdc, sdh, sdw,
                       NBINS: tl.constexpr, WZ: tl.constexpr, INT64: tl.constexpr,
                       EVEN_P: tl.constexpr, BLOCK_P: tl.constexpr):
    pvalid, n, c = _plane_setup(P_TOTAL, C, INT64, EVEN_P, BLOCK_P)
    cb = c_ptr + (n * scn + c * scc)
    gb = gy_ptr + (n * sgn + c * sgc)
    db = gx_ptr + (n * sdn + c * sdc)
    # zero-fill this program's planes of grad_input
    wz = tl.arange(0, WZ)
    zero = tl.zeros([BLOCK_P, WZ], gx_ptr.dtype.element_ty)
    for h in range(0, H):
        for w0 in range(0, W, WZ):
            w = w0 + wz
            tl.store(db[:, None] + (h * sdh + w * sdw)[None, :], zero,
                     mask=pvalid[:, None] & (w < W)[None, :])
    # the zero-fill's tiles map planes to other threads than the [BLOCK_P]
    # vectors below, whose elements one thread owns for every bin
    tl.debug_barrier()
    for i in tl.static_range(NBINS):
        code = tl.load(cb + i * scb, mask=pvalid, other=0)
        g = tl.load(gb + i * sgb, mask=pvalid, other=0.0).to(tl.float32)
        ptr = db + (code // W) * sdh + (code % W) * sdw
        cur = tl.load(ptr, mask=pvalid, other=0.0).to(tl.float32)
        tl.store(ptr, (cur + g).to(gx_ptr.dtype.element_ty), mask=pvalid)


@triton.jit
def _level_rows(gb, pvalid, wcol, H, W, fast_h, fast_w, sgb,
                NL: tl.constexpr, OFF: tl.constexpr, BLOCK_P: tl.constexpr, WCH: tl.constexpr):
    """For each bin row ``bh`` of the level: ``T[bh]`` over the columns
    ``wcol`` (see the module doc), and the row range ``[hs, he)``."""
    ts = ()
    hss = ()
    hes = ()
    for bh in tl.static_range(NL):
        hs, he = _bin(bh, H, NL, fast_h)
        t = tl.zeros([BLOCK_P, WCH], tl.float32)
        for bw in tl.static_range(NL):
            ws, we = _bin(bw, W, NL, fast_w)
            g = tl.load(gb + (OFF + bh * NL + bw) * sgb, mask=pvalid, other=0.0).to(tl.float32)
            g = g / ((he - hs) * (we - ws)).to(tl.float32)
            inside = (wcol >= ws) & (wcol < we)
            t += tl.where(inside[None, :], g[:, None], 0.0)
        ts = ts + (t,)
        hss = hss + (hs,)
        hes = hes + (he,)
    return ts, hss, hes


@triton.jit(do_not_specialize=_SIZES)
def spp_bwd_mean_kernel(gy_ptr, gx_ptr, C, H, W, P_TOTAL, FAST_H, FAST_W,
                        sgn, sgc, sgb, sdn, sdc, sdh, sdw,
                        DIMS: tl.constexpr, OFFS: tl.constexpr,
                        INT64: tl.constexpr, BLOCK_P: tl.constexpr, WCH: tl.constexpr):
    pvalid, n, c = _plane_setup(P_TOTAL, C, INT64, False, BLOCK_P)
    gb = gy_ptr + (n * sgn + c * sgc)
    db = gx_ptr + (n * sdn + c * sdc)
    for w0 in range(0, W, WCH):
        wcol = w0 + tl.arange(0, WCH)
        ts = ()
        hss = ()
        hes = ()
        for lev in tl.static_range(len(DIMS)):
            lt, lhs, lhe = _level_rows(gb, pvalid, wcol, H, W, (FAST_H >> lev) & 1,
                                       (FAST_W >> lev) & 1, sgb,
                                       DIMS[lev], OFFS[lev], BLOCK_P, WCH)
            ts = ts + lt
            hss = hss + lhs
            hes = hes + lhe
        m = pvalid[:, None] & (wcol < W)[None, :]
        for h in range(0, H):
            acc = tl.zeros([BLOCK_P, WCH], tl.float32)
            for r in tl.static_range(len(ts)):
                if (h >= hss[r]) & (h < hes[r]):
                    acc += ts[r]
            tl.store(db[:, None] + (h * sdh + wcol * sdw)[None, :],
                     acc.to(gx_ptr.dtype.element_ty), mask=m)


# -- host side ------------------------------------------------------------------------------------

def fast_bins_ok(L, n):
    """True when the 'fast' bins (window ceil(L/n), stride floor(L/n)) give
    exactly ``n`` bins on an axis of length ``L``."""
    step = L // n
    return step >= 1 and (L - cdiv(L, n)) // step + 1 == n


def _fast_masks(H, W, dims, implementation):
    if implementation != "fast":
        return 0, 0
    fh = sum(1 << i for i, n in enumerate(dims) if fast_bins_ok(H, n))
    fw = sum(1 << i for i, n in enumerate(dims) if fast_bins_ok(W, n))
    return fh, fw


def _offsets(dims):
    offs, o = [], 0
    for n in dims:
        offs.append(o)
        o += n * n
    return tuple(offs), o


# Tile configuration. ``CONFIG_OVERRIDE`` (a dict updated by benchmarks) takes
# precedence over ``_DEFAULTS``:
#   tile         elements per forward chunk ``[BLOCK_P, HCH, WCH]``
#   warps        warps per forward program
#   cl_block_p   planes (channels) per forward program, channels-last
#   wmax         widest chunk / tile along w
#   bwd_block_p, bwd_warps   planes and warps per backward program
CONFIG_OVERRIDE = {}
_DEFAULTS = {"tile": 2048, "warps": 4, "cl_block_p": 32, "wmax": 32, "bwd_block_p": 32,
             "bwd_warps": 4}


def _cfg(key):
    return CONFIG_OVERRIDE.get(key, _DEFAULTS[key])


def _fwd_chunk(H, W, C, cl):
    """``(BLOCK_P, HCH, WCH)`` of the forward sweep: about ``tile`` elements;
    channels-last takes a block of channels (contiguous) and fewer rows,
    planar batches whole row segments and as many planes as fit."""
    tile = _cfg("tile")
    if cl:
        block_p = min(pow2(C), _cfg("cl_block_p"))
        wch = min(pow2(W), 16)
        hch = max(1, min(pow2(H), pow2_floor(tile // (block_p * wch))))
        return block_p, hch, wch
    wch = min(pow2(W), _cfg("wmax"))
    hch = min(pow2(H), 16)
    return max(1, pow2_floor(tile // (hch * wch))), hch, wch


@functools.lru_cache(maxsize=1024)
def _forward_plan(x_shape, x_strides, dims, mode, implementation, codes, config):
    """Everything :func:`spp_forward` passes to its kernel but the tensors:
    ``(y_shape, launch)``."""
    N, C, H, W = x_shape
    offs, B = _offsets(dims)
    y_shape = (N, C, B)
    y_strides = (C * B, B, 1)
    fh, fw = _fast_masks(H, W, dims, implementation)
    block_p, hch, wch = _fwd_chunk(H, W, C, is_channels_last(x_shape, x_strides))
    args = (C, H, W, N * C, fh, fw) + tuple(x_strides) + y_strides
    meta = dict(DIMS=dims, OFFS=offs, MODE=0 if mode == "max" else 1, CODES=codes,
                INT64=needs_int64((x_shape, x_strides), (y_shape, y_strides)),
                BLOCK_P=block_p, HCH=hch, WCH=wch, num_warps=_cfg("warps"))
    return y_shape, KernelLaunch(spp_fwd_kernel, (cdiv(N * C, block_p),), args, meta)


def spp_forward(x, dims, mode, implementation, codes=False):
    """Spatial pyramid pooling of ``x`` ``(N, C, H, W)`` (any strides):
    returns ``(N, C, sum(n*n))`` contiguous, in ``x``'s dtype. ``mode``:
    'max' or an average mode (the mean of each bin). With ``codes=True``
    (max only) returns ``(y, codes)``: each bin's first maximum as the flat
    index ``h*W + w`` (int32, ``y``'s shape) for :func:`spp_backward`. The
    launch parameters of a shape are computed once (``_forward_plan``)."""
    if codes and mode != "max":
        raise ValueError("spp_forward: codes=True is for max pooling, got mode {!r}".format(mode))
    if mode == "max" and x.shape[1] > 1 and not is_channels_last(x.shape, x.stride()):
        # Planar max: sweep a channels-last copy. The planar sweep keeps every
        # bin of BLOCK_P planes in registers (for [6, 3, 2, 1]: 255 registers
        # per thread and a 392-byte spill with codes); the channels-last one
        # is faster including the copy in every case measured on an H100
        # (e.g. [6, 3, 2, 1] on 32x512x17x23 float32: 0.160 + ~0.02 ms vs
        # 0.286 ms forward, and the codes forward ~1.2 ms planar).
        x = x.contiguous(memory_format=torch.channels_last)
    y_shape, launch = _forward_plan(
        tuple(x.shape), x.stride(), tuple(int(n) for n in dims), mode, implementation,
        bool(codes), config_key(CONFIG_OVERRIDE))
    y = torch.empty(y_shape, dtype=x.dtype, device=x.device)
    c = torch.empty(y_shape, dtype=torch.int32, device=x.device) if codes else None
    if y.numel() == 0:
        return (y, c) if codes else y
    launch(x, y, c if codes else y)
    return (y, c) if codes else y


def _mean_chunk(W, dims, block_p):
    """Columns per chunk of the mean backward: its ``sum(n)`` row tiles of
    ``[block_p, WCH]`` float32 stay within about 64 registers per thread."""
    threads = 32 * _cfg("bwd_warps")
    budget = pow2(max(1, 64 * threads // (sum(dims) * block_p)) + 1) // 2
    return max(4, min(pow2(W), _cfg("wmax"), budget))


@functools.lru_cache(maxsize=1024)
def _backward_plan(input_shape, input_cl, g_strides, c_strides, dims, mode, implementation,
                   config):
    """Everything :func:`spp_backward` passes to its kernel but the tensors,
    as a :class:`~lasagne.ops.triton.launch.KernelLaunch`; max when
    ``c_strides`` is given."""
    N, C, H, W = input_shape
    offs, B = _offsets(dims)
    d_strides = layout_strides(input_shape, input_cl)
    block_p = _cfg("bwd_block_p")
    grid = (cdiv(N * C, block_p),)
    g_layout = ((N, C, B), g_strides)
    if c_strides is not None:
        args = (C, H, W, N * C) + tuple(c_strides) + tuple(g_strides) + d_strides
        meta = dict(NBINS=B, WZ=min(pow2(W), _cfg("wmax")),
                    INT64=needs_int64(g_layout, ((N, C, B), c_strides), (input_shape, d_strides)),
                    EVEN_P=C % block_p == 0, BLOCK_P=block_p, num_warps=_cfg("bwd_warps"))
        return KernelLaunch(spp_bwd_max_kernel, grid, args, meta)
    fh, fw = _fast_masks(H, W, dims, implementation)
    args = (C, H, W, N * C, fh, fw) + tuple(g_strides) + d_strides
    meta = dict(DIMS=dims, OFFS=offs, INT64=needs_int64(g_layout, (input_shape, d_strides)),
                BLOCK_P=block_p, WCH=_mean_chunk(W, dims, block_p), num_warps=_cfg("bwd_warps"))
    return KernelLaunch(spp_bwd_mean_kernel, grid, args, meta)


def spp_backward(grad_out, input_shape, input_cl, dims, mode, implementation, codes=None):
    """Gradient of :func:`spp_forward` with respect to its input, of shape
    ``input_shape`` ``(N, C, H, W)``, channels-last when ``input_cl``, in
    ``grad_out``'s dtype. Max takes the ``codes`` of
    ``spp_forward(..., codes=True)``; ``grad_out`` may have any strides."""
    if (codes is None) != (mode != "max"):
        raise ValueError("spp_backward: max pooling needs the forward's codes, averages none")
    gx = empty_in_layout(tuple(input_shape), input_cl, grad_out.dtype, grad_out.device)
    if gx.numel() == 0:
        return gx
    launch = _backward_plan(
        tuple(input_shape), bool(input_cl), grad_out.stride(),
        None if codes is None else codes.stride(), tuple(int(n) for n in dims), mode,
        implementation, config_key(CONFIG_OVERRIDE))
    if codes is not None:
        launch(codes, grad_out, gx)
    else:
        launch(grad_out, gx)
    return gx
