"""Triton kernels for N-d pooling (1D/2D/3D, all computed as 3D).

Semantics (Lasagne's, see :func:`lasagne.ops.pool.pool`): on each axis window
``o`` covers ``[o*S - P, o*S - P + K)``; modes

* ``MAX``: the maximum over the window's real elements (padding never wins;
  NaN propagates). The backward sends the gradient to the *first* maximal
  element in row-major window order ``(kd, kh, kw)`` -- PyTorch's tie rule.
* ``AVG_INC``: window sum over the window clipped to the padded input
  ``[-P, L + P)`` (``K`` everywhere with ``ignore_border=True``; a clipped
  final window with ``ignore_border=False``).
* ``AVG_EXC``: window sum over the number of real elements in the window.

Layouts. The kernels read the strides, so any strided input works; two tile
shapes keep the loads coalesced for the two layouts that matter:

* planar (NCHW / NCDHW): a program owns a ``[BLOCK_A, BLOCK_B]`` tile of
  ``(rows = (n, c, d, h-group), columns = w)``: consecutive lanes walk along w.
* channels-last (NHWC / NDHWC, ``stride(1) == 1``): the tile is
  ``(rows = (n, d, h-group, w) positions, columns = channels)``: each lane
  loads contiguous channels (16-byte vectors when ``C`` allows), and the
  spatial index arithmetic is done once per row.

Row groups (the haloed tile). Every tile element stands for ``R``
consecutive rows along h: the ``(R-1)*S + K`` input rows they need are loaded
once (each a run of ``KW`` loads that L1 serves for neighbouring columns) and
folded into all the output rows whose windows hold them, so overlapping
windows (3x3 stride 1 or 2) do not reload their shared rows.

No masked loads for the spatial borders: out-of-range indices are clamped
to the nearest edge. For max that is exact (every window holds a real
element, so the clamped edge element lies in the same window); averages
weight the clamped columns/rows by 0.

Forward: the output, max in float32 with NaN propagated, averages
accumulated in float32. For a max pooling whose backward will run,
:func:`pool_forward` with ``codes=True`` also writes every window's first
maximum as one byte (its window offset ``(kd*KH + kh)*KW + kw``, 255 for a
window of padding and NaN only): the backward then reads one byte per output
instead of the input. No int64 index tensor is ever written.

Backward (deterministic, no atomics): every *input* element gathers the
gradient of the windows that contain it. The input is cut into blocks of
``S`` elements per axis, block ``q`` = inputs ``q*S - P + r``, ``0 <= r < S``
(its "owner" position). The windows containing input ``q*S - P + r`` are
``q - j`` for ``j*S + r < K``: the same ``NW = ceil(K/S)`` windows per axis
for the whole block, and whether window ``j`` covers phase ``r``, and at which
window offset, is known at compile time. A program takes a tile of owner
blocks (grouped by ``R`` along h like the forward), loads each window's
output gradient (and, for max, its code) once, and writes each input exactly
once: the sum, in a fixed order, of the gradients of the windows whose first
maximum is this input (max), or of the window gradients over their divisors
(averages). Inputs covered by no window get zero. Every element of
``grad_input`` is written once by one thread: results are bitwise
reproducible.

Windows holding NaN: the forward returns NaN; the backward sends the
gradient to the window's first largest number (NaN is skipped).
"""

import functools

import torch
import triton
import triton.language as tl

from .launch import (KernelLaunch, cdiv, config_key, empty_in_layout, is_channels_last,
                     layout_strides, needs_int64, pow2, pow2_floor)

MAX, AVG_INC, AVG_EXC = 0, 1, 2
MODES = {"max": MAX, "average_inc_pad": AVG_INC, "average_exc_pad": AVG_EXC}


@triton.jit
def _split(a, b, A_TOTAL, B_TOTAL, C, OD, OH, OW, CL: tl.constexpr):
    """Indices of a ``[BLOCK_A, BLOCK_B]`` tile: ``(n, c, d, h, w)``, each
    broadcastable to the tile (``[BLOCK_A, 1]`` or ``[1, BLOCK_B]``). Rows
    past the end are clamped onto the last one, and so are planar columns
    (their loads stay in bounds; their stores are masked by the caller);
    channels-last columns are not (clamping would hide their contiguity from
    the compiler): loads mask them (``cm``)."""
    r = tl.minimum(a, A_TOTAL - 1)[:, None]
    if CL:
        bb = b[None, :]
    else:
        bb = tl.minimum(b, B_TOTAL - 1)[None, :]
    if CL:
        w = r % OW
        r = r // OW
        h = r % OH
        r = r // OH
        d = r % OD
        n = r // OD
        c = bb
    else:
        h = r % OH
        r = r // OH
        d = r % OD
        r = r // OD
        c = r % C
        n = r // C
        w = bb
    return n, c, d, h, w


