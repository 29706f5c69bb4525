"""Pooling layers: N-d max and average pooling (:class:`Pool1DLayer`,
:class:`Pool2DLayer`, :class:`Pool3DLayer` and their max-only variants),
spatial pyramid pooling and global pooling.

:class:`BasePoolLayer` holds the argument handling and shape arithmetic of
the N-d layers; the layers of :mod:`lasagne.layers.dnn` are thin subclasses.
The computation lives in :mod:`lasagne.ops.pool` and :mod:`lasagne.ops.spp`.
"""

import torch

from ..ops.lengths import check_positive_lengths, pool_output_length
from ..ops.pool import check_pool_args, pool_resolved
from ..ops.spp import check_spp_args, spatial_pyramid_pool, spp_output_size
from .base import Layer

__all__ = ["Pool1DLayer", "Pool2DLayer", "Pool3DLayer", "MaxPool1DLayer", "MaxPool2DLayer",
           "MaxPool3DLayer", "SpatialPyramidPoolingLayer", "GlobalPoolLayer"]


class BasePoolLayer(Layer):
    """Pooling over the ``n`` trailing axes of a ``(batch, channels,
    *spatial)`` input: the maximum or the average of each window.

    On each axis of length ``L`` the output length is
    ``ceil((L + 2*pad - pool_size + 1) / stride)`` with
    ``ignore_border=True``; with ``ignore_border=False`` a last partial
    window is kept where the windows do not end at the input's end (see
    :func:`lasagne.ops.lengths.pool_output_length`).

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    pool_size : int or iterable of int
        The window size: one int for every axis, or one per axis.
    stride : int, iterable of int or None (default: None)
        The step between windows; None means ``stride = pool_size``
        (non-overlapping windows).
    pad : int or iterable of int (default: 0)
        Padding added on both sides of each axis; each pad must be below its
        pool size, so that every window holds an input element. Max pooling
        pads with a value below every input (an output is always an input
        element); the averages pad with zeros.
    ignore_border : bool (default: True)
        False keeps partial windows at the end of each axis (clipped to the
        input; averages divide by the clipped size). Requires ``pad=0``.
    mode : str (default: 'max')
        ``'max'``, ``'average_inc_pad'`` (the window sum over the full window
        size: padding counts as zeros) or ``'average_exc_pad'`` (the mean of
        the window's input elements only).
    n : int
        The number of pooled axes (1, 2 or 3).
    **kwargs
        ``name``, passed to :class:`Layer`.

    Attributes
    ----------
    pool_size, stride, pad : tuple of int
    ignore_border : bool
    mode : str
    """

    def __init__(self, incoming, pool_size, stride=None, pad=0, ignore_border=True, mode="max",
                 n=2, **kwargs):
        super(BasePoolLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        if len(self.input_shape) != n + 2:
            raise ValueError("{}: expected a {}D input (batch, channels, {} spatial axes), got "
                             "input_shape={}".format(where, n + 2, n, self.input_shape))
        self.n = n
        self.pool_size, self.stride, self.pad = check_pool_args(
            where, n, pool_size, stride, pad, ignore_border, mode)
        self.ignore_border = bool(ignore_border)
        self.mode = mode
        check_positive_lengths(where, self.output_shape[2:],
                               "input_shape={} is too small for pool_size={} with pad={}".format(
                                   self.input_shape, self.pool_size, self.pad))

    def get_output_shape_for(self, input_shape):
        return tuple(input_shape[:2]) + tuple(
            pool_output_length(L, k, s, p, self.ignore_border)
            for L, k, s, p in zip(input_shape[2:], self.pool_size, self.stride, self.pad))

    def get_output_for(self, input, **kwargs):
        return pool_resolved(input, self.pool_size, self.stride, self.pad, self.mode,
                             self.ignore_border, self._where())


class Pool1DLayer(BasePoolLayer):
    """1D pooling over the last axis of a ``(batch, channels, length)``
    input: the maximum or average of each window.

    Parameters
    ----------
    incoming, pool_size, stride=None, pad=0, ignore_border=True, mode='max', **kwargs
        See :class:`BasePoolLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, Pool1DLayer
    >>> Pool1DLayer(InputLayer((None, 8, 100)), pool_size=3, stride=2).output_shape
    (None, 8, 49)
    """

    def __init__(self, incoming, pool_size, stride=None, pad=0, ignore_border=True, mode="max",
                 **kwargs):
        super(Pool1DLayer, self).__init__(incoming, pool_size, stride, pad, ignore_border, mode,
                                          n=1, **kwargs)


class Pool2DLayer(BasePoolLayer):
    """2D pooling over the two trailing axes of a ``(batch, channels, rows,
    columns)`` input: the maximum or average of each window.

    Parameters
    ----------
    incoming, pool_size, stride=None, pad=(0, 0), ignore_border=True, mode='max', **kwargs
        See :class:`BasePoolLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, Pool2DLayer
    >>> l_in = InputLayer((None, 64, 56, 56))
    >>> Pool2DLayer(l_in, pool_size=3, stride=2, pad=1, mode='average_exc_pad').output_shape
    (None, 64, 28, 28)
    """

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0), ignore_border=True,
                 mode="max", **kwargs):
        super(Pool2DLayer, self).__init__(incoming, pool_size, stride, pad, ignore_border, mode,
                                          n=2, **kwargs)


