"""Layers that combine several inputs: concatenation and elementwise merges,
with optional automatic cropping of inputs to a common size."""

import torch

from ..utils import int_types
from .base import MergeLayer

__all__ = ["autocrop", "autocrop_array_shapes", "ConcatLayer", "concat", "ElemwiseMergeLayer",
           "ElemwiseSumLayer"]

_CROP_MODES = ('lower', 'upper', 'center')


def _padded_cropping(cropping, ndim):
    cropping = list(cropping)
    for mode in cropping:
        if mode is not None and mode not in _CROP_MODES:
            raise ValueError("unknown crop mode {!r}; expected None, 'lower', 'upper' or "
                             "'center'".format(mode))
    if len(cropping) > ndim:
        raise ValueError("cropping={!r} has {} entries for {}D inputs".format(
            cropping, len(cropping), ndim))
    return cropping + [None] * (ndim - len(cropping))


def autocrop(inputs, cropping):
    """Crop tensors to their smallest size along the axes that ask for it.

    Parameters
    ----------
    inputs : list of torch.Tensor
        Tensors of the same dimensionality.
    cropping : None or sequence of None / 'lower' / 'upper' / 'center'
        One entry per leading axis (missing trailing entries mean None).
        ``None`` leaves the axis alone; otherwise every input is cut to the
        smallest size among the inputs on that axis, keeping the first
        elements (``'lower'``), the last ones (``'upper'``) or the middle
        ones (``'center'``, the offset ``(size - smallest) // 2``).
        ``cropping=None`` returns the inputs unchanged.

    Returns
    -------
    list of torch.Tensor
        Views of the inputs.

    Raises
    ------
    ValueError
        For inputs of different dimensionality or an unknown crop mode.

    Examples
    --------
    >>> import torch
    >>> from lasagne.layers import autocrop
    >>> a, b = torch.zeros(1, 2, 5), torch.zeros(1, 2, 3)
    >>> [tuple(t.shape) for t in autocrop([a, b], [None, None, 'center'])]
    [(1, 2, 3), (1, 2, 3)]
    """
    if cropping is None:
        return inputs
    ndim = inputs[0].ndim
    if not all(x.ndim == ndim for x in inputs):
        raise ValueError("autocrop: not all inputs have the same dimensionality: {}".format(
            [x.ndim for x in inputs]))
    cropping = _padded_cropping(cropping, ndim)
    indices = [[] for _ in inputs]
    for axis, mode in enumerate(cropping):
        if mode is None:
            for idx in indices:
                idx.append(slice(None))
            continue
        smallest = min(x.shape[axis] for x in inputs)
        for x, idx in zip(inputs, indices):
            size = x.shape[axis]
            if mode == 'lower':
                start = 0
            elif mode == 'upper':
                start = size - smallest
            else:
                start = (size - smallest) // 2
            idx.append(slice(start, start + smallest))
    return [x[tuple(idx)] for x, idx in zip(inputs, indices)]


def autocrop_array_shapes(input_shapes, cropping):
    """The shapes :func:`autocrop` would produce for inputs of given shapes.

    Parameters
    ----------
    input_shapes : list of tuple
        Shapes of the same length, ``None`` for unknown sizes.
    cropping : None or sequence of None / 'lower' / 'upper' / 'center'
        As for :func:`autocrop`. On a cropped axis every shape gets the
        smallest size, or ``None`` if any size there is unknown.

    Returns
    -------
    list of tuple

    Raises
    ------
    ValueError
        For shapes of different lengths or an unknown crop mode.

    Examples
    --------
    >>> from lasagne.layers import autocrop_array_shapes
    >>> autocrop_array_shapes([(1, 2, 5), (1, 3, 3)], [None, None, 'lower'])
    [(1, 2, 3), (1, 3, 3)]
    """
    if cropping is None:
        return input_shapes
    ndim = len(input_shapes[0])
    if not all(len(s) == ndim for s in input_shapes):
        raise ValueError("autocrop_array_shapes: not all input shapes have the same "
                         "dimensionality: {}".format([len(s) for s in input_shapes]))
    cropping = _padded_cropping(cropping, ndim)
    columns = []
    for sizes, mode in zip(zip(*input_shapes), cropping):
        if mode is None:
            columns.append(sizes)
        else:
            smallest = None if any(s is None for s in sizes) else min(sizes)
            columns.append((smallest,) * len(sizes))
    return [tuple(shape) for shape in zip(*columns)]


