"""Convolution layers: :class:`BaseConvLayer` (the shared argument handling,
parameters and shape arithmetic) and the core :class:`Conv1DLayer`,
:class:`Conv2DLayer` and :class:`Conv3DLayer`.

The cuDNN and GEMM layers of :mod:`lasagne.layers.dnn` and
:mod:`lasagne.layers.corrmm` are thin subclasses of :class:`BaseConvLayer`
that fix the algorithm and the ``flip_filters`` default.
"""

import torch

from .. import init
from .. import nonlinearities
from ..ops.conv import ALGORITHMS, add_bias, convolve
from ..ops.lengths import check_positive_lengths, conv_output_length, resolve_conv_pad
from ..utils import int_types
from .base import Layer

__all__ = ["BaseConvLayer", "Conv1DLayer", "Conv2DLayer", "Conv3DLayer"]


def _positive_int(where, name, value):
    if isinstance(value, bool) or not isinstance(value, int_types) or value <= 0:
        raise ValueError("{}: {} must be a positive int, got {!r}".format(where, name, value))
    return int(value)


def _positive_ints(where, name, value, n):
    """An int or an n-tuple of ints, all positive, as an n-tuple."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int_types) or v <= 0
                               for v in values):
        raise ValueError("{}: {} must be a positive int or a tuple of {} positive ints, got {!r}"
                         .format(where, name, n, value))
    return tuple(int(v) for v in values)


class BaseConvLayer(Layer):
    """Convolution over ``n`` spatial axes, then a bias and a nonlinearity:
    ``nonlinearity(conv(input, W) + b)``.

    The shared base of every convolution layer. For an input
    ``(batch, in_channels, *spatial)`` the output is
    ``(batch, num_filters, *out)`` with, on each axis,
    ``out = ceil((in + 2*pad - filter_size + 1) / stride)``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape
        ``(batch, in_channels, *spatial)``; ``in_channels`` must be known.
    num_filters : int
        The number of filters (output channels).
    filter_size : int or tuple of int
        The filter size, one int per spatial axis or one for all.
    stride : int or tuple of int (default: 1)
        The step between filter applications on each axis.
    pad : int, tuple of int, 'valid', 'full' or 'same' (default: 0)
        Symmetric zero padding of each spatial axis: an int for all axes, a
        tuple per axis; ``'valid'`` is 0, ``'full'`` is ``filter_size - 1``
        (every position where filter and input overlap), ``'same'`` is
        ``filter_size // 2`` (the output has the input's size with stride 1;
        with a stride it still pads ``filter_size // 2`` on both sides).
        ``'same'`` needs odd filter sizes.
    untie_biases : bool (default: False)
        False: one bias per filter, ``b`` of shape ``(num_filters,)``.
        True: one bias per filter and output position, ``b`` of shape
        ``(num_filters, *out)`` (the spatial input size must be known).
    W : numpy array, tensor, Parameter or callable (default: GlorotUniform())
        The filters, shape ``(num_filters, in_channels // num_groups,
        *filter_size)``, stored as given (also with ``flip_filters=True``).
        A ``torch.nn.Parameter`` is used as is, so layers can share it. See
        :func:`lasagne.utils.create_param`.
    b : numpy array, tensor, Parameter, callable or None (default: Constant(0.))
        The biases (shape above); ``None`` for no bias.
    nonlinearity : callable or None (default: rectify)
        Applied to the result; ``None`` means the identity.
    flip_filters : bool (default: True)
        True: a true convolution (each filter flipped on every spatial axis
        before it slides over the input). False: a cross-correlation (what
        ``torch.nn.Conv*d`` computes). Weights learnt with one setting need
        the same setting to give the same outputs.
    num_groups : int (default: 1)
        Split input and output channels into this many groups, each
        convolved separately; it must divide ``in_channels`` and
        ``num_filters``.
    n : int or None (default: None)
        The number of spatial axes (1, 2 or 3); taken from the input's
        dimensionality if None.
    algorithm : 'auto', 'cudnn' or 'gemm' (default: 'auto')
        How the convolution is computed: ``'auto'`` lets PyTorch pick the
        kernel, ``'cudnn'`` calls cuDNN explicitly on CUDA (an error if cuDNN
        is missing or disabled), ``'gemm'`` is the explicit im2col + matrix
        product with bounded workspace (see :mod:`lasagne.ops.conv`). All
        compute the same function.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Attributes
    ----------
    W : torch.nn.Parameter
    b : torch.nn.Parameter or None
    pad : tuple of int, 'full' or 'same'
        As given (``'valid'`` and ints become tuples).
    """

    def __init__(self, incoming, num_filters, filter_size, stride=1, pad=0, untie_biases=False,
                 W=init.GlorotUniform(), b=init.Constant(0.), nonlinearity=nonlinearities.rectify,
                 flip_filters=True, num_groups=1, n=None, algorithm="auto", **kwargs):
        super(BaseConvLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        rank = len(self.input_shape)
        if n is None:
            n = rank - 2
        if n not in (1, 2, 3) or rank != n + 2:
            raise ValueError("{}: expected a {} input (batch, channels, spatial axes), got "
                             "input_shape={}".format(where, "{}D".format(n + 2) if n in (1, 2, 3)
                                                     else "3D, 4D or 5D", self.input_shape))
        self.n = n
        self.num_filters = _positive_int(where, "num_filters", num_filters)
        self.filter_size = _positive_ints(where, "filter_size", filter_size, n)
        self.stride = _positive_ints(where, "stride", stride, n)
        self.num_groups = _positive_int(where, "num_groups", num_groups)
        self.untie_biases = bool(untie_biases)
        self.flip_filters = bool(flip_filters)
        self.nonlinearity = nonlinearities.identity if nonlinearity is None else nonlinearity
        if algorithm not in ALGORITHMS:
            raise ValueError("{}: algorithm must be one of {}, got {!r}".format(
                where, ALGORITHMS, algorithm))
        self.algorithm = algorithm
        try:
            self._pads = resolve_conv_pad(pad, self.filter_size)
        except NotImplementedError as e:
            raise NotImplementedError("{}: {}".format(where, e)) from None
        except ValueError as e:
            raise ValueError("{}: {}".format(where, e)) from None
        self.pad = pad if pad in ("full", "same") and isinstance(pad, str) else self._pads

        in_channels = self.input_shape[1]
        if in_channels is None:
            raise ValueError("{}: the number of input channels (axis 1 of input_shape={}) must "
                             "be known to create W".format(where, self.input_shape))
        if in_channels % self.num_groups or self.num_filters % self.num_groups:
            raise ValueError("{}: num_groups={} must divide both the input channels ({}) and "
                             "num_filters ({})".format(where, self.num_groups, in_channels,
                                                       self.num_filters))
        out = self.output_shape[2:]
        check_positive_lengths(where, out, "input_shape={} is too small for filter_size={} "
                               "with pad={!r}".format(self.input_shape, self.filter_size, pad))
        if self.untie_biases and any(s is None for s in out):
            raise ValueError("{}: untie_biases=True needs the spatial input size, got "
                             "input_shape={}".format(where, self.input_shape))

        self.W = self.add_param(W, self.get_W_shape(), name="W")
        if b is None:
            self.b = None
        else:
            shape = (self.num_filters,) + (tuple(out) if self.untie_biases else ())
            self.b = self.add_param(b, shape, name="b", regularizable=False)

    def get_W_shape(self):
        """The shape of ``W``: ``(num_filters, in_channels // num_groups,
        *filter_size)``."""
        return (self.num_filters, self.input_shape[1] // self.num_groups) + self.filter_size

    def get_output_shape_for(self, input_shape):
        out = tuple(conv_output_length(s, f, st, p) for s, f, st, p in
                    zip(input_shape[2:], self.filter_size, self.stride, self._pads))
        return (input_shape[0], self.num_filters) + out

    def get_output_for(self, input, **kwargs):
        untied = self.untie_biases and self.b is not None
        # a tied bias is added inside the convolution operator (one operator
        # forward and backward, as in torch.nn), an untied one after it
        conved = self._convolve(input, None if untied else self.b)
        if untied:
            if conved.shape[2:] != self.b.shape[1:] and not torch.compiler.is_compiling():
                raise ValueError("{}: untie_biases=True fixes the output size to {}, the input {} "
                                 "gives {}".format(self._where(), tuple(self.b.shape[1:]),
                                                   tuple(input.shape), tuple(conved.shape[2:])))
            conved = add_bias(conved, self.b)
        return self.nonlinearity(conved)

    def convolve(self, input, **kwargs):
        """The convolution alone (no bias, no nonlinearity)."""
        return self._convolve(input, None)

    def _convolve(self, input, b):
        return convolve(input, self.W, self.stride, self._pads, self.flip_filters,
                        self.num_groups, self.algorithm, where=self._where(), b=b)


class Conv1DLayer(BaseConvLayer):
    """1D convolution layer: ``nonlinearity(conv1d(input, W) + b)``.

    Input ``(batch, channels, length)``, output
    ``(batch, num_filters, out_length)``. See :class:`BaseConvLayer` for the
    parameters; ``filter_size``, ``stride`` and a tuple ``pad`` have one
    element.

    Parameters
    ----------
    incoming, num_filters, filter_size, stride=1, pad=0, untie_biases=False,
    W=GlorotUniform(), b=Constant(0.), nonlinearity=rectify,
    flip_filters=True, num_groups=1, algorithm='auto', **kwargs
        As for :class:`BaseConvLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, Conv1DLayer
    >>> l_in = InputLayer((None, 3, 100))
    >>> Conv1DLayer(l_in, num_filters=8, filter_size=5, pad='same').output_shape
    (None, 8, 100)
    """

    def __init__(self, incoming, num_filters, filter_size, stride=1, pad=0, untie_biases=False,
                 W=init.GlorotUniform(), b=init.Constant(0.), nonlinearity=nonlinearities.rectify,
                 flip_filters=True, num_groups=1, algorithm="auto", **kwargs):
        super(Conv1DLayer, self).__init__(incoming, num_filters, filter_size, stride, pad,
                                          untie_biases, W, b, nonlinearity, flip_filters,
                                          num_groups, n=1, algorithm=algorithm, **kwargs)


class Conv2DLayer(BaseConvLayer):
    """2D convolution layer: ``nonlinearity(conv2d(input, W) + b)``.

    Input ``(batch, channels, rows, columns)``, output
    ``(batch, num_filters, out_rows, out_columns)``. A true convolution by
    default (``flip_filters=True``, as the original Lasagne's
    ``Conv2DLayer``); :class:`lasagne.layers.dnn.Conv2DDNNLayer` and
    :class:`lasagne.layers.corrmm.Conv2DMMLayer` default to
    cross-correlation, so moving weights between them needs the flag. See
    :class:`BaseConvLayer` for the parameters.

    Parameters
    ----------
    incoming, num_filters, filter_size, stride=(1, 1), pad=0,
    untie_biases=False, W=GlorotUniform(), b=Constant(0.),
    nonlinearity=rectify, flip_filters=True, num_groups=1, algorithm='auto',
    **kwargs
        As for :class:`BaseConvLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, Conv2DLayer
    >>> l_in = InputLayer((None, 3, 32, 32))
    >>> l_conv = Conv2DLayer(l_in, num_filters=16, filter_size=3, stride=2, pad='same')
    >>> l_conv.output_shape
    (None, 16, 16, 16)
    >>> tuple(l_conv.W.shape)
    (16, 3, 3, 3)
    """

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1), pad=0,
                 untie_biases=False, W=init.GlorotUniform(), b=init.Constant(0.),
                 nonlinearity=nonlinearities.rectify, flip_filters=True, num_groups=1,
                 algorithm="auto", **kwargs):
        super(Conv2DLayer, self).__init__(incoming, num_filters, filter_size, stride, pad,
                                          untie_biases, W, b, nonlinearity, flip_filters,
                                          num_groups, n=2, algorithm=algorithm, **kwargs)


class Conv3DLayer(BaseConvLayer):
    """3D convolution layer: ``nonlinearity(conv3d(input, W) + b)``.

    Input ``(batch, channels, depth, rows, columns)``, output
    ``(batch, num_filters, out_depth, out_rows, out_columns)``; a true
    convolution by default. See :class:`BaseConvLayer` for the parameters.

    Parameters
    ----------
    incoming, num_filters, filter_size, stride=(1, 1, 1), pad=0,
    untie_biases=False, W=GlorotUniform(), b=Constant(0.),
    nonlinearity=rectify, flip_filters=True, num_groups=1, algorithm='auto',
    **kwargs
        As for :class:`BaseConvLayer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, Conv3DLayer
    >>> l_in = InputLayer((None, 1, 16, 32, 32))
    >>> Conv3DLayer(l_in, num_filters=4, filter_size=(3, 5, 5)).output_shape
    (None, 4, 14, 28, 28)
    """

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1, 1), pad=0,
                 untie_biases=False, W=init.GlorotUniform(), b=init.Constant(0.),
                 nonlinearity=nonlinearities.rectify, flip_filters=True, num_groups=1,
                 algorithm="auto", **kwargs):
        super(Conv3DLayer, self).__init__(incoming, num_filters, filter_size, stride, pad,
                                          untie_biases, W, b, nonlinearity, flip_filters,
                                          num_groups, n=3, algorithm=algorithm, **kwargs)
