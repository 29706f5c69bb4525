"""Layers that rearrange data without computing on it: flatten, reshape,
dimshuffle (permute / insert / drop axes), pad and slice."""

import numpy as np
import torch.nn.functional as F

from ..utils import int_types
from .base import Layer

__all__ = ["FlattenLayer", "flatten", "ReshapeLayer", "reshape", "DimshuffleLayer",
           "dimshuffle", "PadLayer", "pad", "SliceLayer"]


def _is_int(x):
    return isinstance(x, int_types) and not isinstance(x, bool)


def _product(sizes):
    """Product of the sizes, or None if any is unknown."""
    if any(s is None for s in sizes):
        return None
    return int(np.prod(sizes, dtype=np.int64))


class FlattenLayer(Layer):
    """Flattens the trailing axes: the output has ``outdim`` dimensions, the
    last one holding all input axes from ``outdim - 1`` on.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    outdim : int (default: 2)
        Number of output dimensions, ``1 <= outdim <= input ndim``.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, FlattenLayer
    >>> FlattenLayer(InputLayer((None, 3, 4, 5))).output_shape
    (None, 60)
    """

    def __init__(self, incoming, outdim=2, **kwargs):
        super(FlattenLayer, self).__init__(incoming, **kwargs)
        ndim = len(self.input_shape)
        if not _is_int(outdim) or not 1 <= outdim <= ndim:
            raise ValueError("{}: outdim must be an int from 1 to the input's {} dimensions, "
                             "got {!r}".format(self._where(), ndim, outdim))
        self.outdim = int(outdim)

    def get_output_shape_for(self, input_shape):
        merged = input_shape[self.outdim - 1:]
        size = None if any(s is None for s in merged) else int(np.prod(merged))
        return tuple(input_shape[:self.outdim - 1]) + (size,)

    def get_output_for(self, input, **kwargs):
        return input.flatten(self.outdim - 1)


flatten = FlattenLayer  # shortcut, as in the original