def _first_known(sizes):
    return next((s for s in sizes if s is not None), None)


class _CroppingMergeLayer(MergeLayer):
    """Shared checks of the merge layers: at least one input, a valid
    ``cropping``, and shapes checked at construction."""

    def __init__(self, incomings, cropping, **kwargs):
        super(_CroppingMergeLayer, self).__init__(incomings, **kwargs)
        if not self.input_shapes:
            raise ValueError("{}: incomings must hold at least one layer or shape".format(
                self._where()))
        if cropping is not None:
            if isinstance(cropping, str):
                raise TypeError("{}: cropping must be None or a sequence with one entry per "
                                "axis, got {!r}".format(self._where(), cropping))
            try:
                cropping = list(cropping)
            except TypeError:
                raise TypeError("{}: cropping must be None or a sequence of None, 'lower', "
                                "'upper' and 'center', got {!r}".format(self._where(), cropping))
            try:
                cropping = _padded_cropping(cropping, len(self.input_shapes[0]))
            except ValueError as e:
                raise ValueError("{}: cropping: {}".format(self._where(), e)) from None
        self.cropping = cropping

    def _cropped_shapes(self, input_shapes):
        input_shapes = [tuple(s) for s in input_shapes]
        ndims = set(len(s) for s in input_shapes)
        if len(ndims) != 1:
            raise ValueError("{}: the inputs must have the same number of dimensions, got "
                             "shapes {}".format(self._where(), input_shapes))
        return autocrop_array_shapes(input_shapes, self.cropping)


class ConcatLayer(_CroppingMergeLayer):
    """Concatenates its inputs along one axis.

    All other axes must agree in size (unknown sizes agree with anything),
    after optional cropping.

    Parameters
    ----------
    incomings : list of :class:`Layer` instances or tuples
        The layers feeding into this layer, or their shapes.
    axis : int (default: 1)
        The concatenation axis; negative counts from the end.
    cropping : None or sequence of None / 'lower' / 'upper' / 'center'
        (default: None)
        Crop the inputs to a common size on the other axes first, see
        :func:`autocrop`; the entry for ``axis`` is ignored.
    **kwargs
        ``name``, passed to :class:`MergeLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, ConcatLayer
    >>> a, b = InputLayer((None, 3, 8)), InputLayer((None, 5, 8))
    >>> ConcatLayer([a, b]).output_shape
    (None, 8, 8)
    """

    def __init__(self, incomings, axis=1, cropping=None, **kwargs):
        super(ConcatLayer, self).__init__(incomings, cropping, **kwargs)
        ndim = len(self.input_shapes[0])
        if isinstance(axis, bool) or not isinstance(axis, int_types) or not -ndim <= axis < ndim:
            raise ValueError("{}: axis must be an int in [-{}, {}) for {}D inputs, got {!r}".format(
                self._where(), ndim, ndim, ndim, axis))
        self.axis = int(axis)
        if self.cropping is not None:
            self.cropping[self.axis] = None  # never crop the concatenation axis
        self.get_output_shape_for(self.input_shapes)

    def get_output_shape_for(self, input_shapes):
        input_shapes = self._cropped_shapes(input_shapes)
        ndim = len(input_shapes[0])
        axis = self.axis % ndim
        out = [_first_known(sizes) for sizes in zip(*input_shapes)]
        for shape in input_shapes:
            if any(i != axis and s is not None and o is not None and s != o
                   for i, (s, o) in enumerate(zip(shape, out))):
                raise ValueError("{}: the input shapes {} must agree on every axis but the "
                                 "concatenation axis {}".format(self._where(), input_shapes,
                                                                self.axis))
        sizes = [shape[axis] for shape in input_shapes]
        out[axis] = None if any(s is None for s in sizes) else sum(sizes)
        return tuple(out)

    def get_output_for(self, inputs, **kwargs):
        return torch.cat(autocrop(inputs, self.cropping), dim=self.axis)


