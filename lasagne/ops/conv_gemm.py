"""The GEMM convolution algorithm (Theano's CorrMM idea) with a bounded
workspace.

A cross-correlation is a matrix product once the input is rearranged into
columns ("im2col"): every output position becomes one row holding the
``C/G * prod(filter_size)`` input values under the filter, and the output is
``columns @ W.T`` per group. For a large batch the column matrix is
``prod(filter_size)`` times the size of the input, so it is never built whole:
the work is split into chunks of whole samples, and of output rows along the
first spatial axis when one sample alone is too big, so that each chunk's
temporaries stay under a workspace cap (:data:`DEFAULT_WORKSPACE_BYTES`,
256 MiB by default).

The autograd function saves only the input and the weights; the backward
pass recomputes each chunk's columns. Everything is a copy, a matrix product
or an addition into a strided view, applied in a fixed order: no atomics,
so gradients are bitwise reproducible on the GPU.

This is the portable implementation; a fused implicit-GEMM kernel can replace
:func:`conv_gemm`'s body for the devices and dtypes it supports and must
match it.
"""

import itertools
import math

import torch
import torch.nn.functional as F

__all__ = ["conv_gemm", "DEFAULT_WORKSPACE_BYTES", "plan_chunks"]

DEFAULT_WORKSPACE_BYTES = 256 * 2 ** 20
"""Default cap on one chunk's temporaries (column matrix, padded input slab,
output rows), in bytes."""


