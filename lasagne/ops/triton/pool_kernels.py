"""Triton kernels for N-d pooling (1D/2D/3D, all computed as 3D).

Semantics (Lasagne's, see :func:`lasagne.ops.pool.pool`): on each axis window
``o`` covers ``[o*S - P, o*S - P + K)``; modes

* ``MAX``: the maximum over the window's real elements (padding never wins;
  NaN propagates). The backward sends the gradient to the *first* maximal
  element in row-major window order ``(kd, kh, kw)`` (a NaN counts as larger
  than every number, so a window holding NaN sends it to its first NaN) --
  PyTorch's tie rule for finite values.
* ``AVG_INC``: window sum over the window clipped to the padded input
  ``[-P, L + P)`` (``K`` everywhere with ``ignore_border=True``; a clipped
  final window with ``ignore_border=False``).
* ``AVG_EXC``: window sum over the number of real elements in the window.

Layouts. The kernels read the strides, so any strided input works; two tile
shapes keep the loads coalesced for the two layouts that matter:

* planar (NCHW / NCDHW): a program owns a ``[BLOCK_A, BLOCK_B]`` tile of
  ``(rows = (n, c, d, h), columns = w)``: consecutive lanes walk along ``w``.
* channels-last (NHWC / NDHWC, ``stride(1) == 1``): the tile is
  ``(rows = (n, d, h, w) positions, columns = channels)``: each lane loads
  contiguous channels (16-byte vectors when ``C`` allows), and the spatial
  index arithmetic is done once per row.

Forward: one program per output tile; every window element is one masked
tile load (overlapping windows of neighbouring outputs hit in L1, so device
memory sees each input once), max in the input dtype, averages in float32.
Only the output is written (no index tensor).

Backward (deterministic, no atomics): every *input* element gathers the
gradient of the windows that contain it. The input is cut into blocks of
``S`` elements per axis, block ``q`` = inputs ``q*S - P + r``, ``0 <= r < S``
(its "owner" position). The windows containing input ``q*S - P + r`` are
``q - j`` for ``j*S + r < K``: the same ``NW = ceil(K/S)`` windows per axis
for the whole block, and whether window ``j`` covers phase ``r``, and at which
window offset, is known at compile time. A program takes a tile of owner
blocks; per block it loads the input neighbourhood of its ``NW^d`` windows
once (``((NW-1)*S + K)^d`` elements, max mode only), recomputes each window's
first argmax as a window offset, loads each window's output gradient once,
and then writes each of its ``S^d`` inputs exactly once: the sum, in a fixed
order, of the window gradients whose argmax (max) is this input, or the
window gradients over their divisors (averages). Inputs covered by no window
get zero. So every element of ``grad_input`` is written once by one thread,
and results are bitwise reproducible.
"""

import triton
import triton.language as tl

MAX, AVG_INC, AVG_EXC = 0, 1, 2
MODES = {"max": MAX, "average_inc_pad": AVG_INC, "average_exc_pad": AVG_EXC}


@triton.jit
def _split(a, b, C, OD, OH, OW, CL: tl.constexpr):
    """Indices of a ``[BLOCK_A, BLOCK_B]`` tile: ``(n, c, d, h, w)``, each
    broadcastable to the tile (``[BLOCK_A, 1]`` or ``[1, BLOCK_B]``)."""
    r = a[:, None]
    if CL:
        w = r % OW
        r = r // OW
        h = r % OH
        r = r // OH
        d = r % OD
        n = r // OD
        c = b[None, :]
    else:
        h = r % OH
        r = r // OH
        d = r % OD
        r = r // OD
        c = r % C
        n = r // C
        w = b[None, :]
    return n, c, d, h, w


@triton.jit
def _window_len(o, S: tl.constexpr, P: tl.constexpr, K: tl.constexpr, L, EXC: tl.constexpr):
    """Divisor factor of window ``o`` on one axis (at least 1, also for the
    windows outside the output that the backward masks out)."""
    start = o * S - P
    if EXC:
        n = tl.minimum(start + K, L) - tl.maximum(start, 0)
    else:
        n = tl.minimum(start + K, L + P) - start
    return tl.maximum(n, 1)


