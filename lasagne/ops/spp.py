"""Spatial pyramid pooling: every pyramid level ``n`` pools the two trailing
axes into an ``n x n`` grid of bins; the levels are flattened row-major and
concatenated, giving ``sum(n*n)`` features per channel for any input size.

Bins (per axis of length ``L``, ``n`` bins; exact integer arithmetic)
    * ``'kaiming'`` (He et al. 2015, appendix A): bin ``i`` spans
      ``[floor(i*L/n), ceil((i+1)*L/n))``; always ``n`` non-empty bins.
    * ``'fast'`` (the original Lasagne layers' default): window
      ``ceil(L/n)``, stride ``floor(L/n)``, i.e. bin ``i`` spans
      ``[i*floor(L/n), i*floor(L/n) + ceil(L/n))``, wherever this yields
      exactly ``n`` bins; on an axis where it does not (``L < n``, or e.g.
      ``n=4`` with ``L`` in 6, 7, 11) the kaiming bins of that axis are used.

How it is computed (portable path)
    * Averages (both average modes are the plain mean of a bin, as no
      padding is involved) are linear: one matrix product of the flattened
      input ``(batch, channels, H*W)`` with a constant ``(H*W, sum(n*n))``
      matrix of bin weights. The input is read once, for all levels; the
      backward is one matrix product as well. In float32 on CUDA the product
      follows PyTorch's matmul precision setting (exact by default; TF32 if
      the user allowed it with ``torch.backends.cuda.matmul.allow_tf32``).
    * Max: the bin edges of all levels cut each axis into *cells*; every bin
      of every level is a rectangle of whole cells. One ``scatter_reduce``
      takes the maximum of each cell, reading the input once; each level
      then takes the maximum over its bins' cells from that small cell grid.
      The gradient of a bin goes whole to its *first* maximum: among the
      bin's elements equal to its maximum, the one with the smallest flat
      index ``h*W + w`` (row-major order within the bin), as PyTorch's max
      pooling and our CUDA kernel do. The backward (see :class:`_SppMax`)
      is exact, bitwise reproducible (no two additions to one element ever
      race) and needs memory of the order of the input. NaN counts as the
      largest value: a bin holding a NaN has the maximum NaN, and its
      gradient goes to the bin's first NaN.

The constant index and weight tensors depend only on the input size and the
arguments; they are built once per geometry and device (see
:func:`lasagne.ops.pool.cached_constant`). A device kernel can take over
through :func:`register_kernel`.
"""

import collections

import torch

from ..utils import int_types
from .lengths import ceil_div
from .pool import POOL_MODES, cached_constant

__all__ = ["SPP_IMPLEMENTATIONS", "spp_bins", "spp_output_size", "check_spp_args",
           "spatial_pyramid_pool", "register_kernel"]

SPP_IMPLEMENTATIONS = ("fast", "kaiming")

_KERNELS = {}


def register_kernel(device_type, fn):
    """Route :func:`spatial_pyramid_pool` on tensors of ``device_type`` to
    ``fn(input, pool_dims, mode, implementation)`` first (validated
    arguments, ``pool_dims`` a tuple); ``fn`` returns the output or ``None``
    to decline. ``fn=None`` removes the registration."""
    if fn is None:
        _KERNELS.pop(device_type, None)
    else:
        _KERNELS[device_type] = fn


