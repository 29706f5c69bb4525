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

Forward: a program computes one bin (grid axis 0 runs over the bins of all
levels) for a block of planes (axis 1); the bins of one plane block are
consecutive programs, so device memory sees the input about once and the
other bins re-read it from L2. Channels-last: the block is up to one warp
of 16-byte channel vectors of one sample; each bin row is a statically
unrolled run of independent loads (columns past the bin skipped by a
uniform branch), rows in a runtime loop. NCHW: the tile is
``[BLOCK_P planes, WPAD columns]`` of one bin row, reduced along the row.
Max propagates NaN; means accumulate in float32.

Backward: a program owns ``BLOCK_P`` whole planes (consecutive channels)
and all their bins, with ``[BLOCK_P, WPAD]`` tiles of bin row segments.

* Backward, max: per bin the first maximum in row-major order within the bin
  (NaN counts as the largest) -- the same pass as the forward -- then the
  program zero-fills its planes of ``grad_input``, and then adds each bin's
  gradient at its argmax, bins in a fixed order, by the thread that owns the
  plane (a barrier before each level, whose tiles may map planes to other
  threads). No atomics; the order of the additions is fixed, so results are
  bitwise reproducible. (An element that is the maximum of
  several bins receives their sum accumulated in the output dtype.)
* Backward, mean: separable. For a chunk of ``WCH`` columns, per level and
  bin row ``bh``, ``T[bh, w] = sum over bins bw containing w of
  g[bh, bw] / (|bh| |bw|)`` (kept in registers); then each row ``h`` of
  ``grad_input`` is written once as the sum of ``T[bh]`` over the bin rows
  containing ``h``, over all levels.
