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
      Gradients go to the maxima (split evenly between exact ties); the
      backward adds up repeated cells in a fixed (sorted) order and counts
      ties exactly, so it is deterministic.

The constant index and weight tensors depend only on the input size and the
arguments; they are built once per geometry and device (see
:func:`lasagne.ops.pool.cached_constant`). A device kernel can take over
through :func:`register_kernel`.
"""

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


def _max_plan(H, W, dims, implementation, device):
    """Index tensors for :func:`_spp_max`.

    Returns ``(cell_index, num_cells, gathers)``: ``cell_index`` ``(1, 1,
    H*W)`` maps each position to its cell (row-major over the cell grid);
    ``gathers`` has per level either None (``n == 1``: the whole grid) or an
    ``(n*n, R)`` index of each bin's cells, padded with ``num_cells`` (a cell
    that holds ``-inf``).
    """
    rows_of, row_ranges = _cells(H, dims, implementation)
    cols_of, col_ranges = _cells(W, dims, implementation)
    m_cols = cols_of[-1] + 1
    num_cells = (rows_of[-1] + 1) * m_cols
    cell_index = (torch.tensor(rows_of).view(H, 1) * m_cols + torch.tensor(cols_of).view(1, W))
    gathers = []
    for n, rr, cr in zip(dims, row_ranges, col_ranges):
        if n == 1:
            gathers.append(None)
            continue
        bins = [[r * m_cols + c for r in range(r0, r1) for c in range(c0, c1)]
                for r0, r1 in rr for c0, c1 in cr]
        width = max(len(b) for b in bins)
        index = torch.tensor([b + [num_cells] * (width - len(b)) for b in bins])
        gathers.append(index.to(device))
    return cell_index.view(1, 1, H * W).to(device), num_cells, gathers


def _spp_max(x, H, W, dims, implementation):
    cell_index, num_cells, gathers = cached_constant(
        ("spp_max", H, W, dims, implementation, x.device),
        lambda: _max_plan(H, W, dims, implementation, x.device))
    N, C = x.shape[:2]
    # the input is read once: the maximum of each cell (plus one -inf cell)
    cells = x.new_full((N, C, num_cells + 1), float("-inf"))
    cells = cells.scatter_reduce(2, cell_index.expand(N, C, H * W), x.flatten(2), "amax")
    levels = []
    for index in gathers:
        if index is None:
            levels.append(cells[:, :, :num_cells].amax(2, keepdim=True))
        else:
            # advanced indexing: its backward accumulates repeated cells in a
            # fixed order (sorted on CUDA), so it stays deterministic
            levels.append(cells[:, :, index].amax(3))
    return torch.cat(levels, 2)


# --- CUDA fast path (lasagne.ops.spp_cuda) ----------------------------------------------
# One Triton kernel for all pyramid levels (the lasagne::spp custom op) plugs in through
# register_kernel; lasagne.ops.use_triton_pooling() switches it on (not the default until
# its GPU test run is clean, bench/NOTES.md).