concat = ConcatLayer  # shortcut, as in the original


class ElemwiseMergeLayer(_CroppingMergeLayer):
    """Merges inputs of equal shape elementwise with a binary function:
    ``merge_function(...merge_function(merge_function(x0, x1), x2)..., xn)``.

    Parameters
    ----------
    incomings : list of :class:`Layer` instances or tuples
        The layers feeding into this layer, or their shapes; all must agree
        (unknown sizes agree with anything), after optional cropping.
    merge_function : callable
        Takes two tensors, returns one of the same shape, e.g.
        ``torch.mul`` or ``torch.maximum``.
    cropping : None or sequence of None / 'lower' / 'upper' / 'center'
        (default: None)
        Crop the inputs to a common size first, see :func:`autocrop`.
    **kwargs
        ``name``, passed to :class:`MergeLayer`.

    Examples
    --------
    >>> import torch
    >>> from lasagne.layers import InputLayer, ElemwiseMergeLayer
    >>> a, b = InputLayer((None, 10)), InputLayer((None, 10))
    >>> ElemwiseMergeLayer([a, b], torch.mul).output_shape
    (None, 10)
    """

    def __init__(self, incomings, merge_function, cropping=None, **kwargs):
        super(ElemwiseMergeLayer, self).__init__(incomings, cropping, **kwargs)
        if not callable(merge_function):
            raise TypeError("{}: merge_function must be callable, got {!r}".format(
                self._where(), merge_function))
        self.merge_function = merge_function
        self.get_output_shape_for(self.input_shapes)

    def get_output_shape_for(self, input_shapes):
        input_shapes = self._cropped_shapes(input_shapes)
        out = tuple(_first_known(sizes) for sizes in zip(*input_shapes))
        for shape in input_shapes:
            if any(s is not None and o is not None and s != o for s, o in zip(shape, out)):
                raise ValueError("{}: the input shapes {} must all be the same".format(
                    self._where(), input_shapes))
        return out

    def get_output_for(self, inputs, **kwargs):
        inputs = autocrop(inputs, self.cropping)
        out = inputs[0]
        for x in inputs[1:]:
            out = self.merge_function(out, x)
        return out


class ElemwiseSumLayer(ElemwiseMergeLayer):
    """Weighted elementwise sum of its inputs: ``sum_i coeffs[i] * x_i``.

    Parameters
    ----------
    incomings : list of :class:`Layer` instances or tuples
        The layers feeding into this layer, or their shapes (all equal).
    coeffs : number or list of numbers (default: 1)
        One coefficient for all inputs, or one per input.
    cropping : None or sequence of None / 'lower' / 'upper' / 'center'
        (default: None)
        Crop the inputs to a common size first, see :func:`autocrop`.
    **kwargs
        ``name``, passed to :class:`MergeLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, ElemwiseSumLayer
    >>> a, b = InputLayer((None, 10)), InputLayer((None, 10))
    >>> ElemwiseSumLayer([a, b], coeffs=[1, -1]).output_shape
    (None, 10)
    """

    def __init__(self, incomings, coeffs=1, cropping=None, **kwargs):
        super(ElemwiseSumLayer, self).__init__(incomings, torch.add, cropping=cropping, **kwargs)
        n = len(self.input_shapes)
        if isinstance(coeffs, (list, tuple)):
            if len(coeffs) != n:
                raise ValueError("{}: got {} coeffs for {} incomings".format(
                    self._where(), len(coeffs), n))
            coeffs = list(coeffs)
        else:
            coeffs = [coeffs] * n
        self.coeffs = coeffs

    def get_output_for(self, inputs, **kwargs):
        inputs = [x if isinstance(c, (int, float)) and c == 1 else x * c
                  for c, x in zip(self.coeffs, inputs)]
        return super(ElemwiseSumLayer, self).get_output_for(inputs, **kwargs)
