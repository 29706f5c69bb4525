"""Output-length and padding arithmetic for convolution and pooling.

These small pure functions are the one place the size formulas live: layers
call them to infer shapes at build time, ops call them to check run-time
sizes, and tests call them to predict shapes.
"""

from ..utils import int_types


def resolve_conv_pad(pad, filter_size):
    """Turn a convolution ``pad`` argument into explicit symmetric pads.

    Parameters
    ----------
    pad : int, tuple of int, 'valid', 'full' or 'same'
    filter_size : tuple of int

    Returns
    -------
    tuple of int
        The zero-padding added on both sides of each spatial axis.

    Raises
    ------
    NotImplementedError
        For ``'same'`` with an even filter size.
    ValueError
        For anything else that is not a valid pad.
    """
    n = len(filter_size)
    if pad == 'valid':
        return (0,) * n
    if pad == 'full':
        return tuple(f - 1 for f in filter_size)
    if pad == 'same':
        if any(f % 2 == 0 for f in filter_size):
            raise NotImplementedError("pad='same' requires odd filter sizes, got filter_size={}"
                                      .format(tuple(filter_size)))
        return tuple(f // 2 for f in filter_size)
    if isinstance(pad, str):
        raise ValueError("pad must be an int, a tuple of {} ints, 'valid', 'full' or 'same', "
                         "got {!r}".format(n, pad))
    if isinstance(pad, int_types):
        pads = (int(pad),) * n
    else:
        try:
            pads = tuple(pad)
        except TypeError:
            raise ValueError("pad must be an int, a tuple of {} ints, 'valid', 'full' or 'same', "
                             "got {!r}".format(n, pad))
        if len(pads) != n or not all(isinstance(p, int_types) for p in pads):
            raise ValueError("pad must be an int, a tuple of {} ints, 'valid', 'full' or 'same', "
                             "got {!r}".format(n, pad))
        pads = tuple(int(p) for p in pads)
    if any(p < 0 for p in pads):
        raise ValueError("pad must be non-negative, got {!r}".format(pad))
    return pads


def conv_output_length(input_length, filter_size, stride, pad):
    """Output length of a convolution along one axis.

    Parameters
    ----------
    input_length : int or None
    filter_size : int
    stride : int
    pad : int, 'valid', 'full' or 'same'

    Returns
    -------
    int or None
        ``ceil((input_length + 2*pad - filter_size + 1) / stride)``; None when
        the input length is unknown. The result may be below 1: callers that
        need a real size check it (see :func:`check_positive_lengths`).
    """
    if input_length is None:
        return None
    (p,) = resolve_conv_pad(pad if isinstance(pad, str) else (pad,), (filter_size,))
    full = input_length + 2 * p - filter_size + 1
    return (full + stride - 1) // stride if full > 0 else full


def pool_output_length(input_length, pool_size, stride, pad, ignore_border):
    """Output length of a pooling along one axis.

    Parameters
    ----------
    input_length : int or None
    pool_size : int
    stride : int
    pad : int
    ignore_border : bool
        If True, only windows that lie inside the padded input are used:
        ``ceil((input_length + 2*pad - pool_size + 1) / stride)``. If False
        (only with ``pad == 0``), a final partial window is kept where the
        input does not end on a window boundary.

    Returns
    -------
    int or None
    """
    if input_length is None or pool_size is None:
        return None
    if ignore_border:
        full = input_length + 2 * pad - pool_size + 1
        return (full + stride - 1) // stride if full > 0 else full
    if stride >= pool_size:
        return (input_length + stride - 1) // stride
    return max(0, (input_length - pool_size + stride - 1) // stride) + 1


def check_positive_lengths(where, output_lengths, detail):
    """Raise ``ValueError`` naming ``where`` if any known length is below 1."""
    if any(o is not None and o < 1 for o in output_lengths):
        raise ValueError("{}: the output would be empty (spatial output size {}); {}".format(
            where, tuple(output_lengths), detail))


def ceil_div(a, b):
    """Integer ceiling division for non-negative ``a`` and positive ``b``."""
    return -(-a // b)


__all__ = ["resolve_conv_pad", "conv_output_length", "pool_output_length",
           "check_positive_lengths", "ceil_div"]