@triton.jit
def _in_tile(a, b, A_TOTAL, B_TOTAL, CL: tl.constexpr, EVEN_B: tl.constexpr):
    """Store mask of the real elements of a ``[BLOCK_A, BLOCK_B]`` tile. When
    the channel blocks tile the channels exactly (channels-last ``EVEN_B``)
    it tests rows only (``[BLOCK_A, 1]``): a mask that varies along the
    channels, against a channel count the kernel is not specialised on,
    would keep the compiler from vectorising the stores."""
    if CL and EVEN_B:
        return (a < A_TOTAL)[:, None]
    else:
        return (a < A_TOTAL)[:, None] & (b < B_TOTAL)[None, :]


@triton.jit
def _window_len(o, S: tl.constexpr, P, K: tl.constexpr, L, EXC: tl.constexpr):
    """Divisor factor of window ``o`` on one axis (at least 1, also for the
    windows outside the output that the backward masks out)."""
    start = o * S - P
    if EXC:
        n = tl.minimum(start + K, L) - tl.maximum(start, 0)
    else:
        n = tl.minimum(start + K, L + P) - start
    return tl.maximum(n, 1)


@triton.jit
def _clamp(i, L):
    return tl.minimum(tl.maximum(i, 0), L - 1)


_SIZES_FWD = ["C", "D", "H", "W", "OD", "OH", "OW", "OHG", "A_TOTAL", "B_TOTAL", "PD", "PH", "PW"]
_SIZES_BWD = ["C", "D", "H", "W", "OD", "OH", "OW", "QD", "QHG", "QW", "A_TOTAL", "B_TOTAL",
              "PD", "PH", "PW"]