def plan_chunks(batch, channels, num_filters, padded, out, filter_size, stride, itemsize,
                workspace_bytes):
    """How many samples and output rows one chunk of the GEMM algorithm takes.

    Parameters
    ----------
    batch, channels, num_filters : int
    padded : tuple of int
        Spatial sizes of the zero-padded input.
    out : tuple of int
        Spatial sizes of the output.
    filter_size, stride : tuple of int
    itemsize : int
        Bytes per element.
    workspace_bytes : int
        The cap on one chunk's temporaries.

    Returns
    -------
    (int, int)
        Samples per chunk and output rows (along the first spatial axis) per
        chunk. Whole samples are used whenever one sample fits; a chunk is
        never smaller than one output row of one sample, even if that
        exceeds the cap.
    """
    kernel = math.prod(filter_size)
    out_inner = math.prod(out[1:])
    in_inner = math.prod(padded[1:])

    def cost(samples, rows):
        positions = rows * out_inner
        slab = min(padded[0], (rows - 1) * stride[0] + filter_size[0])
        return itemsize * samples * (channels * kernel * positions + channels * slab * in_inner
                                     + num_filters * positions)

    per_sample = cost(1, out[0])
    if per_sample <= workspace_bytes:
        return max(1, min(batch, workspace_bytes // per_sample)), out[0]
    per_row = cost(1, 2) - cost(1, 1)
    rows = (workspace_bytes - cost(1, 1)) // per_row + 1 if cost(1, 1) <= workspace_bytes else 1
    return 1, int(max(1, min(out[0], rows)))


def _chunks(batch, rows_total, samples, rows):
    for n0 in range(0, batch, samples):
        for r0 in range(0, rows_total, rows):
            yield n0, min(batch, n0 + samples), r0, min(rows_total, r0 + rows)


def _slab_bounds(size, pad, r0, r1, k, stride):
    """Which input rows output rows ``r0:r1`` read along the first spatial
    axis: ``lo:hi`` in input coordinates, plus the zero rows the slab needs
    before (``top``) and after (``bottom``) them."""
    start, stop = r0 * stride, (r1 - 1) * stride + k
    lo, hi = max(0, start - pad), min(size, stop - pad)
    top = max(0, pad - start)
    bottom = (stop - start) - top - max(0, hi - lo)
    return lo, hi, top, bottom


def _padded_slab(x, n0, n1, bounds, pads):
    """Samples ``n0:n1``, input rows ``lo:hi``, zero-padded: (n, C, *slab)."""
    lo, hi, top, bottom = bounds
    widths = []
    for p in reversed(pads[1:]):
        widths += [p, p]
    widths += [top, bottom]
    return F.pad(x[n0:n1, :, lo:hi], widths)


def _windows(xp, filter_size, stride):
    """View of ``xp`` (n, C, *padded) as (n, C, *out, *filter_size)."""
    for i, (k, s) in enumerate(zip(filter_size, stride)):
        xp = xp.unfold(2 + i, k, s)
    return xp


def _im2col(xp, filter_size, stride, groups, channel_minor):
    """The column matrix (G, n * positions, Cg * prod(filter_size)): one
    copy of the windows of the padded input ``xp``. A row lists its values
    in ``W``'s order (channel, then filter offsets), or with
    ``channel_minor`` filter offsets first and channels fastest, which reads
    a channels-last input contiguously."""
    nd = len(filter_size)
    win = _windows(xp, filter_size, stride)
    n, c = win.shape[:2]
    out = tuple(win.shape[2:2 + nd])
    win = win.unflatten(1, (groups, c // groups))  # (n, G, Cg, *out, *k)
    spatial = tuple(range(3, 3 + nd))
    offsets = tuple(range(3 + nd, 3 + 2 * nd))
    inner = offsets + (2,) if channel_minor else (2,) + offsets
    return win.permute((1, 0) + spatial + inner).reshape(groups, n * math.prod(out), -1)


def _weight_matrix(W, groups, channel_minor):
    """``W`` (F, Cg, *k) as (G, Fg, Cg * prod(k)), its columns in the order
    of :func:`_im2col`'s rows."""
    if channel_minor:
        W = W.movedim(1, -1)
    return W.reshape(groups, W.shape[0] // groups, -1)


def _col2im_add(gxp, gcols, filter_size, stride, out, channel_minor):
    """Add the columns' gradient (G, n * positions, Cg * prod(k)) into the
    padded input gradient ``gxp`` (n, C, *padded), one filter offset at a
    time. Within one offset the written elements are distinct, and the
    offsets are applied in a fixed order: no atomics."""
    nd = len(filter_size)
    n, c = gxp.shape[:2]
    groups = gcols.shape[0]
    inner = tuple(filter_size) + (c // groups,) if channel_minor else \
        (c // groups,) + tuple(filter_size)
    g = gcols.reshape((groups, n) + tuple(out) + inner)
    cdim = 2 + 2 * nd if channel_minor else 2 + nd
    offsets = tuple(range(2 + nd, 2 + 2 * nd)) if channel_minor else \
        tuple(range(3 + nd, 3 + 2 * nd))
    g = g.permute((1, 0, cdim) + tuple(range(2, 2 + nd)) + offsets)  # (n, G, Cg, *out, *k)
    target = gxp.unflatten(1, (groups, c // groups))
    for offset in itertools.product(*(range(k) for k in filter_size)):
        window = tuple(slice(o, o + s * (m - 1) + 1, s) for o, s, m in zip(offset, stride, out))
        target[(slice(None),) * 3 + window].add_(g[(Ellipsis,) + offset])


def _memory_format(x):
    """Channels-last for a channels-last input (the output follows it, as
    with PyTorch's convolutions), contiguous otherwise."""
    if x.is_contiguous():
        return torch.contiguous_format
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.ndim == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


def _rows_into(dest, rows):
    """Copy (G, n * positions, Fg) into the logical (n, F, *out) ``dest``."""
    n, f = dest.shape[:2]
    out = tuple(dest.shape[2:])
    nd = len(out)
    groups = rows.shape[0]
    src = rows.reshape((groups, n) + out + (f // groups,))
    src = src.permute((1, 0, 2 + nd) + tuple(range(2, 2 + nd)))  # (n, G, Fg, *out)
    dest.unflatten(1, (groups, f // groups)).copy_(src)


def _output_to_rows(gout, groups):
    """Logical (n, F, *out) -> (G, n * positions, Fg); a view for a
    channels-last tensor and one group."""
    n, f = gout.shape[:2]
    r = gout.movedim(1, -1).reshape(n, -1, groups, f // groups)
    return r.permute(2, 0, 1, 3).reshape(groups, -1, f // groups)


class _GemmConv(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, W, stride, pads, groups, workspace_bytes):
        ctx.save_for_backward(x, W)
        ctx.conf = (stride, pads, groups, workspace_bytes)
        geo = _geometry(x, W, stride, pads, workspace_bytes)
        k, n_all, f = geo["k"], x.shape[0], W.shape[0]
        fmt = _memory_format(x)
        cl = fmt is not torch.contiguous_format
        out = torch.empty((n_all, f) + geo["out"], dtype=x.dtype, device=x.device,
                          memory_format=fmt)
        Wt = _weight_matrix(W, groups, cl).transpose(1, 2)  # (G, Cg*K, Fg)
        # channels-last, one group, whole rows: the product lands in the output
        direct = cl and groups == 1 and geo["rows"] == geo["out"][0]
        for n0, n1, r0, r1 in _chunks(n_all, geo["out"][0], geo["samples"], geo["rows"]):
            bounds = _slab_bounds(x.shape[2], pads[0], r0, r1, k[0], stride[0])
            cols = _im2col(_padded_slab(x, n0, n1, bounds, pads), k, stride, groups, cl)
            if direct:
                torch.mm(cols[0], Wt[0], out=out[n0:n1].movedim(1, -1).reshape(-1, f))
            else:
                _rows_into(out[n0:n1, :, r0:r1], torch.bmm(cols, Wt))
            del cols
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        x, W = ctx.saved_tensors
        stride, pads, groups, workspace_bytes = ctx.conf
        need_x, need_W = ctx.needs_input_grad[:2]
        geo = _geometry(x, W, stride, pads, workspace_bytes)
        k, n_all, f = geo["k"], x.shape[0], W.shape[0]
        fmt = _memory_format(x)
        cl = fmt is not torch.contiguous_format
        Wg = _weight_matrix(W, groups, cl)  # (G, Fg, Cg*K)
        split = geo["rows"] < geo["out"][0]
        gx = gW = None
        if need_x:
            gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
            if split:
                gx.zero_()
        if need_W:
            # partial sums of half-precision chunks are accumulated in float32
            low = W.dtype in (torch.float16, torch.bfloat16)
            gW = torch.zeros((groups, Wg.shape[2], Wg.shape[1]),
                             dtype=torch.float32 if low else W.dtype, device=W.device)
        for n0, n1, r0, r1 in _chunks(n_all, geo["out"][0], geo["samples"], geo["rows"]):
            rows = _output_to_rows(gout[n0:n1, :, r0:r1], groups)  # (G, n*L, Fg)
            bounds = _slab_bounds(x.shape[2], pads[0], r0, r1, k[0], stride[0])
            if need_W:
                cols = _im2col(_padded_slab(x, n0, n1, bounds, pads), k, stride, groups, cl)
                if gW.dtype == cols.dtype:
                    gW.baddbmm_(cols.transpose(1, 2), rows)
                else:
                    gW += torch.bmm(cols.transpose(1, 2), rows).float()
                del cols
            if need_x:
                lo, hi, top, bottom = bounds
                slab = (n1 - n0, x.shape[1], top + (hi - lo) + bottom) + tuple(
                    s + 2 * p for s, p in zip(x.shape[3:], pads[1:]))
                gxp = torch.empty(slab, dtype=x.dtype, device=x.device, memory_format=fmt).zero_()
                _col2im_add(gxp, torch.bmm(rows, Wg), k, stride, (r1 - r0,) + geo["out"][1:],
                            cl)
                inner = tuple(slice(p, p + s) for p, s in zip(pads[1:], x.shape[3:]))
                core = gxp[(slice(None), slice(None), slice(top, top + hi - lo)) + inner]
                if split:
                    gx[n0:n1, :, lo:hi] += core
                else:  # rows past the last window (stride > 1) get no gradient
                    gx[n0:n1, :, lo:hi].copy_(core)
                    gx[n0:n1, :, hi:].zero_()
                del gxp
        if gW is not None:
            gW = gW.transpose(1, 2).to(W.dtype)  # (G, Fg, Cg*K) in _weight_matrix's order
            if cl:
                gW = gW.reshape((f,) + k + (W.shape[1],)).movedim(-1, 1)
            gW = gW.reshape(W.shape)
        return gx, gW, None, None, None, None


def _geometry(x, W, stride, pads, workspace_bytes):
    k = tuple(W.shape[2:])
    padded = tuple(s + 2 * p for s, p in zip(x.shape[2:], pads))
    out = tuple((s - kk) // st + 1 for s, kk, st in zip(padded, k, stride))
    samples, rows = plan_chunks(x.shape[0], x.shape[1], W.shape[0], padded, out, k, stride,
                                x.element_size(), workspace_bytes)
    return {"k": k, "out": out, "samples": samples, "rows": rows}


def conv_gemm(input, W, stride, pads, num_groups=1, workspace_bytes=None):
    """Cross-correlation by explicit im2col + matrix product, chunked.

    Parameters
    ----------
    input : torch.Tensor
        ``(batch, channels, *spatial)`` with 1 to 3 spatial axes.
    W : torch.Tensor
        ``(num_filters, channels // num_groups, *filter_size)``, same dtype
        and device as ``input``; applied as given (no flip).
    stride, pads : tuple of int
        One per spatial axis; ``pads`` is the symmetric zero padding.
    num_groups : int
    workspace_bytes : int, optional
        Cap on one chunk's temporaries; :data:`DEFAULT_WORKSPACE_BYTES` if
        omitted.

    Returns
    -------
    torch.Tensor
        ``(batch, num_filters, *out)``, channels-last when the input is.
    """
    # --- implicit-GEMM Triton kernels on CUDA (lasagne/ops/conv_gemm_cuda.py) -------------
    # No column matrix at all; extra memory is a weight-gradient workspace of at most
    # max(4 MiB, largest operand / 8), whatever workspace_bytes says. 1D runs as 2D.
    if input.is_cuda and input.ndim in (3, 4, 5):
        from . import conv_gemm_cuda  # lazy: Triton is only imported on CUDA machines
        one_d = input.ndim == 3
        x_, W_ = (input.unsqueeze(2), W.unsqueeze(2)) if one_d else (input, W)
        st_, pd_ = ((1,) + tuple(stride), (0,) + tuple(pads)) if one_d else (stride, pads)
        if conv_gemm_cuda.supported(x_, W_, st_, pd_, num_groups):
            out = conv_gemm_cuda.conv_igemm(x_, W_, st_, pd_, num_groups)
            return out.squeeze(2) if one_d else out
    # --- end of the implicit-GEMM dispatch ------------------------------------------------
    if workspace_bytes is None:
        workspace_bytes = DEFAULT_WORKSPACE_BYTES
    return _GemmConv.apply(input, W, tuple(stride), tuple(pads), int(num_groups),
                           int(workspace_bytes))