class ReshapeLayer(Layer):
    """Reshapes its input to a given shape.

    The shape may refer to input sizes: ``[i]`` stands for the size of input
    axis ``i`` (known or not), and one entry may be ``-1``, inferred so that
    the total size is unchanged.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    shape : tuple
        Each entry a positive int, ``-1`` (at most once), or a one-element
        list ``[i]`` with ``0 <= i < input ndim``.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, ReshapeLayer
    >>> l_in = InputLayer((None, 100, 20))
    >>> ReshapeLayer(l_in, ([0], [1], 5, -1)).output_shape
    (None, 100, 5, 4)
    """

    def __init__(self, incoming, shape, **kwargs):
        super(ReshapeLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        try:
            shape = tuple(shape)
        except TypeError:
            raise TypeError("{}: shape must be a tuple of ints and [i] references, got "
                            "{!r}".format(where, shape))
        for s in shape:
            if _is_int(s):
                if s == 0 or s < -1:
                    raise ValueError("{}: shape entries must be positive ints, -1 or [i], got {} "
                                     "in shape={!r}".format(where, s, shape))
            elif isinstance(s, list):
                if len(s) != 1 or not _is_int(s[0]) or s[0] < 0:
                    raise ValueError("{}: input references in shape must be one-element lists "
                                     "[i] with an int i >= 0, got {!r} in shape={!r}".format(
                                         where, s, shape))
            else:
                raise ValueError("{}: shape must hold ints and [i] references, got {!r} in "
                                 "shape={!r}".format(where, s, shape))
        if sum(1 for s in shape if _is_int(s) and s == -1) > 1:
            raise ValueError("{}: shape may contain -1 only once, got shape={!r}".format(
                where, shape))
        self.shape = tuple(list(s) if isinstance(s, list) else int(s) for s in shape)
        # sanity check: references in range and total size compatible
        self.get_output_shape_for(self.input_shape)

    def get_output_shape_for(self, input_shape):
        input_shape = tuple(input_shape)
        out = []
        # sizes that count towards the totals; an unknown input size copied
        # by the first [i] referring to it maps 1:1 and is left out of both
        in_sizes = list(input_shape)
        out_sizes = []
        for s in self.shape:
            if isinstance(s, list):
                i = s[0]
                if i >= len(input_shape):
                    raise ValueError("{}: shape={!r} refers to input axis [{}], but the input "
                                     "shape {} has {} dimensions".format(
                                         self._where(), self.shape, i, input_shape,
                                         len(input_shape)))
                size = input_shape[i]
                out.append(size)
                if size is None and in_sizes[i] is None:
                    in_sizes[i] = 1
                    out_sizes.append(1)
                else:
                    out_sizes.append(size)
            else:
                out.append(s)
                out_sizes.append(s)
        known_in = _product(in_sizes)
        if -1 in out:
            k = out.index(-1)
            rest = _product(out_sizes[:k] + out_sizes[k + 1:])
            if known_in is None or rest is None:
                out[k] = None
                known_out = None
            else:
                if known_in % rest:
                    self._size_mismatch(input_shape)
                out[k] = known_in // rest
                known_out = known_in
        else:
            known_out = _product(out_sizes)
        if known_in is not None and known_out is not None and known_in != known_out:
            self._size_mismatch(input_shape)
        return tuple(out)

    def _size_mismatch(self, input_shape):
        raise ValueError("{}: an input of shape {} cannot be reshaped to shape={!r}: the total "
                         "sizes differ".format(self._where(), input_shape, self.shape))

    def get_output_for(self, input, **kwargs):
        shape = [input.shape[s[0]] if isinstance(s, list) else s for s in self.shape]
        return input.reshape(shape)


reshape = ReshapeLayer  # shortcut, as in the original


class DimshuffleLayer(Layer):
    """Permutes axes, inserts broadcastable axes and drops size-1 axes.

    ``pattern`` lists, for each output axis, the input axis it takes
    (an int) or ``'x'`` for a new axis of size 1. Input axes not listed are
    dropped; they must have size 1 (an axis of unknown size is checked when
    the layer runs).

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    pattern : tuple of int or 'x'
        Each input axis at most once.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DimshuffleLayer
    >>> l_in = InputLayer((2, 3, 5, 7))
    >>> DimshuffleLayer(l_in, (3, 2, 1, 'x', 0)).output_shape
    (7, 5, 3, 1, 2)
    """

    def __init__(self, incoming, pattern, **kwargs):
        super(DimshuffleLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        try:
            pattern = tuple(pattern)
        except TypeError:
            raise TypeError("{}: pattern must be a tuple of ints and 'x', got {!r}".format(
                where, pattern))
        used = set()
        for p in pattern:
            if _is_int(p):
                if p < 0:
                    raise ValueError("{}: pattern entries must be non-negative axes or 'x', got "
                                     "{} in pattern={!r}".format(where, p, pattern))
                if p in used:
                    raise ValueError("{}: pattern={!r} uses input axis {} more than once".format(
                        where, pattern, p))
                used.add(p)
            elif not (isinstance(p, str) and p == 'x'):
                raise ValueError("{}: pattern must hold input axes (ints) or 'x', got {!r} in "
                                 "pattern={!r}".format(where, p, pattern))
        self.pattern = tuple(int(p) if _is_int(p) else p for p in pattern)
        self.get_output_shape_for(self.input_shape)

    def get_output_shape_for(self, input_shape):
        out = []
        for p in self.pattern:
            if p == 'x':
                out.append(1)
            elif p >= len(input_shape):
                raise ValueError("{}: pattern={!r} uses input axis {}, but the input shape {} has "
                                 "{} dimensions".format(self._where(), self.pattern, p,
                                                        input_shape, len(input_shape)))
            else:
                out.append(input_shape[p])
        for axis, size in enumerate(input_shape):
            if axis not in self.pattern and size is not None and size != 1:
                raise ValueError("{}: pattern={!r} drops input axis {} of size {}; only axes of "
                                 "size 1 can be dropped".format(self._where(), self.pattern,
                                                                axis, size))
        return tuple(out)

    def get_output_for(self, input, **kwargs):
        kept = [p for p in self.pattern if p != 'x']
        dropped = [axis for axis in range(input.ndim) if axis not in kept]
        for axis in dropped:
            if input.shape[axis] != 1:
                raise ValueError("{}: pattern={!r} drops input axis {}, which has size {} at run "
                                 "time; only axes of size 1 can be dropped".format(
                                     self._where(), self.pattern, axis, input.shape[axis]))
        out = input.permute(kept + dropped)
        new_shape = [1 if p == 'x' else input.shape[p] for p in self.pattern]
        return out.reshape(new_shape)


dimshuffle = DimshuffleLayer  # shortcut, as in the original


class PadLayer(Layer):
    """Pads the axes after the first ``batch_ndim`` with a constant.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    width : int, or tuple of int and/or pairs of int
        An int pads every axis after ``batch_ndim`` by that much on both
        sides. A tuple gives one entry per axis, starting at axis
        ``batch_ndim`` (axes beyond its length are not padded): an int pads
        both sides equally, a pair ``(before, after)`` each side separately.
        Widths must be non-negative.
    val : float (default: 0)
        The padding value.
    batch_ndim : int (default: 2)
        Number of leading axes not padded (batch and channels).
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, PadLayer
    >>> l_in = InputLayer((None, 3, 10, 10))
    >>> PadLayer(l_in, width=((1, 2), 3)).output_shape
    (None, 3, 13, 16)
    """

    def __init__(self, incoming, width, val=0, batch_ndim=2, **kwargs):
        super(PadLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        ndim = len(self.input_shape)
        if not _is_int(batch_ndim) or not 0 <= batch_ndim <= ndim:
            raise ValueError("{}: batch_ndim must be an int from 0 to the input's {} dimensions, "
                             "got {!r}".format(where, ndim, batch_ndim))
        n_pad = ndim - batch_ndim
        if _is_int(width):
            entries = (width,) * n_pad
        else:
            try:
                entries = tuple(width)
            except TypeError:
                raise TypeError("{}: width must be an int or a tuple of ints and pairs, got "
                                "{!r}".format(where, width))
            if len(entries) > n_pad:
                raise ValueError("{}: width={!r} has {} entries, but only {} axes follow the "
                                 "batch_ndim={} leading axes".format(where, width, len(entries),
                                                                    n_pad, batch_ndim))
        pairs = []
        for w in entries:
            if _is_int(w):
                pair = (int(w), int(w))
            else:
                try:
                    pair = tuple(w)
                except TypeError:
                    pair = ()
                if len(pair) != 2 or not all(_is_int(v) for v in pair):
                    raise ValueError("{}: each width entry must be an int or a pair of ints, got "
                                     "{!r} in width={!r}".format(where, w, width))
                pair = (int(pair[0]), int(pair[1]))
            if pair[0] < 0 or pair[1] < 0:
                raise ValueError("{}: width must be non-negative, got {!r}".format(where, width))
            pairs.append(pair)
        self.width = width
        self.val = val
        self.batch_ndim = int(batch_ndim)
        self._pairs = tuple(pairs)

    def get_output_shape_for(self, input_shape):
        out = list(input_shape)
        for k, (before, after) in enumerate(self._pairs):
            axis = self.batch_ndim + k
            if out[axis] is not None:
                out[axis] += before + after
        return tuple(out)

    def get_output_for(self, input, **kwargs):
        # F.pad lists (before, after) from the last axis backwards
        pads = []
        for axis in reversed(range(self.batch_ndim, input.ndim)):
            k = axis - self.batch_ndim
            pads.extend(self._pairs[k] if k < len(self._pairs) else (0, 0))
        if not any(pads):
            return input
        return F.pad(input, pads, mode='constant', value=self.val)


pad = PadLayer  # shortcut, as in the original


class SliceLayer(Layer):
    """Slices the input along one axis, or takes one index (dropping the axis).

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    indices : int or slice
        An int selects one index and removes the axis; a slice (any step,
        negative included) keeps the axis.
    axis : int (default: -1)
        The axis to slice; negative counts from the end.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, SliceLayer
    >>> l_in = InputLayer((None, 10, 8))
    >>> SliceLayer(l_in, indices=slice(2, None, 2), axis=1).output_shape
    (None, 4, 8)
    >>> SliceLayer(l_in, indices=0).output_shape
    (None, 10)
    """

    def __init__(self, incoming, indices, axis=-1, **kwargs):
        super(SliceLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        ndim = len(self.input_shape)
        if not _is_int(axis) or not -ndim <= axis < ndim:
            raise ValueError("{}: axis must be an int in [-{}, {}), got {!r}".format(
                where, ndim, ndim, axis))
        if _is_int(indices):
            indices = int(indices)
        elif isinstance(indices, slice):
            for v in (indices.start, indices.stop, indices.step):
                if v is not None and not _is_int(v):
                    raise ValueError("{}: indices slice must hold ints or None, got {!r}".format(
                        where, indices))
            if indices.step == 0:
                raise ValueError("{}: indices slice step must not be zero, got {!r}".format(
                    where, indices))
        else:
            raise TypeError("{}: indices must be an int or a slice, got {!r}".format(
                where, indices))
        self.slice = indices
        self.axis = int(axis)
        self.get_output_shape_for(self.input_shape)

    def get_output_shape_for(self, input_shape):
        out = list(input_shape)
        size = input_shape[self.axis]
        if isinstance(self.slice, int):
            if size is not None and not -size <= self.slice < size:
                raise IndexError("{}: indices={} is out of range for axis {} of size {}".format(
                    self._where(), self.slice, self.axis, size))
            del out[self.axis]
        else:
            out[self.axis] = None if size is None else len(range(*self.slice.indices(size)))
        return tuple(out)

    def get_output_for(self, input, **kwargs):
        axis = self.axis % input.ndim
        if isinstance(self.slice, int):
            return input.select(axis, self.slice)
        size = input.shape[axis]
        start, stop, step = self.slice.indices(size)
        if step > 0:
            index = slice(start, stop, step)
        else:
            # PyTorch has no negative steps: flip, then slice forwards
            count = len(range(start, stop, step))
            input = input.flip(axis)
            first = size - 1 - start
            index = slice(first, first + (count - 1) * (-step) + 1 if count else first, -step)
        return input[(slice(None),) * axis + (index,)]