"""

import triton
import triton.language as tl

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
def _max_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _plane_setup(P_TOTAL, C, sxn, sxc, INT64: tl.constexpr, BLOCK_P: tl.constexpr,
                 AXIS: tl.constexpr = 0):
    """The ``BLOCK_P`` planes of this program (grid axis ``AXIS``): flat
    index, validity, sample and channel."""
    pid = tl.program_id(AXIS)
    if INT64:
        pid = pid.to(tl.int64)
    pl = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    pvalid = pl < P_TOTAL
    n = pl // C
    c = pl % C
    return pl, pvalid, n, c


@triton.jit
def _bin_rt(i, L, N: tl.constexpr, fast):
    """``[start, end)`` of bin ``i`` (a runtime scalar) of ``N`` on an axis
    of length ``L`` (``fast``: 1 for the fast bins, 0 for kaiming)."""
    ks = (i * L) // N
    ke = ((i + 1) * L + N - 1) // N
    fs = i * (L // N)
    fe = fs + (L + N - 1) // N
    return ks + fast * (fs - ks), ke + fast * (fe - ke)


_SIZES = ["C", "H", "W", "P_TOTAL", "FAST_H", "FAST_W"]


# Sizes are not specialised on (one compiled kernel per pow2 size bucket),
# strides are (vector widths).
@triton.jit(do_not_specialize=_SIZES)
def spp_fwd_kernel(x_ptr, y_ptr, C, H, W, P_TOTAL, FAST_H, FAST_W,
                   sxn, sxc, sxh, sxw, syn, syc, syb,
                   DIMS: tl.constexpr, OFFS: tl.constexpr, WPADS: tl.constexpr,
                   MODE: tl.constexpr, CL: tl.constexpr, INT64: tl.constexpr,
                   BLOCK_P: tl.constexpr):
    """One bin (grid axis 0, all levels) of ``BLOCK_P`` planes (axis 1).

    Channels-last: the tile is ``BLOCK_P`` consecutive channels of one
    sample (16-byte vectors); each row of the bin is ``WPAD`` statically
    unrolled masked loads (independent, in flight together), rows in a
    runtime loop. NCHW: the tile is ``[BLOCK_P planes, WPAD columns]`` of one
    bin row, reduced along the columns. Bins of one plane block are
    consecutive programs, so the input is read from device memory about once
    and re-read by the other bins from L2."""
    b = tl.program_id(0)
    pl, pvalid, n, c = _plane_setup(P_TOTAL, C, sxn, sxc, INT64, BLOCK_P, 1)
    xb = x_ptr + (n * sxn + c * sxc)
    yb = y_ptr + (n * syn + c * syc + b * syb)
    for lev in tl.static_range(len(DIMS)):
        if (b >= OFFS[lev]) & (b < OFFS[lev] + DIMS[lev] * DIMS[lev]):
            _one_bin(x_ptr, y_ptr, xb, yb, pvalid, b - OFFS[lev], H, W, (FAST_H >> lev) & 1,
                     (FAST_W >> lev) & 1, sxh, sxw, DIMS[lev], WPADS[lev], MODE, CL, BLOCK_P)


@triton.jit
def _one_bin(x_ptr, y_ptr, xb, yb, pvalid, idx, H, W, fast_h, fast_w, sxh, sxw,
             NL: tl.constexpr, WPAD: tl.constexpr, MODE: tl.constexpr, CL: tl.constexpr,
             BLOCK_P: tl.constexpr):
    hs, he = _bin_rt(idx // NL, H, NL, fast_h)
    ws, we = _bin_rt(idx % NL, W, NL, fast_w)
    if MODE == 0:
        acc = tl.full([BLOCK_P], float("-inf"), tl.float32)
    else:
        acc = tl.zeros([BLOCK_P], tl.float32)
    for h in range(hs, he):
        for w0 in range(ws, we, WPAD):
            if CL:
                for dw in tl.static_range(WPAD):
                    if w0 + dw < we:   # uniform over the program: a branch, not a mask
                        ptr = xb + (h * sxh + (w0 + dw) * sxw)
                        if MODE == 0:
                            v = tl.load(ptr, mask=pvalid, other=float("-inf")).to(tl.float32)
                            acc = _max_nan(acc, v)
                        else:
                            acc += tl.load(ptr, mask=pvalid, other=0.0).to(tl.float32)
            else:
                w = w0 + tl.arange(0, WPAD)
                m = pvalid[:, None] & (w < we)[None, :]
                ptr = xb[:, None] + (h * sxh + w * sxw)[None, :]
                if MODE == 0:
                    v = tl.load(ptr, mask=m, other=float("-inf")).to(tl.float32)
                    acc = _max_nan(acc, tl.reduce(v, 1, _max_nan))
                else:
                    acc += tl.sum(tl.load(ptr, mask=m, other=0.0).to(tl.float32), 1)
    if MODE != 0:
        acc = acc / ((he - hs) * (we - ws)).to(tl.float32)
    tl.store(yb, acc.to(y_ptr.dtype.element_ty), mask=pvalid)


@triton.jit
def _argmax_combine(av, ai, bv, bi):
    """Keep the larger (NaN largest); on a tie, the smaller index."""
    a_nan = av != av
    b_nan = bv != bv
    b_wins = (bv > av) | (b_nan & ~a_nan) | (((bv == av) | (a_nan & b_nan)) & (bi < ai))
    return tl.where(b_wins, bv, av), tl.where(b_wins, bi, ai)


@triton.jit
def _level_argmax(x_ptr, xb, gb, pvalid, H, W, fast_h, fast_w, sxh, sxw, sgb,
                  NL: tl.constexpr, OFF: tl.constexpr, WPAD: tl.constexpr,
                  BLOCK_P: tl.constexpr):
    """Per bin of the level: the flat index ``h*W + w`` of its first maximum
    and its output gradient (float32), as two tuples."""
    wr = tl.arange(0, WPAD)
    codes = ()
    gs = ()
    for bh in tl.static_range(NL):
        hs, he = _bin(bh, H, NL, fast_h)
        for bw in tl.static_range(NL):
            ws, we = _bin(bw, W, NL, fast_w)
            best = tl.full([BLOCK_P], float("-inf"), tl.float32)
            code = tl.full([BLOCK_P], -1, tl.int32)
            for h in range(hs, he):
                for w0 in range(ws, we, WPAD):
                    w = w0 + wr
                    m = pvalid[:, None] & (w < we)[None, :]
                    v = tl.load(xb[:, None] + (h * sxh + w * sxw)[None, :], mask=m,
                                other=float("-inf")).to(tl.float32)
                    # masked lanes sit right of the real ones, so they lose ties
                    idx = tl.broadcast_to((h * W + w)[None, :], [BLOCK_P, WPAD])
                    rv, ri = tl.reduce((v, idx), 1, _argmax_combine)
                    take = (~(rv <= best) & (best == best)) | (code < 0)
                    best = tl.where(take, rv, best)
                    code = tl.where(take, ri, code)
            codes = codes + (code,)
            g = tl.load(gb + (OFF + bh * NL + bw) * sgb, mask=pvalid, other=0.0)
            gs = gs + (g.to(tl.float32),)
    return codes, gs


@triton.jit(do_not_specialize=_SIZES)
def spp_bwd_max_kernel(x_ptr, gy_ptr, gx_ptr, C, H, W, P_TOTAL, FAST_H, FAST_W,
                       sxn, sxc, sxh, sxw, sgn, sgc, sgb, sdn, sdc, sdh, sdw,
                       DIMS: tl.constexpr, OFFS: tl.constexpr, WPADS: tl.constexpr,
                       WZ: tl.constexpr, INT64: tl.constexpr, BLOCK_P: tl.constexpr):
    pl, pvalid, n, c = _plane_setup(P_TOTAL, C, sxn, sxc, INT64, BLOCK_P)
    xb = x_ptr + (n * sxn + c * sxc)
    gb = gy_ptr + (n * sgn + c * sgc)
    db = gx_ptr + (n * sdn + c * sdc)
    codes = ()
    gs = ()
    for lev in tl.static_range(len(DIMS)):
        lc, lg = _level_argmax(x_ptr, xb, gb, pvalid, H, W, (FAST_H >> lev) & 1,
                               (FAST_W >> lev) & 1, sxh, sxw, sgb,
                               DIMS[lev], OFFS[lev], WPADS[lev], BLOCK_P)
        codes = codes + lc
        gs = gs + lg
    # zero-fill this program's planes of grad_input
    wz = tl.arange(0, WZ)
    zero = tl.zeros([BLOCK_P, WZ], gx_ptr.dtype.element_ty)
    for h in range(0, H):
        for w0 in range(0, W, WZ):
            w = w0 + wz
            tl.store(db[:, None] + (h * sdh + w * sdw)[None, :], zero,
                     mask=pvalid[:, None] & (w < W)[None, :])
    # each bin's gradient onto its argmax, bins in order. Within a level every
    # bin's values share one register layout, so one thread owns a plane's
    # read-modify-writes; levels (tiles of other widths) may map a plane to
    # another thread, so a barrier makes the previous level's (and the
    # zero-fill's) stores visible before each level.
    for lev in tl.static_range(len(DIMS)):
        tl.debug_barrier()
        for i in tl.static_range(DIMS[lev] * DIMS[lev]):
            ptr = db + (codes[OFFS[lev] + i] // W) * sdh + (codes[OFFS[lev] + i] % W) * sdw
            cur = tl.load(ptr, mask=pvalid, other=0.0).to(tl.float32)
            tl.store(ptr, (cur + gs[OFFS[lev] + i]).to(gx_ptr.dtype.element_ty), mask=pvalid)


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
    pl, pvalid, n, c = _plane_setup(P_TOTAL, C, sgn, sgc, INT64, BLOCK_P)
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

def _cdiv(a, b):
    return -(-a // b)


def _pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def fast_bins_ok(L, n):
    """True when the 'fast' bins (window ceil(L/n), stride floor(L/n)) give
    exactly ``n`` bins on an axis of length ``L``."""
    step = L // n
    return step >= 1 and (L - _cdiv(L, n)) // step + 1 == n


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


def _max_offset(t):
    return sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0)


def _needs_int64(*tensors):
    return any(_max_offset(t) >= 2 ** 31 - 1 or t.numel() >= 2 ** 31 - 1 for t in tensors)


CONFIG_OVERRIDE = {}
_DEFAULTS = {"block_p": 32, "warps": 4, "cl_warps": 1, "wmax": 32, "bwd_block_p": 32,
             "bwd_warps": 4}


def _cfg(key):
    return CONFIG_OVERRIDE.get(key, _DEFAULTS[key])


def _wpads(W, dims):
    return tuple(min(_pow2(_cdiv(W, n) + 1), _cfg("wmax")) for n in dims)


def _fwd_block(x, C):
    """Planes per forward program: channels-last, one warp of 16-byte channel
    vectors (fewer when C is small); NCHW, ``block_p`` planes."""
    if C > 1 and x.stride(1) == 1:
        vec = 16 // x.element_size()
        return min(_pow2(C), 32 * vec * _cfg("cl_warps")), True
    return _cfg("block_p"), False


def spp_forward(x, dims, mode, implementation):
    """Spatial pyramid pooling of ``x`` ``(N, C, H, W)`` (any strides):
    returns ``(N, C, sum(n*n))`` contiguous, in ``x``'s dtype. ``mode``:
    'max' or an average mode (the mean of each bin)."""
    import torch
    dims = tuple(int(n) for n in dims)
    N, C, H, W = x.shape
    offs, B = _offsets(dims)
    y = torch.empty((N, C, B), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    fh, fw = _fast_masks(H, W, dims, implementation)
    block_p, cl = _fwd_block(x, C)
    grid = (B, _cdiv(N * C, block_p))
    spp_fwd_kernel[grid](
        x, y, C, H, W, N * C, fh, fw, *x.stride(), *y.stride(),
        DIMS=dims, OFFS=offs, WPADS=_wpads(W, dims), MODE=0 if mode == "max" else 1, CL=cl,
        INT64=_needs_int64(x, y), BLOCK_P=block_p,
        num_warps=_cfg("cl_warps") if cl else _cfg("warps"))
    return y


def _mean_chunk(W, dims, block_p):
    """Columns per chunk of the mean backward: its ``sum(n)`` row tiles of
    ``[block_p, WCH]`` float32 stay within about 64 registers per thread."""
    threads = 32 * _cfg("bwd_warps")
    budget = _pow2(max(1, 64 * threads // (sum(dims) * block_p)) + 1) // 2
    return max(4, min(_pow2(W), _cfg("wmax"), budget))


def spp_backward(x, grad_out, dims, mode, implementation):
    """Gradient of :func:`spp_forward` with respect to ``x``, in ``x``'s
    layout (channels-last stays channels-last). ``x`` is read for max only."""
    import torch
    dims = tuple(int(n) for n in dims)
    N, C, H, W = x.shape
    offs, B = _offsets(dims)
    if C > 1 and x.stride(1) == 1:
        gx = torch.empty((N, H, W, C), dtype=x.dtype, device=x.device).permute(0, 3, 1, 2)
    else:
        gx = torch.empty((N, C, H, W), dtype=x.dtype, device=x.device)
    if gx.numel() == 0:
        return gx
    fh, fw = _fast_masks(H, W, dims, implementation)
    block_p = _cfg("bwd_block_p")
    grid = (_cdiv(N * C, block_p),)
    int64 = _needs_int64(x, grad_out, gx)
    if mode == "max":
        spp_bwd_max_kernel[grid](
            x, grad_out, gx, C, H, W, N * C, fh, fw, *x.stride(), *grad_out.stride(),
            *gx.stride(), DIMS=dims, OFFS=offs, WPADS=_wpads(W, dims),
            WZ=min(_pow2(W), _cfg("wmax")), INT64=int64, BLOCK_P=block_p,
            num_warps=_cfg("bwd_warps"))
    else:
        spp_bwd_mean_kernel[grid](
            grad_out, gx, C, H, W, N * C, fh, fw, *grad_out.stride(), *gx.stride(),
            DIMS=dims, OFFS=offs, INT64=int64, BLOCK_P=block_p,
            WCH=_mean_chunk(W, dims, block_p), num_warps=_cfg("bwd_warps"))
    return gx