@triton.jit
def pool_fwd_kernel(x_ptr, y_ptr, C, D, H, W, OD, OH, OW, A_TOTAL, B_TOTAL,
                    sxn, sxc, sxd, sxh, sxw, syn, syc, syd, syh, syw,
                    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                    SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                    PD: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                    MODE: tl.constexpr, CL: tl.constexpr, INT64: tl.constexpr,
                    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    pa = tl.program_id(0)
    if INT64:
        pa = pa.to(tl.int64)
    a = pa * BLOCK_A + tl.arange(0, BLOCK_A)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    valid = (a < A_TOTAL)[:, None] & (b < B_TOTAL)[None, :]
    n, c, od, oh, ow = _split(a, b, C, OD, OH, OW, CL)
    d0 = od * SD - PD
    h0 = oh * SH - PH
    w0 = ow * SW - PW
    xb = x_ptr + (n * sxn + c * sxc)
    if MODE == 0:
        acc = tl.full([BLOCK_A, BLOCK_B], float("-inf"), tl.float32)
    else:
        acc = tl.zeros([BLOCK_A, BLOCK_B], tl.float32)
    for kd in tl.static_range(KD):
        dd = d0 + kd
        md = (dd >= 0) & (dd < D)
        for kh in tl.static_range(KH):
            hh = h0 + kh
            mh = md & (hh >= 0) & (hh < H)
            row = dd * sxd + hh * sxh
            for kw in tl.static_range(KW):
                ww = w0 + kw
                m = valid & mh & (ww >= 0) & (ww < W)
                if MODE == 0:
                    v = tl.load(xb + row + ww * sxw, mask=m, other=float("-inf"))
                    acc = tl.maximum(acc, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
                else:
                    v = tl.load(xb + row + ww * sxw, mask=m, other=0.0)
                    acc += v.to(tl.float32)
    if MODE != 0:
        ld = _window_len(od, SD, PD, KD, D, MODE == 2)
        lh = _window_len(oh, SH, PH, KH, H, MODE == 2)
        lw = _window_len(ow, SW, PW, KW, W, MODE == 2)
        acc = acc * (1.0 / (ld * lh).to(tl.float32)) * (1.0 / lw.to(tl.float32))
    yoff = n * syn + c * syc + od * syd + oh * syh + ow * syw
    tl.store(y_ptr + yoff, acc.to(y_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _first_max_code(nb, mds, mhs, mws, BASE_D: tl.constexpr, BASE_H: tl.constexpr,
                    BASE_W: tl.constexpr, EH: tl.constexpr, EW: tl.constexpr,
                    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr):
    """Window offset ``(kd*KH + kh)*KW + kw`` of the first maximum of the
    window whose elements are ``nb[(BASE_D + kd, BASE_H + kh, BASE_W + kw)]``
    of the neighbourhood (flattened with extents ``(., EH, EW)``)."""
    best = tl.zeros_like(nb[0]) + float("-inf")
    code = tl.zeros(nb[0].shape, tl.int32) - 1
    for kd in tl.static_range(KD):
        for kh in tl.static_range(KH):
            mdh = mds[BASE_D + kd] & mhs[BASE_H + kh]
            for kw in tl.static_range(KW):
                v = nb[((BASE_D + kd) * EH + BASE_H + kh) * EW + BASE_W + kw]
                m = mdh & mws[BASE_W + kw]
                # first real element; later only a strictly larger one (NaN beats
                # numbers; once the best is NaN nothing replaces it)
                take = m & ((~(v <= best) & (best == best)) | (code < 0))
                best = tl.where(take, v, best)
                code = tl.where(take, (kd * KH + kh) * KW + kw, code)
    return code


@triton.jit
def pool_bwd_kernel(x_ptr, gy_ptr, gx_ptr, C, D, H, W, OD, OH, OW, QD, QH, QW, A_TOTAL, B_TOTAL,
                    sxn, sxc, sxd, sxh, sxw, sgn, sgc, sgd, sgh, sgw,
                    sdn, sdc, sdd, sdh, sdw,
                    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                    SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                    PD: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                    NWD: tl.constexpr, NWH: tl.constexpr, NWW: tl.constexpr,
                    ED: tl.constexpr, EH: tl.constexpr, EW: tl.constexpr,
                    MODE: tl.constexpr, CL: tl.constexpr, INT64: tl.constexpr,
                    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    pa = tl.program_id(0)
    if INT64:
        pa = pa.to(tl.int64)
    a = pa * BLOCK_A + tl.arange(0, BLOCK_A)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    valid = (a < A_TOTAL)[:, None] & (b < B_TOTAL)[None, :]
    # owner block (qd, qh, qw): inputs q*S - P + r, 0 <= r < S, per axis
    n, c, qd, qh, qw = _split(a, b, C, QD, QH, QW, CL)

    codes = ()
    if MODE == 0:
        # the input neighbourhood of the NW windows q - NW + 1 .. q, per axis:
        # E = (NW - 1)*S + K elements from (q - NW + 1)*S - P
        e0d = (qd - (NWD - 1)) * SD - PD
        e0h = (qh - (NWH - 1)) * SH - PH
        e0w = (qw - (NWW - 1)) * SW - PW
        mds = ()
        for e in tl.static_range(ED):
            mds = mds + (((e0d + e) >= 0) & ((e0d + e) < D),)
        mhs = ()
        for e in tl.static_range(EH):
            mhs = mhs + (((e0h + e) >= 0) & ((e0h + e) < H),)
        mws = ()
        for e in tl.static_range(EW):
            mws = mws + (((e0w + e) >= 0) & ((e0w + e) < W),)
        xb = x_ptr + (n * sxn + c * sxc)
        nb = ()
        for ed in tl.static_range(ED):
            for eh in tl.static_range(EH):
                row = (e0d + ed) * sxd + (e0h + eh) * sxh
                mdh = valid & mds[ed] & mhs[eh]
                for ew in tl.static_range(EW):
                    v = tl.load(xb + row + (e0w + ew) * sxw, mask=mdh & mws[ew],
                                other=float("-inf"))
                    nb = nb + (v.to(tl.float32),)
        for jd in tl.static_range(NWD):
            for jh in tl.static_range(NWH):
                for jw in tl.static_range(NWW):
                    codes = codes + (_first_max_code(
                        nb, mds, mhs, mws, (NWD - 1 - jd) * SD, (NWH - 1 - jh) * SH,
                        (NWW - 1 - jw) * SW, EH, EW, KD, KH, KW),)

    # the output gradient of each window q - j (over its divisor for averages)
    gs = ()
    gb = gy_ptr + (n * sgn + c * sgc)
    for jd in tl.static_range(NWD):
        od = qd - jd
        vd = valid & (od >= 0) & (od < OD)
        for jh in tl.static_range(NWH):
            oh = qh - jh
            vdh = vd & (oh >= 0) & (oh < OH)
            for jw in tl.static_range(NWW):
                ow = qw - jw
                m = vdh & (ow >= 0) & (ow < OW)
                g = tl.load(gb + od * sgd + oh * sgh + ow * sgw, mask=m, other=0.0)
                g = g.to(tl.float32)
                if MODE != 0:
                    ld = _window_len(od, SD, PD, KD, D, MODE == 2)
                    lh = _window_len(oh, SH, PH, KH, H, MODE == 2)
                    lw = _window_len(ow, SW, PW, KW, W, MODE == 2)
                    g = g * (1.0 / (ld * lh).to(tl.float32)) * (1.0 / lw.to(tl.float32))
                gs = gs + (g,)

    # each input of the block, once
    gxb = gx_ptr + (n * sdn + c * sdc)
    for rd in tl.static_range(SD):
        idd = qd * SD - PD + rd
        md = valid & (idd >= 0) & (idd < D)
        for rh in tl.static_range(SH):
            ih = qh * SH - PH + rh
            mdh = md & (ih >= 0) & (ih < H)
            for rw in tl.static_range(SW):
                iw = qw * SW - PW + rw
                m = mdh & (iw >= 0) & (iw < W)
                acc = tl.zeros([BLOCK_A, BLOCK_B], tl.float32)
                for jd in tl.static_range(NWD):
                    for jh in tl.static_range(NWH):
                        for jw in tl.static_range(NWW):
                            if (jd * SD + rd < KD) and (jh * SH + rh < KH) and (jw * SW + rw < KW):
                                # (constexpr indices: window j, and the offset of
                                # this input inside it)
                                if MODE == 0:
                                    acc += tl.where(
                                        codes[(jd * NWH + jh) * NWW + jw]
                                        == ((jd * SD + rd) * KH + jh * SH + rh) * KW + jw * SW + rw,
                                        gs[(jd * NWH + jh) * NWW + jw], 0.0)
                                else:
                                    acc += gs[(jd * NWH + jh) * NWW + jw]
                tl.store(gxb + idd * sdd + ih * sdh + iw * sdw,
                         acc.to(gx_ptr.dtype.element_ty), mask=m)


# -- host side ------------------------------------------------------------------------------------

def _cdiv(a, b):
    return -(-a // b)


def _pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def _pow2_floor(n):
    return 1 << (max(1, int(n)).bit_length() - 1)


def _max_offset(t):
    return sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0)


def _needs_int64(*tensors):
    return any(_max_offset(t) >= 2 ** 31 - 1 or t.numel() >= 2 ** 31 - 1 for t in tensors)


def _as_5d(t, nd):
    """A ``(N, C, D, H, W)`` view of a ``(N, C, *spatial)`` tensor with
    ``nd`` spatial axes (size-1 axes in front)."""
    for _ in range(3 - nd):
        t = t.unsqueeze(2)
    return t


def _as_3(v, nd, fill):
    return (fill,) * (3 - nd) + tuple(int(e) for e in v)


def channels_last(x):
    """True when ``x`` is laid out channels-last (the channel stride is 1)."""
    return x.shape[1] > 1 and x.stride(1) == 1


def empty_like_layout(x, shape):
    """An empty tensor of ``shape`` (same ndim as ``x``) in ``x``'s layout:
    channels-last when ``x`` is, contiguous otherwise."""
    import torch
    if channels_last(x):
        return torch.empty((shape[0],) + tuple(shape[2:]) + (shape[1],), dtype=x.dtype,
                           device=x.device).movedim(-1, 1)
    return torch.empty(shape, dtype=x.dtype, device=x.device)


# Tile configuration. ``CONFIG_OVERRIDE`` (a dict updated by benchmarks) takes
# precedence: keys 'fwd_elems', 'bwd_regs', 'num_warps', 'max_block_b'.
CONFIG_OVERRIDE = {}

_DEFAULTS = {"fwd_elems": 2048, "fwd_warps": 4, "bwd_regs": 128, "bwd_warps": 4,
             "max_block_b": 128}


def _cfg(key):
    return CONFIG_OVERRIDE.get(key, _DEFAULTS[key])


def _tiles(cl, C, last, elems, x):
    if cl:
        cap = 128 if x.element_size() <= 2 else 64
        block_b = min(_pow2(C), cap, _cfg("max_block_b"))
    else:
        block_b = min(_pow2(last), _cfg("max_block_b"))
    block_a = max(1, elems // block_b)
    return block_a, block_b


def pool_forward(x, pool_size, stride, pad, out_size, mode):
    """Pool ``x`` ``(N, C, *spatial)`` (1 to 3 spatial axes).

    ``pool_size``, ``stride``, ``pad``, ``out_size``: tuples of ints, one per
    spatial axis (``out_size`` from :func:`lasagne.ops.lengths.pool_output_length`,
    which also covers ``ignore_border=False``). Returns ``y`` in ``x``'s
    layout and dtype.
    """
    nd = x.ndim - 2
    N, C = x.shape[:2]
    y = empty_like_layout(x, (N, C) + tuple(out_size))
    if y.numel() == 0:
        return y
    x5, y5 = _as_5d(x, nd), _as_5d(y, nd)
    K = _as_3(pool_size, nd, 1)
    S = _as_3(stride, nd, 1)
    P = _as_3(pad, nd, 0)
    D, H, W = x5.shape[2:]
    OD, OH, OW = y5.shape[2:]
    cl = channels_last(x)
    if cl:
        a_total, b_total = N * OD * OH * OW, C
    else:
        a_total, b_total = N * C * OD * OH, OW
    block_a, block_b = _tiles(cl, C, OW, _cfg("fwd_elems"), x)
    grid = (_cdiv(a_total, block_a), _cdiv(b_total, block_b))
    pool_fwd_kernel[grid](
        x5, y5, C, D, H, W, OD, OH, OW, a_total, b_total, *x5.stride(), *y5.stride(),
        KD=K[0], KH=K[1], KW=K[2], SD=S[0], SH=S[1], SW=S[2], PD=P[0], PH=P[1], PW=P[2],
        MODE=MODES[mode], CL=cl, INT64=_needs_int64(x5, y5),
        BLOCK_A=block_a, BLOCK_B=block_b, num_warps=_cfg("fwd_warps"))
    return y


def backward_geometry(pool_size, stride, nd):
    """Per-axis ``(NW, E)`` of the backward: windows per owner block and the
    neighbourhood extent, for the 3D-padded parameters."""
    K = _as_3(pool_size, nd, 1)
    S = _as_3(stride, nd, 1)
    NW = tuple(_cdiv(k, s) for k, s in zip(K, S))
    E = tuple((w - 1) * s + k for w, s, k in zip(NW, S, K))
    return NW, E


def pool_backward(x, grad_out, pool_size, stride, pad, mode):
    """Gradient of :func:`pool_forward` with respect to ``x``: a new tensor in
    ``x``'s layout. ``x`` is read only for max pooling (the argmax is
    recomputed); ``grad_out`` may have any strides."""
    nd = x.ndim - 2
    N, C = x.shape[:2]
    gx = empty_like_layout(x, tuple(x.shape))
    if gx.numel() == 0:
        return gx
    x5, g5, d5 = _as_5d(x, nd), _as_5d(grad_out, nd), _as_5d(gx, nd)
    K = _as_3(pool_size, nd, 1)
    S = _as_3(stride, nd, 1)
    P = _as_3(pad, nd, 0)
    D, H, W = x5.shape[2:]
    OD, OH, OW = g5.shape[2:]
    QD, QH, QW = (_cdiv(L + p, s) for L, p, s in zip((D, H, W), P, S))
    NW, E = backward_geometry(pool_size, stride, nd)
    cl = channels_last(x)
    if cl:
        a_total, b_total = N * QD * QH * QW, C
    else:
        a_total, b_total = N * C * QD * QH, QW
    m = MODES[mode]
    nw = NW[0] * NW[1] * NW[2]
    live = 2 * nw + (E[0] * E[1] * E[2] if m == MAX else 0)
    warps = _cfg("bwd_warps")
    per_thread = max(1, min(8, _pow2_floor(_cfg("bwd_regs") // max(1, live))))
    block_a, block_b = _tiles(cl, C, QW, per_thread * 32 * warps, x)
    grid = (_cdiv(a_total, block_a), _cdiv(b_total, block_b))
    pool_bwd_kernel[grid](
        x5, g5, d5, C, D, H, W, OD, OH, OW, QD, QH, QW, a_total, b_total,
        *x5.stride(), *g5.stride(), *d5.stride(),
        KD=K[0], KH=K[1], KW=K[2], SD=S[0], SH=S[1], SW=S[2], PD=P[0], PH=P[1], PW=P[2],
        NWD=NW[0], NWH=NW[1], NWW=NW[2], ED=E[0], EH=E[1], EW=E[2],
        MODE=m, CL=cl, INT64=_needs_int64(x5, g5, d5),
        BLOCK_A=block_a, BLOCK_B=block_b, num_warps=warps)
    return gx
