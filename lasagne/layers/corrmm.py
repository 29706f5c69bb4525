"""The GEMM convolution layer (the original's ``GpuCorrMM`` layer).

Import this module explicitly (``import lasagne.layers.corrmm``); it is not
part of ``lasagne.layers``. Unlike the original it works on every device: the
GEMM algorithm of :mod:`lasagne.ops.conv_gemm` (im2col + matrix product,
chunked under a workspace cap, deterministic) runs on CPU and CUDA alike.
"""

from .. import init
from .. import nonlinearities
from .conv import BaseConvLayer

__all__ = ["Conv2DMMLayer"]


class Conv2DMMLayer(BaseConvLayer):
    """2D convolution layer computed by an explicit GEMM:
    ``nonlinearity(conv2d(input, W) + b)``.

    The same layer as :class:`lasagne.layers.Conv2DLayer` (see
    :class:`lasagne.layers.BaseConvLayer` for the shape arithmetic and every
    parameter), except that it defaults to ``flip_filters=False``
    (cross-correlation) and fixes ``algorithm='gemm'``: the input is unrolled
    into a column matrix chunk by chunk, never more than
    ``lasagne.ops.conv_gemm.DEFAULT_WORKSPACE_BYTES`` (256 MiB) of
    temporaries at once, and multiplied with the filters; the backward pass
    recomputes the columns instead of storing them, and its results are
    bitwise reproducible.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        Input ``(batch, in_channels, rows, columns)``.
    num_filters : int
    filter_size : int or tuple of 2 ints
    stride : int or tuple of 2 ints (default: (1, 1))
    pad : int, tuple of 2 ints, 'valid', 'full' or 'same' (default: 0)
    untie_biases : bool (default: False)
        With True, ``b`` has shape ``(num_filters, out_rows, out_columns)``.
    W : numpy array, tensor, Parameter or callable (default: GlorotUniform())
        Shape ``(num_filters, in_channels // num_groups, rows, columns)``.
    b : numpy array, tensor, Parameter, callable or None (default: Constant(0.))
    nonlinearity : callable or None (default: rectify)
    flip_filters : bool (default: False)
        Set it to True to use weights learnt by a
        :class:`lasagne.layers.Conv2DLayer` (whose default is True).
    num_groups : int (default: 1)
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> from lasagne.layers.corrmm import Conv2DMMLayer
    >>> l_in = InputLayer((None, 3, 32, 32))
    >>> Conv2DMMLayer(l_in, num_filters=16, filter_size=5, pad='full').output_shape
    (None, 16, 36, 36)
    """

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1), pad=0,
                 untie_biases=False, W=init.GlorotUniform(), b=init.Constant(0.),
                 nonlinearity=nonlinearities.rectify, flip_filters=False, num_groups=1,
                 **kwargs):
        super(Conv2DMMLayer, self).__init__(incoming, num_filters, filter_size, stride, pad,
                                            untie_biases, W, b, nonlinearity, flip_filters,
                                            num_groups, n=2, algorithm="gemm", **kwargs)