class Pool3DLayer(BasePoolLayer):
    """3D pooling over the three trailing axes of a ``(batch, channels,
    depth, rows, columns)`` input: the maximum or average of each window.

    Parameters
    ----------
    incoming, pool_size, stride=None, pad=(0, 0, 0), ignore_border=True, mode='max', **kwargs
        See :class:`BasePoolLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, Pool3DLayer
    >>> Pool3DLayer(InputLayer((None, 16, 8, 32, 32)), pool_size=2).output_shape
    (None, 16, 4, 16, 16)
    """

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0, 0), ignore_border=True,
                 mode="max", **kwargs):
        super(Pool3DLayer, self).__init__(incoming, pool_size, stride, pad, ignore_border, mode,
                                          n=3, **kwargs)


class MaxPool1DLayer(Pool1DLayer):
    """1D max pooling: :class:`Pool1DLayer` with ``mode='max'``.

    Parameters
    ----------
    incoming, pool_size, stride=None, pad=0, ignore_border=True, **kwargs
        See :class:`BasePoolLayer`.
    """

    def __init__(self, incoming, pool_size, stride=None, pad=0, ignore_border=True, **kwargs):
        super(MaxPool1DLayer, self).__init__(incoming, pool_size, stride, pad, ignore_border,
                                             mode="max", **kwargs)


class MaxPool2DLayer(Pool2DLayer):
    """2D max pooling: :class:`Pool2DLayer` with ``mode='max'``.

    Parameters
    ----------
    incoming, pool_size, stride=None, pad=(0, 0), ignore_border=True, **kwargs
        See :class:`BasePoolLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, MaxPool2DLayer
    >>> l_in = InputLayer((None, 96, 55, 55))
    >>> MaxPool2DLayer(l_in, pool_size=3, stride=2, ignore_border=False).output_shape
    (None, 96, 27, 27)
    """

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0), ignore_border=True,
                 **kwargs):
        super(MaxPool2DLayer, self).__init__(incoming, pool_size, stride, pad, ignore_border,
                                             mode="max", **kwargs)


class MaxPool3DLayer(Pool3DLayer):
    """3D max pooling: :class:`Pool3DLayer` with ``mode='max'``.

    Parameters
    ----------
    incoming, pool_size, stride=None, pad=(0, 0, 0), ignore_border=True, **kwargs
        See :class:`BasePoolLayer`.
    """

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0, 0), ignore_border=True,
                 **kwargs):
        super(MaxPool3DLayer, self).__init__(incoming, pool_size, stride, pad, ignore_border,
                                             mode="max", **kwargs)