# Sizes and pads are not specialised on (one compiled kernel serves every
# input size); strides are, since unit strides and 16-divisibility decide
# the vector width of the loads.
@triton.jit(do_not_specialize=_SIZES_FWD)
def pool_fwd_kernel(x_ptr, y_ptr, C, D, H, W, OD, OH, OW, OHG, A_TOTAL, B_TOTAL,
                    sxn, sxc, sxd, sxh, sxw, syn, syc, syd, syh, syw,
                    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                    SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                    PD, PH, PW,
                    MODE: tl.constexpr, CL: tl.constexpr, EVEN_B: tl.constexpr, INT64: tl.constexpr,
                    R: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """Each tile element is a group of ``R`` consecutive output rows (axis h):
    the ``(R-1)*SH + KH`` input rows they need are each loaded once, reduced
    along w, and folded into every output row whose window holds them.

    No load is masked: out-of-range input indices are clamped to the nearest
    edge. For max that is exact (the edge element lies in the same window,
    since every window holds a real element); averages weight each column and
    row by 0 or 1 instead."""
    pa = tl.program_id(0)
    if INT64:
        pa = pa.to(tl.int64)
    a = pa * BLOCK_A + tl.arange(0, BLOCK_A)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    valid = _in_tile(a, b, A_TOTAL, B_TOTAL, CL, EVEN_B)
    n, c, od, ohg, ow = _split(a, b, A_TOTAL, B_TOTAL, C, OD, OHG, OW, CL)
    oh0 = ohg * R
    d0 = od * SD - PD
    h0 = oh0 * SH - PH
    w0 = ow * SW - PW
    xb = x_ptr + (n * sxn + c * sxc)
    if CL and not EVEN_B:
        cm = (b < B_TOTAL)[None, :]
    else:
        cm = None
    # column offsets (clamped) and 0/1 weights, once per kw
    woffs = ()
    wws = ()
    for kw in tl.static_range(KW):
        woffs = woffs + (_clamp(w0 + kw, W) * sxw,)
        if MODE != 0:
            wws = wws + ((((w0 + kw) >= 0) & ((w0 + kw) < W)).to(tl.float32),)
    accs = ()
    for j in tl.static_range(R):
        if MODE == 0:
            accs = accs + (tl.full([BLOCK_A, BLOCK_B], float("-inf"), tl.float32),)
        else:
            accs = accs + (tl.zeros([BLOCK_A, BLOCK_B], tl.float32),)
    for kd in tl.static_range(KD):
        dd = d0 + kd
        for i in tl.static_range((R - 1) * SH + KH):
            hh = h0 + i
            row = xb + (_clamp(dd, D) * sxd + _clamp(hh, H) * sxh)
            if MODE == 0:
                hv = tl.full([BLOCK_A, BLOCK_B], float("-inf"), tl.float32)
                for kw in tl.static_range(KW):
                    v = tl.load(row + woffs[kw], mask=cm)
                    hv = tl.maximum(hv, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
            else:
                hv = tl.zeros([BLOCK_A, BLOCK_B], tl.float32)
                for kw in tl.static_range(KW):
                    v = tl.load(row + woffs[kw], mask=cm)
                    hv += v.to(tl.float32) * wws[kw]
                rw = ((dd >= 0) & (dd < D) & (hh >= 0) & (hh < H)).to(tl.float32)
            # fold input row i into the output rows j whose window holds it
            new = ()
            for j in tl.static_range(R):
                if (i >= j * SH) and (i < j * SH + KH):
                    if MODE == 0:
                        new = new + (tl.maximum(accs[j], hv, propagate_nan=tl.PropagateNan.ALL),)
                    else:
                        new = new + (accs[j] + hv * rw,)
                else:
                    new = new + (accs[j],)
            accs = new
    ybase = y_ptr + (n * syn + c * syc + od * syd + ow * syw)
    if MODE != 0:
        ldw = _window_len(od, SD, PD, KD, D, MODE == 2) * _window_len(ow, SW, PW, KW, W, MODE == 2)
        inv_dw = 1.0 / ldw.to(tl.float32)
    for j in tl.static_range(R):
        oh = oh0 + j
        acc = accs[j]
        if MODE != 0:
            lh = _window_len(oh, SH, PH, KH, H, MODE == 2)
            acc = acc * inv_dw * (1.0 / lh.to(tl.float32))
        tl.store(ybase + oh * syh, acc.to(y_ptr.dtype.element_ty), mask=valid & (oh < OH))


@triton.jit(do_not_specialize=_SIZES_FWD)
def pool_max_codes_kernel(x_ptr, y_ptr, c_ptr, C, D, H, W, OD, OH, OW, OHG, A_TOTAL, B_TOTAL,
                          sxn, sxc, sxd, sxh, sxw, syn, syc, syd, syh, syw,
                          scn, scc, scd, sch, scw,
                          KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                          SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                          PD, PH, PW,
                          CL: tl.constexpr, EVEN_B: tl.constexpr, INT64: tl.constexpr,
                          R: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """Max pooling that also writes each window's first-maximum offset
    ``(kd*KH + kh)*KW + kw`` as uint8 (255: none), for the backward. Same
    row-group sweep as :func:`pool_fwd_kernel`. The output is the maximum
    of the clamped loads with NaN propagated (as there); for the code,
    padding is NaN (masked), which the NaN-ignoring maximum skips and which
    never takes a code. A row's code enters an output's only if its maximum
    is strictly larger, so the first maximum in row-major order wins."""
    pa = tl.program_id(0)
    if INT64:
        pa = pa.to(tl.int64)
    a = pa * BLOCK_A + tl.arange(0, BLOCK_A)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    valid = _in_tile(a, b, A_TOTAL, B_TOTAL, CL, EVEN_B)
    n, c, od, ohg, ow = _split(a, b, A_TOTAL, B_TOTAL, C, OD, OHG, OW, CL)
    oh0 = ohg * R
    d0 = od * SD - PD
    h0 = oh0 * SH - PH
    w0 = ow * SW - PW
    xb = x_ptr + (n * sxn + c * sxc)
    if CL and not EVEN_B:
        cm = (b < B_TOTAL)[None, :]
    else:
        cm = None
    woffs = ()
    wms = ()
    for kw in tl.static_range(KW):
        woffs = woffs + (_clamp(w0 + kw, W) * sxw,)
        wms = wms + (((w0 + kw) >= 0) & ((w0 + kw) < W),)
    ys = ()
    bests = ()
    codes = ()
    for j in tl.static_range(R):
        ys = ys + (tl.full([BLOCK_A, BLOCK_B], float("-inf"), tl.float32),)
        bests = bests + (tl.full([BLOCK_A, BLOCK_B], float("nan"), tl.float32),)
        codes = codes + (tl.full([BLOCK_A, BLOCK_B], 255, tl.int32),)
    for kd in tl.static_range(KD):
        dd = d0 + kd
        for i in tl.static_range((R - 1) * SH + KH):
            hh = h0 + i
            rowm = (dd >= 0) & (dd < D) & (hh >= 0) & (hh < H)
            row = xb + (_clamp(dd, D) * sxd + _clamp(hh, H) * sxh)
            hy = tl.full([BLOCK_A, BLOCK_B], float("-inf"), tl.float32)
            vs = ()
            for kw in tl.static_range(KW):
                v = tl.load(row + woffs[kw], mask=cm).to(tl.float32)
                hy = tl.maximum(hy, v, propagate_nan=tl.PropagateNan.ALL)
                vs = vs + (tl.where(rowm & wms[kw], v, float("nan")),)
            hv = vs[0]
            for kw in tl.static_range(1, KW):
                hv = tl.maximum(hv, vs[kw])
            hc = tl.zeros([BLOCK_A, BLOCK_B], tl.int32)
            for kw in tl.static_range(KW - 1, 0, -1):
                hc = tl.where(vs[kw] == hv, kw, hc)
            hc = tl.where(vs[0] == hv, 0, hc)
            new_y = ()
            new_b = ()
            new_c = ()
            for j in tl.static_range(R):
                if (i >= j * SH) and (i < j * SH + KH):
                    new_y = new_y + (tl.maximum(ys[j], hy, propagate_nan=tl.PropagateNan.ALL),)
                    # strictly larger, or the first real row (best still NaN)
                    take = (hv > bests[j]) | ((bests[j] != bests[j]) & (hv == hv))
                    new_b = new_b + (tl.where(take, hv, bests[j]),)
                    new_c = new_c + (tl.where(take, (kd * KH + i - j * SH) * KW + hc, codes[j]),)
                else:
                    new_y = new_y + (ys[j],)
                    new_b = new_b + (bests[j],)
                    new_c = new_c + (codes[j],)
            ys = new_y
            bests = new_b
            codes = new_c
    ybase = y_ptr + (n * syn + c * syc + od * syd + ow * syw)
    cbase = c_ptr + (n * scn + c * scc + od * scd + ow * scw)
    for j in tl.static_range(R):
        oh = oh0 + j
        m = valid & (oh < OH)
        tl.store(ybase + oh * syh, ys[j].to(y_ptr.dtype.element_ty), mask=m)
        tl.store(cbase + oh * sch, codes[j].to(tl.uint8), mask=m)


@triton.jit
def _axis_factor(o, O, S: tl.constexpr, P, K: tl.constexpr, L, MODE: tl.constexpr):
    """Per axis, for window ``o``: whether it is an output window, and the
    factor of its gradient (1 for max, 1 / its divisor factor for averages)."""
    inside = (o >= 0) & (o < O)
    if MODE == 0:
        return inside, 1.0
    else:
        return inside, 1.0 / _window_len(o, S, P, K, L, MODE == 2).to(tl.float32)


@triton.jit(do_not_specialize=_SIZES_BWD)
def pool_bwd_kernel(gy_ptr, gx_ptr, c_ptr, C, D, H, W, OD, OH, OW, QD, QHG, QW,
                    A_TOTAL, B_TOTAL,
                    sgn, sgc, sgd, sgh, sgw, sdn, sdc, sdd, sdh, sdw, scn, scc, scd, sch, scw,
                    KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                    SD: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                    PD, PH, PW,
                    NWD: tl.constexpr, NWH: tl.constexpr, NWW: tl.constexpr,
                    MODE: tl.constexpr, CL: tl.constexpr, EVEN_B: tl.constexpr, INT64: tl.constexpr,
                    R: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """Each tile element is a group of owner blocks: one along d and w, ``R``
    consecutive along h. Owner ``q`` holds inputs ``q*S - P + r``,
    ``0 <= r < S``; windows ``q - j`` (``j*S + r < K``) contain them.

    Windows of the group are numbered per axis ``m = 0 .. R_axis + NW - 2``:
    window ``m`` is ``q0 - NW + 1 + m``. Owner ``u``'s phase ``r`` lies in
    its ``j``-th window ``m = u - j + NW - 1`` at offset ``j*S + r``. Max
    reads each window's first-maximum code (``c_ptr``, from
    :func:`pool_max_codes_kernel`)."""
    pa = tl.program_id(0)
    if INT64:
        pa = pa.to(tl.int64)
    a = pa * BLOCK_A + tl.arange(0, BLOCK_A)
    b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    valid = _in_tile(a, b, A_TOTAL, B_TOTAL, CL, EVEN_B)
    n, c, qd, qhg, qw = _split(a, b, A_TOTAL, B_TOTAL, C, QD, QHG, QW, CL)
    qh0 = qhg * R
    od0 = qd - (NWD - 1)
    oh0 = qh0 - (NWH - 1)
    ow0 = qw - (NWW - 1)

    # per-axis (inside, factor) of the group's windows
    ids = ()
    fds = ()
    for md in tl.static_range(NWD):
        i_, f_ = _axis_factor(od0 + md, OD, SD, PD, KD, D, MODE)
        ids = ids + (i_,)
        fds = fds + (f_,)
    ihs = ()
    fhs = ()
    for mh in tl.static_range(R + NWH - 1):
        i_, f_ = _axis_factor(oh0 + mh, OH, SH, PH, KH, H, MODE)
        ihs = ihs + (i_,)
        fhs = fhs + (f_,)
    iws = ()
    fws = ()
    gwoffs = ()
    cwoffs = ()
    for mw in tl.static_range(NWW):
        i_, f_ = _axis_factor(ow0 + mw, OW, SW, PW, KW, W, MODE)
        iws = iws + (i_,)
        fws = fws + (f_,)
        gwoffs = gwoffs + (_clamp(ow0 + mw, OW) * sgw,)
        cwoffs = cwoffs + (_clamp(ow0 + mw, OW) * scw,)
    # the output gradient of every window of the group (0 outside the output),
    # and for max its first-max code
    gs = ()
    codes = ()
    if CL and not EVEN_B:
        cm = (b < B_TOTAL)[None, :]
    else:
        cm = None
    gb = gy_ptr + (n * sgn + c * sgc)
    cb = c_ptr + (n * scn + c * scc)
    for md in tl.static_range(NWD):
        for mh in tl.static_range(R + NWH - 1):
            grow = gb + (_clamp(od0 + md, OD) * sgd + _clamp(oh0 + mh, OH) * sgh)
            crow = cb + (_clamp(od0 + md, OD) * scd + _clamp(oh0 + mh, OH) * sch)
            idh = ids[md] & ihs[mh]
            fdh = fds[md] * fhs[mh]
            for mw in tl.static_range(NWW):
                g = tl.load(grow + gwoffs[mw], mask=cm).to(tl.float32)
                if MODE != 0:
                    g = g * (fdh * fws[mw])
                gs = gs + (tl.where(idh & iws[mw], g, 0.0),)
                if MODE == 0:
                    codes = codes + (tl.load(crow + cwoffs[mw], mask=cm).to(tl.int32),)

    gxb = gx_ptr + (n * sdn + c * sdc)
    for rd in tl.static_range(SD):
        idd = qd * SD - PD + rd
        mdi = valid & (idd >= 0) & (idd < D)
        for u in tl.static_range(R):
            for rh in tl.static_range(SH):
                ih = (qh0 + u) * SH - PH + rh
                mhi = mdi & (ih >= 0) & (ih < H)
                for rw in tl.static_range(SW):
                    iw = qw * SW - PW + rw
                    acc = tl.zeros([BLOCK_A, BLOCK_B], tl.float32)
                    for jd in tl.static_range(NWD):
                        for jh in tl.static_range(NWH):
                            for jw in tl.static_range(NWW):
                                if (jd * SD + rd < KD) and (jh * SH + rh < KH) and \
                                        (jw * SW + rw < KW):
                                    # window m = (NW-1-jd, u-jh+NWH-1, NW-1-jw) of the group;
                                    # this input is at offset j*S + r inside it
                                    if MODE == 0:
                                        acc += tl.where(
                                            codes[((NWD - 1 - jd) * (R + NWH - 1) + u - jh + NWH - 1)
                                                  * NWW + NWW - 1 - jw]
                                            == ((jd * SD + rd) * KH + jh * SH + rh) * KW
                                            + jw * SW + rw,
                                            gs[((NWD - 1 - jd) * (R + NWH - 1) + u - jh + NWH - 1)
                                               * NWW + NWW - 1 - jw], 0.0)
                                    else:
                                        acc += gs[((NWD - 1 - jd) * (R + NWH - 1) + u - jh
                                                   + NWH - 1) * NWW + NWW - 1 - jw]
                    tl.store(gxb + idd * sdd + ih * sdh + iw * sdw,
                             acc.to(gx_ptr.dtype.element_ty),
                             mask=mhi & (iw >= 0) & (iw < W))


# -- host side ------------------------------------------------------------------------------------

def _strides_5d(shape, strides):
    """Shape and strides of the ``(N, C, D, H, W)`` view of an
    ``(N, C, *spatial)`` tensor (size-1 axes in front, as ``unsqueeze(2)``
    makes them)."""
    shape, strides = tuple(shape), tuple(strides)
    while len(shape) < 5:
        shape = shape[:2] + (1,) + shape[2:]
        strides = strides[:2] + (strides[2] * shape[3],) + strides[2:]
    return shape, strides


def _as_3(v, nd, fill):
    return (fill,) * (3 - nd) + tuple(int(e) for e in v)


def channels_last(x):
    """True when ``x`` is laid out channels-last (the channel stride is 1)."""
    return is_channels_last(x.shape, x.stride())


# Tile configuration. ``CONFIG_OVERRIDE`` (a dict updated by benchmarks) takes
# precedence over ``_DEFAULTS``:
#   fwd_elems    outputs per program (forward); 1024 rather than 2048 ran the
#                training forward (with codes) of float32 2x2 s2 max pooling,
#                128x256x56x56 channels-last, 12% faster on an H100 and every
#                other swept case within 1% (session 7 sweep,
#                bench/results/pool_kernels-max-cl-sweep-device-timing-*.log);
#                in the layer run 16x64x16x112x112 float32 2x2x2 max pooling
#                forward+backward went from 1.135 to 0.719 ms
#   fwd_warps    warps per program (forward)
#   fwd_rows     output rows per thread group, stride 1 / stride > 1 (forward)
#   bwd_regs     budget of live float values per thread (average backward)
#   max_bwd_per_thread   tile elements per thread of the max backward:
#                ((16-bit dtypes: stride 1, stride > 1), (wider: stride 1,
#                stride > 1)) along h; an int overrides all four. Each
#                element gathers every window covering it (dy and a code per
#                window), so few elements per thread keep the registers low;
#                but 16-bit gradients need 8 to fill 16-byte vectors. On an
#                H100 with vectorized stores (session 6 sweep,
#                bench/results/pool_kernels-max-cl-sweep-vector-stores-*.log):
#                bfloat16 128x256x56x56 backward 0.133 -> 0.106 ms (3x3 s2)
#                and 0.157 -> 0.105 ms (2x2 s2) with 8; at stride 1 (8 rows,
#                90 live values per element) 4 is fastest (8 spills);
#                float32 flat from 2 to 8 at stride 2, slower above 2 at
#                stride 1
#   bwd_warps    warps per program (backward)
#   bwd_rows     owner rows per group, stride 1 / stride > 1 (average backward)
#   max_bwd_rows the same for the max backward (8 rows ran the 3x3 s1 backward
#                20% faster than 4 in both dtypes on an H100; stride 2 prefers 2)
#   max_block_b  widest tile column block
CONFIG_OVERRIDE = {}

_DEFAULTS = {"fwd_elems": 1024, "fwd_warps": 4, "fwd_rows": (8, 4), "bwd_regs": 160,
             "max_bwd_per_thread": ((4, 8), (2, 2)), "bwd_warps": 4, "bwd_rows": (4, 2),
             "max_bwd_rows": (8, 2), "max_block_b": 128}


def _cfg(key):
    return CONFIG_OVERRIDE.get(key, _DEFAULTS[key])


def _tiles(cl, C, last, per_thread, elem_size, warps):
    """``(BLOCK_A, BLOCK_B)`` holding ``per_thread`` elements per thread
    (at most one 16-byte vector when the channel count leaves a masked tail:
    masked tiles compile poorly when larger)."""
    if cl:
        cap = 128 if elem_size <= 2 else 64
        block_b = min(pow2(C), cap, _cfg("max_block_b"))
        if C % block_b:
            per_thread = min(per_thread, 4)
    else:
        block_b = min(max(16, pow2(last)), _cfg("max_block_b"))
    block_a = pow2_floor(max(1, per_thread * 32 * warps // block_b))
    return block_a, block_b


def _pick_rows(length, rmax, cost):
    """Rows per group (a power of two up to ``rmax``, so that few kernel
    variants exist) minimising ``ceil(length/R) * cost(R)``."""
    best, best_r = None, 1
    for r in (1, 2, 4, 8, 16):
        if r > max(1, rmax):
            break
        total = cdiv(length, r) * cost(r)
        if best is None or total < best - 1e-9:
            best, best_r = total, r
    return best_r


def _fwd_per_thread(cl, C, K, S, R, elem_size, warps):
    """Tile elements (row groups) per thread in the forward sweeps: about
    ``fwd_elems`` outputs per program, at most ~256 unrolled loads per thread
    (the compiler hoists them all), at least one 16-byte channel vector."""
    loads = K[0] * ((R - 1) * S[1] + K[1]) * K[2]
    per_thread = max(1, min(_cfg("fwd_elems") // (32 * warps * R), 256 // loads))
    if cl:
        per_thread = max(per_thread, min(16 // elem_size, pow2(C)))
    return pow2_floor(per_thread)


def forward_rows(out_h, k_h, s_h):
    rmax = _cfg("fwd_rows")[0 if s_h == 1 else 1]
    return _pick_rows(out_h, rmax, lambda r: ((r - 1) * s_h + k_h) / 1.0)


@functools.lru_cache(maxsize=1024)
def _forward_plan(x_shape, x_strides, elem_size, pool_size, stride, pad, out_size, mode, codes,
                  config):
    """Everything :func:`pool_forward` passes to its kernel but the tensors,
    for one input shape and layout: ``(y_shape, cl, launch)``."""
    nd = len(x_shape) - 2
    N, C = x_shape[:2]
    cl = is_channels_last(x_shape, x_strides)
    y_shape = (N, C) + tuple(out_size)
    y_strides = layout_strides(y_shape, cl)
    (_, _, D, H, W), xs5 = _strides_5d(x_shape, x_strides)
    (_, _, OD, OH, OW), ys5 = _strides_5d(y_shape, y_strides)
    K = _as_3(pool_size, nd, 1)
    S = _as_3(stride, nd, 1)
    P = _as_3(pad, nd, 0)
    R = forward_rows(OH, K[1], S[1])
    OHG = cdiv(OH, R)
    if cl:
        a_total, b_total = N * OD * OHG * OW, C
    else:
        a_total, b_total = N * C * OD * OHG, OW
    warps = _cfg("fwd_warps")
    per_thread = _fwd_per_thread(cl, C, K, S, R, elem_size, warps)
    block_a, block_b = _tiles(cl, C, OW, per_thread, elem_size, warps)
    grid = (cdiv(a_total, block_a), cdiv(b_total, block_b))
    args = (C, D, H, W, OD, OH, OW, OHG, a_total, b_total) + xs5 + ys5 + (ys5 if codes else ())
    meta = dict(KD=K[0], KH=K[1], KW=K[2], SD=S[0], SH=S[1], SW=S[2], PD=P[0], PH=P[1],
                PW=P[2], CL=cl, EVEN_B=(not cl) or b_total % block_b == 0, R=R,
                INT64=needs_int64((x_shape, x_strides), (y_shape, y_strides)),
                BLOCK_A=block_a, BLOCK_B=block_b, num_warps=warps)
    if not codes:
        meta["MODE"] = MODES[mode]
    kernel = pool_max_codes_kernel if codes else pool_fwd_kernel
    return y_shape, cl, KernelLaunch(kernel, grid, args, meta)


def pool_forward(x, pool_size, stride, pad, out_size, mode, codes=False):
    """Pool ``x`` ``(N, C, *spatial)`` (1 to 3 spatial axes).

    ``pool_size``, ``stride``, ``pad``, ``out_size``: tuples of ints, one per
    spatial axis (``out_size`` from :func:`lasagne.ops.lengths.pool_output_length`,
    which also covers ``ignore_border=False``). Returns ``y`` in ``x``'s
    layout and dtype; with ``codes=True`` (max only) ``(y, codes)``, where
    ``codes`` (uint8, ``y``'s shape and layout) is every window's first-max
    offset for :func:`pool_backward`. The launch parameters of a shape are
    computed once (``_forward_plan``).
    """
    if codes and mode != "max":
        raise ValueError("pool_forward: codes=True is for max pooling, got mode {!r}".format(mode))
    y_shape, cl, launch = _forward_plan(
        tuple(x.shape), x.stride(), x.element_size(), tuple(pool_size), tuple(stride),
        tuple(pad), tuple(out_size), mode, bool(codes), config_key(CONFIG_OVERRIDE))
    y = empty_in_layout(y_shape, cl, x.dtype, x.device)
    c = empty_in_layout(y_shape, cl, torch.uint8, x.device) if codes else None
    if y.numel() == 0:
        return (y, c) if codes else y
    if codes:
        launch(x, y, c)
        return y, c
    launch(x, y)
    return y


@functools.lru_cache(maxsize=1024)
def _backward_plan(input_shape, input_cl, g_shape, g_strides, c_strides, elem_size, pool_size,
                   stride, pad, mode, config):
    """Everything :func:`pool_backward` passes to its kernel but the tensors,
    as a :class:`~lasagne.ops.triton.launch.KernelLaunch`."""
    nd = len(input_shape) - 2
    N, C = input_shape[:2]
    d_strides = layout_strides(input_shape, input_cl)
    (_, _, D, H, W), ds5 = _strides_5d(input_shape, d_strides)
    (_, _, OD, OH, OW), gs5 = _strides_5d(g_shape, g_strides)
    _, cs5 = _strides_5d(g_shape, c_strides)
    K = _as_3(pool_size, nd, 1)
    S = _as_3(stride, nd, 1)
    P = _as_3(pad, nd, 0)
    QD, QH, QW = (cdiv(L + p, s) for L, p, s in zip((D, H, W), P, S))
    NW = tuple(cdiv(k, s) for k, s in zip(K, S))

    def live(r):
        """Live values per group element: window gradients (and codes)."""
        return NW[0] * (r + NW[1] - 1) * NW[2] * (3 if MODES[mode] == MAX else 2)
    rows = _cfg("max_bwd_rows" if MODES[mode] == MAX else "bwd_rows")
    R = _pick_rows(QH, rows[0 if S[1] == 1 else 1], live)
    QHG = cdiv(QH, R)
    if input_cl:
        a_total, b_total = N * QD * QHG * QW, C
    else:
        a_total, b_total = N * C * QD * QHG, QW
    warps = _cfg("bwd_warps")
    if MODES[mode] == MAX:
        per_thread = _cfg("max_bwd_per_thread")
        if not isinstance(per_thread, int):
            per_thread = per_thread[0 if elem_size <= 2 else 1][0 if S[1] == 1 else 1]
    else:
        per_thread = max(1, min(16 // elem_size, pow2_floor(_cfg("bwd_regs") // max(1, live(R)))))
    block_a, block_b = _tiles(input_cl, C, QW, per_thread, elem_size, warps)
    grid = (cdiv(a_total, block_a), cdiv(b_total, block_b))
    args = (C, D, H, W, OD, OH, OW, QD, QHG, QW, a_total, b_total) + gs5 + ds5 + cs5
    meta = dict(KD=K[0], KH=K[1], KW=K[2], SD=S[0], SH=S[1], SW=S[2], PD=P[0], PH=P[1],
                PW=P[2], NWD=NW[0], NWH=NW[1], NWW=NW[2], MODE=MODES[mode], CL=input_cl,
                EVEN_B=(not input_cl) or b_total % block_b == 0,
                INT64=needs_int64((g_shape, g_strides), (input_shape, d_strides),
                                   (g_shape, c_strides)),
                R=R, BLOCK_A=block_a, BLOCK_B=block_b, num_warps=warps)
    return KernelLaunch(pool_bwd_kernel, grid, args, meta)


def pool_backward(grad_out, input_shape, input_cl, pool_size, stride, pad, mode, codes=None):
    """Gradient of :func:`pool_forward` with respect to its input, of shape
    ``input_shape``, laid out channels-last when ``input_cl``, in
    ``grad_out``'s dtype. Max pooling takes the ``codes`` that
    ``pool_forward(..., codes=True)`` wrote; ``grad_out`` and ``codes`` may
    have any strides."""
    if (codes is None) != (mode != "max"):
        raise ValueError("pool_backward: max pooling needs the forward's codes, averages none")
    input_shape = tuple(input_shape)
    gx = empty_in_layout(input_shape, input_cl, grad_out.dtype, grad_out.device)
    if gx.numel() == 0:
        return gx
    if codes is None:
        codes = grad_out   # not read (the kernel's code pointer is unused for averages)
    launch = _backward_plan(
        input_shape, bool(input_cl), tuple(grad_out.shape), grad_out.stride(), codes.stride(),
        grad_out.element_size(), tuple(pool_size), tuple(stride), tuple(pad), mode,
        config_key(CONFIG_OVERRIDE))
    launch(grad_out, gx, codes)
    return gx