def spp_bins(length, n, implementation="fast"):
    """The ``n`` bins of one axis of ``length`` elements.

    Parameters
    ----------
    length : int
        The axis length, at least 1.
    n : int
        The number of bins.
    implementation : 'fast' or 'kaiming'
        The bin scheme (see the module documentation).

    Returns
    -------
    list of (start, end)
        Half-open ranges ``[start, end)``, each non-empty.
    """
    if implementation == "fast":
        window, step = ceil_div(length, n), length // n
        if step >= 1 and (length - window) // step + 1 == n:
            return [(i * step, i * step + window) for i in range(n)]
    return [((i * length) // n, ceil_div((i + 1) * length, n)) for i in range(n)]


def spp_output_size(pool_dims):
    """The number of features per channel: ``sum(n*n for n in pool_dims)``."""
    return sum(n * n for n in pool_dims)


def check_spp_args(where, pool_dims, mode, implementation):
    """Validate spatial pyramid pooling arguments; returns ``pool_dims`` as a
    tuple of ints. Raises ``ValueError`` (message starting with ``where``)."""
    try:
        dims = tuple(pool_dims)
    except TypeError:
        dims = None
    if not dims or any(isinstance(n, bool) or not isinstance(n, int_types) or n < 1
                       for n in dims):
        raise ValueError("{}: pool_dims must be a non-empty list of positive ints, got {!r}"
                         .format(where, pool_dims))
    if mode not in POOL_MODES:
        raise ValueError("{}: mode must be one of {}, got {!r}".format(where, POOL_MODES, mode))
    if implementation not in SPP_IMPLEMENTATIONS:
        raise ValueError("{}: implementation must be one of {}, got {!r}".format(
            where, SPP_IMPLEMENTATIONS, implementation))
    return tuple(int(n) for n in dims)


def spatial_pyramid_pool(input, pool_dims=(4, 2, 1), mode="max", implementation="fast",
                         where="spatial_pyramid_pool"):
    """Spatial pyramid pooling of a ``(batch, channels, H, W)`` tensor.

    Parameters
    ----------
    input : torch.Tensor
        4D, floating point, any spatial size >= 1, contiguous or
        channels-last.
    pool_dims : sequence of int (default: (4, 2, 1))
        The grid size ``n`` of each level.
    mode : 'max', 'average_inc_pad' or 'average_exc_pad' (default: 'max')
        Maximum or mean over each bin (the two averages coincide).
    implementation : 'fast' or 'kaiming' (default: 'fast')
        The bin scheme, see :func:`spp_bins`.
    where : str
        Prefix of error messages.

    Returns
    -------
    torch.Tensor
        ``(batch, channels, sum(n*n))``, levels in order, each flattened
        row-major; same dtype as ``input``.
    """
    dims = check_spp_args(where, pool_dims, mode, implementation)
    if input.ndim != 4:
        raise ValueError("{}: expected a 4D input (batch, channels, rows, columns), got shape {}"
                         .format(where, tuple(input.shape)))
    kernel = _KERNELS.get(input.device.type)
    if kernel is not None:
        result = kernel(input, dims, mode, implementation)
        if result is not None:
            return result
    H, W = input.shape[2:]
    if mode == "max":
        return _spp_max(input, H, W, dims, implementation)
    return _spp_mean(input, H, W, dims, implementation)


# --- averages: one matrix product ---------------------------------------------------

def _bin_weights(length, n, implementation):
    """``(n, length)`` matrix: row ``i`` is ``1/len`` over bin ``i``."""
    weights = torch.zeros(n, length, dtype=torch.float64)
    for i, (a, b) in enumerate(spp_bins(length, n, implementation)):
        weights[i, a:b] = 1.0 / (b - a)
    return weights


def _mean_matrix(H, W, dims, implementation):
    """``(H*W, sum(n*n))``: column ``k`` averages bin ``k`` of the pyramid."""
    blocks = []
    for n in dims:
        rows, cols = _bin_weights(H, n, implementation), _bin_weights(W, n, implementation)
        blocks.append(torch.einsum("ph,qw->hwpq", rows, cols).reshape(H * W, n * n))
    return torch.cat(blocks, 1)


def _spp_mean(x, H, W, dims, implementation):
    matrix = cached_constant(
        ("spp_mean", H, W, dims, implementation, x.dtype, x.device),
        lambda: _mean_matrix(H, W, dims, implementation).to(dtype=x.dtype, device=x.device))
    # (N, C, H*W) is a view for contiguous and channels_last inputs
    return torch.matmul(x.flatten(2), matrix)


# --- max: cells, then bins of cells ------------------------------------------------

def _cells(length, dims, implementation):
    """Cut an axis at every bin edge of every level.

    Returns ``(cell_of, ranges)``: the cell of each position, and per level
    the ``(first_cell, end_cell)`` of each bin.
    """
    bins = [spp_bins(length, n, implementation) for n in dims]
    cuts = sorted({0, length} | {e for level in bins for edge in level for e in edge})
    first = {c: j for j, c in enumerate(cuts)}
    cell_of = [j for j in range(len(cuts) - 1) for _ in range(cuts[j + 1] - cuts[j])]
    ranges = [[(first[a], first[b]) for a, b in level] for level in bins]
    return cell_of, ranges


_MaxPlan = collections.namedtuple("_MaxPlan", [
    "num_cells", "cell_index", "positions", "cell_of_position", "cell_start", "levels"])


def _axis_colors(bins):
    """Colors ``i % m`` for the bins of one axis, with the smallest ``m``
    that makes bins of one color disjoint (starts and ends never decrease
    along the axis, so bins ``m`` or more apart are disjoint)."""
    m = 1
    while any(bins[i + m][0] < bins[i][1] for i in range(len(bins) - m)):
        m += 1
    return [i % m for i in range(len(bins))], m


def _max_plan(H, W, dims, implementation, device):
    """Index tensors for :func:`_spp_max` and its backward.

    Returns a ``_MaxPlan`` of

    num_cells : int
        The number of cells (the grid cut at every bin edge of every level);
        index ``num_cells`` is one more, padding, cell.
    cell_index : ``(1, 1, H*W)`` int64
        The cell of each position (cells numbered row-major over the cell
        grid).
    positions : ``(1, 1, H*W)``
        ``0 .. H*W-1`` (int32, or int64 from ``2**31 - 1`` positions on).
    cell_of_position : ``(H*W + 1,)`` int64
        ``cell_index`` flattened, then ``num_cells`` for the "no position"
        value ``H*W``.
    cell_start : ``(1, 1, num_cells)`` int64
        The first position of each cell (row-major).
    levels : tuple of ``(gather, by_color, color_ends)``, one per level
        ``gather`` is None for ``n == 1`` (the whole grid), else an
        ``(n*n, R)`` int64 index of each bin's cells, padded with
        ``num_cells``. The bins of a level are colored such that bins of
        one color are disjoint (color ``(i % m_rows, j % m_cols)`` for bin
        row ``i`` and column ``j``, see :func:`_axis_colors`): ``by_color``
        ``(n*n,)`` int64 lists the bins color by color (None for ``n ==
        1``), and the tuple ``color_ends`` where each color's run ends.
    """
    rows_of, row_ranges = _cells(H, dims, implementation)
    cols_of, col_ranges = _cells(W, dims, implementation)
    m_rows, m_cols = rows_of[-1] + 1, cols_of[-1] + 1
    num_cells = m_rows * m_cols
    cell_index = (torch.tensor(rows_of).view(H, 1) * m_cols + torch.tensor(cols_of).view(1, W))
    levels = []
    for n, rr, cr in zip(dims, row_ranges, col_ranges):
        if n == 1:
            levels.append((None, None, (1,)))
            continue
        bins = [[r * m_cols + c for r in range(r0, r1) for c in range(c0, c1)]
                for r0, r1 in rr for c0, c1 in cr]
        width = max(len(b) for b in bins)
        index = torch.tensor([b + [num_cells] * (width - len(b)) for b in bins])
        row_colors, row_m = _axis_colors(rr)
        col_colors, col_m = _axis_colors(cr)
        colors = [a * col_m + b for a in row_colors for b in col_colors]
        by_color = sorted(range(n * n), key=lambda k: (colors[k], k))
        ends = tuple(sum(1 for c in colors if c <= color) for color in range(row_m * col_m))
        levels.append((index.to(device), torch.tensor(by_color).to(device), ends))
    flat = cell_index.view(H * W)
    first_row = {r: h for h, r in reversed(list(enumerate(rows_of)))}
    first_col = {c: w for w, c in reversed(list(enumerate(cols_of)))}
    cell_start = torch.tensor([first_row[r] * W + first_col[c]
                               for r in range(m_rows) for c in range(m_cols)])
    position_dtype = torch.int32 if H * W < 2 ** 31 - 1 else torch.int64
    return _MaxPlan(
        num_cells=num_cells,
        cell_index=cell_index.view(1, 1, H * W).to(device),
        positions=torch.arange(H * W, dtype=position_dtype).view(1, 1, H * W).to(device),
        cell_of_position=torch.cat([flat, flat.new_tensor([num_cells])]).to(device),
        cell_start=cell_start.view(1, 1, num_cells).to(device),
        levels=tuple(levels))


def _bin_cells(t, index):
    """``t[:, :, index]`` for ``t`` of shape ``(N, C, cells)`` and a
    ``(bins, R)`` index: ``(N, C, bins, R)`` (a gather from a broadcast
    view; faster than advanced indexing on the CPU)."""
    N, C, M = t.shape
    bins, R = index.shape
    return t.unsqueeze(2).expand(N, C, bins, M).gather(3, index.expand(N, C, bins, R))


def _is_max(a, maximum):
    """Where ``a`` is the maximum it entered: ``maximum`` is a max reduction
    over values including ``a`` (so at least ``a``, or NaN when a NaN
    entered it, as PyTorch's max reductions propagate NaN); ``a >= maximum``
    is then ``a == maximum``, and a NaN ``a`` counts as the maximum."""
    return (a >= maximum) | (a != a)


class _SppMax(torch.autograd.Function):
    """Max spatial pyramid pooling through the cell grid; the gradient of
    each bin goes whole to its first maximum.

    Forward: one ``scatter_reduce`` gives the maximum of every cell (the
    "cell max"), then every level reduces its bins' cells. Saved for the
    backward: the input, the cell maxima and the output.

    Backward, for bin ``b`` with maximum ``y_b`` and gradient ``g_b``:

    1. Each cell's first maximum: the smallest position ``p`` of the cell
       with ``x[p]`` equal to the cell max (a ``scatter_reduce`` "amin" of
       ``p`` where ``x`` equals its cell max, of ``H*W`` elsewhere; a NaN
       equals a NaN cell max).
    2. The first maximum of ``b``: the smallest of those over the cells of
       ``b`` whose cell max equals ``y_b``. (Every element of ``b`` equal to
       ``y_b`` lies in such a cell, and in such a cell the elements equal to
       ``y_b`` are those equal to the cell max; row-major order within a
       bin is the order of the flat index ``h*W + w``.)
    3. ``g_b`` is added to a per-cell sum at the cell holding that
       position. Bins of one level may overlap and pick the same cell, and
       so may bins of different levels; so a level's bins are colored such
       that the bins of one color are disjoint, and each color is one
       ``scatter_add_`` whose targets are distinct cells. Every cell thus
       receives its terms one per call, in a fixed order (levels in order,
       colors in order): no two additions to one cell race, and the sums
       are bitwise reproducible on any device. The sums are kept in
       float32 for 16-bit inputs, otherwise in the input dtype.
    4. Each cell's sum is written at the cell's first maximum: positions of
       distinct cells differ, so this is a plain scatter into zeros.

    NaN: the maximum of a bin holding a NaN is NaN (as the forward's
    reductions propagate NaN), and its gradient goes to the bin's first NaN.
    Memory, besides a few ``(N, C, H*W)`` tensors (the cell max of each
    position, the positions in int32, a mask, the gradient) and
    ``(N, C, cells)`` ones: per level the ``(N, C, bins, cells per bin)``
    gathers the forward makes too. The backward is linear in the incoming
    gradient and made of differentiable operations on it, so double
    backward works (the selection itself is piecewise constant in the
    input, with zero derivative).
    """

    @staticmethod
    def forward(ctx, x, plan):
        N, C, H, W = x.shape
        num_cells = plan.num_cells
        # the input is read once: the maximum of each cell (plus one -inf cell);
        # (N, C, H*W) is a view for contiguous and channels_last inputs
        cells = x.new_full((N, C, num_cells + 1), float("-inf"))
        cells = cells.scatter_reduce(2, plan.cell_index.expand(N, C, H * W), x.flatten(2),
                                     "amax")
        levels = []
        for index, _, _ in plan.levels:
            if index is None:
                levels.append(cells[:, :, :num_cells].amax(2, keepdim=True))
            else:
                levels.append(_bin_cells(cells, index).amax(3))
        y = torch.cat(levels, 2)
        ctx.save_for_backward(x, cells, y)
        ctx.plan = plan
        return y

    @staticmethod
    def backward(ctx, grad_output):
        x, cells, y = ctx.saved_tensors
        plan = ctx.plan
        N, C, H, W = x.shape
        HW, num_cells = H * W, plan.num_cells
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        # 1. each cell's first maximum (H*W for the padding cell)
        xf = x.flatten(2)
        cell_max = cells.index_select(2, plan.cell_index.view(HW))
        position = torch.where(_is_max(xf, cell_max), plan.positions, HW)
        first = torch.full((N, C, num_cells + 1), HW, dtype=position.dtype, device=x.device)
        first = first.scatter_reduce(2, plan.cell_index.expand(N, C, HW), position, "amin")
        cell_grad = torch.zeros((N, C, num_cells + 1), dtype=acc, device=x.device)
        offset = 0
        for index, by_color, color_ends in plan.levels:
            count = 1 if index is None else index.shape[0]
            y_level = y[:, :, offset:offset + count]
            g_level = grad_output[:, :, offset:offset + count].to(acc)
            offset += count
            # 2. each bin's first maximum (its position)
            if index is None:
                candidates = torch.where(_is_max(cells[:, :, :num_cells], y_level),
                                         first[:, :, :num_cells], HW)
                winner = candidates.amin(2, keepdim=True)
            else:
                candidates = torch.where(_is_max(_bin_cells(cells, index), y_level[..., None]),
                                         _bin_cells(first, index), HW)
                winner = candidates.amin(3)
                winner = winner.index_select(2, by_color)
                g_level = g_level.index_select(2, by_color)
            # 3. the bins' gradients onto their winning cells, color by color:
            # the cells of one color's bins are distinct
            target = plan.cell_of_position.index_select(0, winner.view(-1)).view(winner.shape)
            start = 0
            for end in color_ends:
                cell_grad.scatter_add_(2, target[:, :, start:end], g_level[:, :, start:end])
                start = end
        # 4. each cell's gradient at its first maximum. Every cell has one, and every
        # bin a winner, as long as max reductions return one of their inputs or a
        # NaN; should one ever not, the value H*W sends a bin's gradient to the
        # padding cell and a cell's zero gradient to its start, instead of failing.
        first = first[:, :, :num_cells]
        destination = torch.where(first < HW, first.long(), plan.cell_start)
        grad = torch.zeros((N, C, HW), dtype=x.dtype, device=x.device)
        grad.scatter_(2, destination, cell_grad[:, :, :num_cells].to(x.dtype))
        return grad.view(N, C, H, W), None


def _spp_max(x, H, W, dims, implementation):
    plan = cached_constant(
        ("spp_max", H, W, dims, implementation, x.device),
        lambda: _max_plan(H, W, dims, implementation, x.device))
    return _SppMax.apply(x, plan)


# --- CUDA fast path (lasagne.ops.spp_cuda) ----------------------------------------------
# One Triton kernel for all pyramid levels (the lasagne::spp custom op) plugs in through
# register_kernel; by default (lasagne.ops.use_triton_pooling('measured')) it takes max
# pyramid pooling, where it measured faster than the path below (bench/NOTES.md).