class SpatialPyramidPoolingLayer(Layer):
    """Spatial pyramid pooling: a fixed-size output for any input size.

    Each level ``n`` of ``pool_dims`` pools the two trailing axes into an
    ``n x n`` grid of bins; the output ``(batch, channels, sum(n*n))`` holds
    the levels in order, each flattened row-major. Put it between the
    convolutional part of a network, whose input size may vary, and its dense
    part (He et al., 2015: "Spatial Pyramid Pooling in Deep Convolutional
    Networks for Visual Recognition").

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape
        ``(batch, channels, rows, columns)``; rows and columns may be None
        (any size >= 1 at run time).
    pool_dims : list of int (default: [4, 2, 1])
        The grid size of each level.
    mode : str (default: 'max')
        ``'max'``, or ``'average_inc_pad'`` / ``'average_exc_pad'`` (both the
        mean of a bin: no padding is involved).
    implementation : 'fast' or 'kaiming' (default: 'fast')
        The bins of an axis of length ``L`` split into ``n``: ``'kaiming'``
        (the paper's): bin ``i`` spans ``[floor(i*L/n), ceil((i+1)*L/n))``.
        ``'fast'`` (the original Lasagne default, needed for weights trained
        with it): windows of ``ceil(L/n)`` at a step of ``floor(L/n)``, on
        every axis where that gives exactly ``n`` bins; on an axis where it
        does not (the original then failed or returned a different number of
        features) the kaiming bins are used. Both give exactly ``sum(n*n)``
        features for every input size.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, SpatialPyramidPoolingLayer
    >>> l_in = InputLayer((None, 256, None, None))
    >>> SpatialPyramidPoolingLayer(l_in, pool_dims=[4, 2, 1]).output_shape
    (None, 256, 21)
    """

    def __init__(self, incoming, pool_dims=[4, 2, 1], mode="max", implementation="fast",
                 **kwargs):
        super(SpatialPyramidPoolingLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        if len(self.input_shape) != 4:
            raise ValueError("{}: expected a 4D input (batch, channels, rows, columns), got "
                             "input_shape={}".format(where, self.input_shape))
        self.pool_dims = list(check_spp_args(where, pool_dims, mode, implementation))
        self.mode = mode
        self.implementation = implementation

    def get_output_shape_for(self, input_shape):
        return tuple(input_shape[:2]) + (spp_output_size(self.pool_dims),)

    def get_output_for(self, input, **kwargs):
        return spatial_pyramid_pool(input, self.pool_dims, self.mode, self.implementation,
                                    where=self._where())


class GlobalPoolLayer(Layer):
    """Global pooling: reduces every axis after the second, ``(batch,
    channels, ...)`` to ``(batch, channels)``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape (at
        least 3 dimensions).
    pool_function : callable (default: torch.mean)
        Called as ``pool_function(x, dim=2)`` on the input with its trailing
        axes flattened into one, e.g. ``torch.mean``, ``torch.amax``,
        ``torch.sum``, ``torch.logsumexp`` or ``torch.max``; a function that
        returns ``(values, indices)`` (``torch.max``, ``torch.median``)
        contributes its values.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> import torch
    >>> from lasagne.layers import InputLayer, GlobalPoolLayer
    >>> GlobalPoolLayer(InputLayer((None, 512, 7, 7)), torch.amax).output_shape
    (None, 512)
    """

    def __init__(self, incoming, pool_function=torch.mean, **kwargs):
        super(GlobalPoolLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        if len(self.input_shape) < 3:
            raise ValueError("{}: expected an input with at least 3 dimensions (batch, channels, "
                             "axes to pool), got input_shape={}".format(where, self.input_shape))
        if not callable(pool_function):
            raise TypeError("{}: pool_function must be callable as pool_function(x, dim=2), got "
                            "{!r}".format(where, pool_function))
        self.pool_function = pool_function

    def get_output_shape_for(self, input_shape):
        return tuple(input_shape[:2])

    def get_output_for(self, input, **kwargs):
        pooled = self.pool_function(input.flatten(2), dim=2)
        if isinstance(pooled, tuple):  # (values, indices), e.g. torch.max
            pooled = pooled[0]
        return pooled
