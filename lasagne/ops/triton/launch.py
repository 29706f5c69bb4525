"""Host-side arithmetic shared by the kernel launchers: grid sizes, tile
sizes, index width, layouts and the tensors they allocate."""

import torch

__all__ = ["cdiv", "pow2", "pow2_floor", "layout", "needs_int64", "is_channels_last",
           "layout_strides", "empty_in_layout", "config_key"]

_INT32_LIMIT = 2 ** 31 - 1


def cdiv(a, b):
    """``ceil(a / b)`` for integers."""
    return -(-a // b)


def pow2(n):
    """The smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 << max(0, int(n) - 1).bit_length()


def pow2_floor(n):
    """The largest power of two <= ``n`` (1 for ``n <= 1``)."""
    return 1 << (max(1, int(n)).bit_length() - 1)


def layout(t):
    """``(shape, strides)`` of tensor ``t``, as :func:`needs_int64` takes."""
    return tuple(t.shape), t.stride()


def needs_int64(*layouts):
    """Whether any ``(shape, strides)`` pair holds ``2**31 - 1`` elements or
    reaches that offset (then the kernels index with 64-bit integers)."""
    for shape, strides in layouts:
        numel = 1
        for n in shape:
            numel *= n
        if numel == 0:
            continue
        if numel >= _INT32_LIMIT or sum((n - 1) * abs(st) for n, st in zip(shape, strides)) \
                >= _INT32_LIMIT:
            return True
    return False


def is_channels_last(shape, strides):
    """Whether an ``(N, C, *spatial)`` layout is channels-last: more than one
    channel, channel stride 1."""
    return shape[1] > 1 and strides[1] == 1


def layout_strides(shape, channels_last):
    """Strides of a new ``(N, C, *spatial)`` tensor of ``shape``: channels
    innermost when ``channels_last``, contiguous otherwise."""
    order = (0,) + tuple(range(2, len(shape))) + (1,) if channels_last \
        else tuple(range(len(shape)))
    strides = [0] * len(shape)
    step = 1
    for axis in reversed(order):
        strides[axis] = step
        step *= shape[axis]
    return tuple(strides)


def empty_in_layout(shape, cl, dtype, device):
    """An empty tensor of ``shape`` ``(N, C, *spatial)``: channels-last when
    ``cl``, contiguous otherwise."""
    if cl:
        return torch.empty((shape[0],) + tuple(shape[2:]) + (shape[1],), dtype=dtype,
                           device=device).movedim(-1, 1)
    return torch.empty(shape, dtype=dtype, device=device)


def config_key(overrides):
    """A hashable snapshot of a module's tile-configuration overrides (part
    of its cached launch plans' keys)."""
    return tuple(sorted(overrides.items()))
