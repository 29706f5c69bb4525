"""Layers with a guaranteed fast GPU path: cuDNN convolution and batch
normalization, and our own pooling and spatial pyramid pooling kernels.

Import this module explicitly (``import lasagne.layers.dnn``); it is not part
of ``lasagne.layers``. Unlike the original, importing it never fails for lack
of a GPU: on a CPU every layer computes the same function through the
portable path. On CUDA the "dnn" promise is kept: convolution and batch
normalization are computed by cuDNN, and a missing or disabled cuDNN is a
clear error, never a silent slow fallback.

The layers reuse the core layers' argument handling and shape arithmetic;
each class here only fixes the algorithm, the defaults and the extra checks
of the original dnn layer.
"""

__all__ = []

# --- convolution: Conv2DDNNLayer, Conv3DDNNLayer -----------------------------

from .. import init as _init  # noqa: E402
from .. import nonlinearities as _nonlinearities  # noqa: E402
from .conv import BaseConvLayer as _BaseConvLayer  # noqa: E402

__all__ += ["Conv2DDNNLayer", "Conv3DDNNLayer"]


class Conv2DDNNLayer(_BaseConvLayer):
    """2D convolution layer computed by cuDNN:
    ``nonlinearity(conv2d(input, W) + b)``.

    The same layer as :class:`lasagne.layers.Conv2DLayer` (see
    :class:`lasagne.layers.BaseConvLayer` for the shape arithmetic and every
    parameter), except that it defaults to ``flip_filters=False``
    (cross-correlation) and fixes ``algorithm='cudnn'``: on CUDA the
    convolution and its gradients are computed by cuDNN and nothing else
    (a tied bias rides in the same operator where PyTorch's backend
    selection confirms cuDNN, see :mod:`lasagne.ops.conv`), and a missing
    or disabled cuDNN (``torch.backends.cudnn.enabled = False``) raises
    ``RuntimeError`` naming the layer. On a CPU it computes the same
    function with PyTorch's convolution.

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
    >>> from lasagne.layers.dnn import Conv2DDNNLayer
    >>> l_in = InputLayer((None, 64, 56, 56))
    >>> Conv2DDNNLayer(l_in, num_filters=64, filter_size=3, pad=1).output_shape
    (None, 64, 56, 56)
    """

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1), pad=0,
                 untie_biases=False, W=_init.GlorotUniform(), b=_init.Constant(0.),
                 nonlinearity=_nonlinearities.rectify, flip_filters=False, num_groups=1,
                 **kwargs):
        super(Conv2DDNNLayer, self).__init__(incoming, num_filters, filter_size, stride, pad,
                                             untie_biases, W, b, nonlinearity, flip_filters,
                                             num_groups, n=2, algorithm="cudnn", **kwargs)


class Conv3DDNNLayer(_BaseConvLayer):
    """3D convolution layer computed by cuDNN:
    ``nonlinearity(conv3d(input, W) + b)``.

    The same layer as :class:`lasagne.layers.Conv3DLayer` with
    ``flip_filters=False`` by default and ``algorithm='cudnn'`` fixed; see
    :class:`Conv2DDNNLayer` for what that guarantees.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        Input ``(batch, in_channels, depth, rows, columns)``.
    num_filters : int
    filter_size : int or tuple of 3 ints
    stride : int or tuple of 3 ints (default: (1, 1, 1))
    pad : int, tuple of 3 ints, 'valid', 'full' or 'same' (default: 0)
    untie_biases : bool (default: False)
        With True, ``b`` has shape ``(num_filters, out_depth, out_rows,
        out_columns)``.
    W : numpy array, tensor, Parameter or callable (default: GlorotUniform())
        Shape ``(num_filters, in_channels // num_groups, depth, rows,
        columns)``.
    b : numpy array, tensor, Parameter, callable or None (default: Constant(0.))
    nonlinearity : callable or None (default: rectify)
    flip_filters : bool (default: False)
    num_groups : int (default: 1)
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> from lasagne.layers.dnn import Conv3DDNNLayer
    >>> l_in = InputLayer((None, 3, 16, 112, 112))
    >>> Conv3DDNNLayer(l_in, num_filters=64, filter_size=3, pad=1).output_shape
    (None, 64, 16, 112, 112)
    """

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1, 1), pad=0,
                 untie_biases=False, W=_init.GlorotUniform(), b=_init.Constant(0.),
                 nonlinearity=_nonlinearities.rectify, flip_filters=False, num_groups=1,
                 **kwargs):
        super(Conv3DDNNLayer, self).__init__(incoming, num_filters, filter_size, stride, pad,
                                             untie_biases, W, b, nonlinearity, flip_filters,
                                             num_groups, n=3, algorithm="cudnn", **kwargs)


# --- pooling: Pool2DDNNLayer, MaxPool2DDNNLayer, Pool3DDNNLayer, MaxPool3DDNNLayer,
#     SpatialPyramidPoolingDNNLayer ----------------------------------------------

from .pool import Pool2DLayer as _Pool2DLayer  # noqa: E402
from .pool import Pool3DLayer as _Pool3DLayer  # noqa: E402
from .pool import SpatialPyramidPoolingLayer as _SpatialPyramidPoolingLayer  # noqa: E402

__all__ += ["Pool2DDNNLayer", "MaxPool2DDNNLayer", "Pool3DDNNLayer", "MaxPool3DDNNLayer",
            "SpatialPyramidPoolingDNNLayer"]


def _no_partial_windows(layer, ignore_border, name, core):
    """The dnn pooling layers only pool whole windows (as cuDNN did)."""
    if not ignore_border:
        layer.name = name
        raise NotImplementedError(
            "{}: ignore_border=False (partial windows) is not supported by the dnn pooling "
            "layers; use lasagne.layers.{} for it, or ignore_border=True".format(
                layer._where(), core))


class Pool2DDNNLayer(_Pool2DLayer):
    """2D max or average pooling over the two trailing axes of a ``(batch,
    channels, rows, columns)`` input, with whole windows only.

    The same layer as :class:`lasagne.layers.Pool2DLayer` (see
    :class:`lasagne.layers.pool.BasePoolLayer` for every parameter), except
    that ``ignore_border`` must stay True. Any pad below the pool size works
    (the original documented "below the stride" but never enforced it; the
    Model Zoo's GoogLeNet uses ``pool_size=3, stride=1, pad=1``). Max
    pooling pads with a value below every input, so each output is an input
    element. On CUDA the forward and backward run on the GPU without host
    synchronisation and the backward is deterministic.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    pool_size : int or iterable of int
        The window size (one int for both axes, or two).
    stride : int, iterable of int or None (default: None)
        The step between windows; None means ``pool_size``.
    pad : int or iterable of int (default: (0, 0))
        Padding on both sides of each axis, each below its pool size.
    ignore_border : bool (default: True)
        Must be True; False raises ``NotImplementedError``.
    mode : str (default: 'max')
        ``'max'``, ``'average_inc_pad'`` or ``'average_exc_pad'``.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> from lasagne.layers.dnn import MaxPool2DDNNLayer
    >>> l_in = InputLayer((None, 192, 28, 28))
    >>> MaxPool2DDNNLayer(l_in, pool_size=3, stride=1, pad=1).output_shape
    (None, 192, 28, 28)
    """

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0), ignore_border=True,
                 mode="max", **kwargs):
        _no_partial_windows(self, ignore_border, kwargs.get("name"), "Pool2DLayer")
        super(Pool2DDNNLayer, self).__init__(incoming, pool_size, stride, pad, True, mode,
                                             **kwargs)


class MaxPool2DDNNLayer(Pool2DDNNLayer):
    """2D max pooling: :class:`Pool2DDNNLayer` with ``mode='max'``.

    Parameters
    ----------
    incoming, pool_size, stride=None, pad=(0, 0), ignore_border=True, **kwargs
        See :class:`Pool2DDNNLayer`.
    """

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0), ignore_border=True,
                 **kwargs):
        super(MaxPool2DDNNLayer, self).__init__(incoming, pool_size, stride, pad, ignore_border,
                                                mode="max", **kwargs)


class Pool3DDNNLayer(_Pool3DLayer):
    """3D max or average pooling over the three trailing axes of a
    ``(batch, channels, depth, rows, columns)`` input, with whole windows
    only.

    The same layer as :class:`lasagne.layers.Pool3DLayer`, except that
    ``ignore_border`` must stay True; see :class:`Pool2DDNNLayer`.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    pool_size : int or iterable of int
        The window size (one int for all axes, or three).
    stride : int, iterable of int or None (default: None)
        The step between windows; None means ``pool_size``.
    pad : int or iterable of int (default: (0, 0, 0))
        Padding on both sides of each axis, each below its pool size.
    ignore_border : bool (default: True)
        Must be True; False raises ``NotImplementedError``.
    mode : str (default: 'max')
        ``'max'``, ``'average_inc_pad'`` or ``'average_exc_pad'``.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> from lasagne.layers.dnn import MaxPool3DDNNLayer
    >>> MaxPool3DDNNLayer(InputLayer((None, 64, 16, 112, 112)), pool_size=2).output_shape
    (None, 64, 8, 56, 56)
    """

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0, 0), ignore_border=True,
                 mode="max", **kwargs):
        _no_partial_windows(self, ignore_border, kwargs.get("name"), "Pool3DLayer")
        super(Pool3DDNNLayer, self).__init__(incoming, pool_size, stride, pad, True, mode,
                                             **kwargs)


class MaxPool3DDNNLayer(Pool3DDNNLayer):
    """3D max pooling: :class:`Pool3DDNNLayer` with ``mode='max'``.

    Parameters
    ----------
    incoming, pool_size, stride=None, pad=(0, 0, 0), ignore_border=True, **kwargs
        See :class:`Pool3DDNNLayer`.
    """

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0, 0), ignore_border=True,
                 **kwargs):
        super(MaxPool3DDNNLayer, self).__init__(incoming, pool_size, stride, pad, ignore_border,
                                                mode="max", **kwargs)


class SpatialPyramidPoolingDNNLayer(_SpatialPyramidPoolingLayer):
    """Spatial pyramid pooling: ``(batch, channels, rows, columns)`` to
    ``(batch, channels, sum(n*n for n in pool_dims))`` for any input size.

    The same layer as :class:`lasagne.layers.SpatialPyramidPoolingLayer`
    (see there for the bins of ``'fast'`` and ``'kaiming'``); like it, it
    gives exactly ``sum(n*n)`` features for every input size, also where the
    original dnn layer's bins failed (an axis shorter than ``n``, or sizes
    such as 6, 7 or 11 for ``n=4``). The input is read once for all levels
    (on CUDA, a planar batch's max pooling sweeps a channels-last copy).

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape;
        rows and columns may be None.
    pool_dims : list of int (default: [4, 2, 1])
        The grid size ``n`` of each level.
    mode : str (default: 'max')
        ``'max'``, ``'average_inc_pad'`` or ``'average_exc_pad'`` (both
        averages are the mean of a bin).
    implementation : 'fast' or 'kaiming' (default: 'fast')
        The bin scheme; ``'fast'`` reproduces the original's bins.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> from lasagne.layers.dnn import SpatialPyramidPoolingDNNLayer
    >>> l_in = InputLayer((None, 512, None, None))
    >>> SpatialPyramidPoolingDNNLayer(l_in, pool_dims=[6, 3, 2, 1]).output_shape
    (None, 512, 50)
    """

    def __init__(self, incoming, pool_dims=[4, 2, 1], mode="max", implementation="fast",
                 **kwargs):
        super(SpatialPyramidPoolingDNNLayer, self).__init__(incoming, pool_dims, mode,
                                                            implementation, **kwargs)


# --- batch normalization: BatchNormDNNLayer, batch_norm_dnn ----------------------

import torch  # noqa: E402

from .. import init as _bn_init  # noqa: E402
from ..ops import batchnorm as _bn_ops  # noqa: E402
from .normalization import BatchNormLayer as _BatchNormLayer  # noqa: E402
from .normalization import _stack_batch_norm  # noqa: E402

__all__ += ["BatchNormDNNLayer", "batch_norm_dnn"]


class BatchNormDNNLayer(_BatchNormLayer):
    """Batch normalization computed by cuDNN on CUDA:
    ``(x - mean) * (gamma * inv_std) + beta``.

    A drop-in replacement for :class:`lasagne.layers.BatchNormLayer` (same
    parameters, switches and moving averages) that normalizes either over
    all axes but the second ("spatial", ``axes='auto'``) or over the batch
    axis only ("per-activation", ``axes=0``).

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape: 2D,
        4D or 5D.
    axes : 'auto', 0 or the equivalent tuple (default: 'auto')
        ``'auto'`` (or the tuple it stands for, e.g. ``(0, 2, 3)`` for 4D
        input) normalizes over every axis but the second; ``0`` or ``(0,)``
        over the mini-batch only, with one statistic per activation.
    epsilon : float (default: 1e-4)
        Added to the variance; must not be below 1e-5 (cuDNN's minimum).
    alpha : float (default: 0.1)
        Weight of the current batch in the moving averages of the mean and
        of ``inv_std``.
    beta, gamma : array, tensor, callable or None
        Shift (default ``init.Constant(0)``) and scale (default
        ``init.Constant(1)``); None fixes them to 0 and 1.
    mean, inv_std : array, tensor or callable
        Initial moving averages (defaults ``init.Constant(0)`` and
        ``init.Constant(1)``).
    **kwargs
        ``name``, passed to :class:`Layer`.

    Notes
    -----
    How it computes, on CUDA, with batch statistics (training), by the
    policy of :func:`lasagne.ops.batchnorm.dnn_backend` (each choice the
    fastest measured on an H100; ``bench/NOTES.md``):

    * planar (NCHW) spatial batches with planes of at least 80x80 in
      float32/float16, or of at least 56x56 in bfloat16: our Triton kernels
      (float32 statistics; only the input and the statistics are kept for
      backward, never a normalized copy);
    * other float32, float16 (float32 parameters) and float64 spatial
      batches: ``torch.cudnn_batch_norm``, called explicitly, on the tensor
      as it is (NCHW or channels_last); it keeps the input, the statistics
      and cuDNN's reserve space. A missing or disabled cuDNN is a
      ``RuntimeError``;
    * bfloat16 otherwise, and the per-activation mode: PyTorch's own
      one-pass kernel (PyTorch's wrapper of cuDNN rejects bfloat16 input
      with float32 parameters; per activation, cuDNN measured 3-9x slower).
    * With the moving averages (``deterministic=True``) the normalization is
      one elementwise pass, which needs no cuDNN.

    Without Triton installed, the Triton cases go to cuDNN (float32/float16)
    or to PyTorch's kernel (bfloat16).

    On CPU the layer computes the same function with PyTorch's kernels.

    :meth:`get_fused_output_for` computes the layer followed by a rectifier
    in one pass forward and backward (Triton kernels on CUDA); graph
    evaluators use it for the pair :func:`batch_norm_dnn` builds.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> from lasagne.layers.dnn import BatchNormDNNLayer
    >>> l_in = InputLayer((None, 16, 32, 32))
    >>> BatchNormDNNLayer(l_in).output_shape
    (None, 16, 32, 32)
    >>> BatchNormDNNLayer(l_in, axes=0).gamma.shape
    torch.Size([16, 32, 32])
    """

    _backend = "dnn"

    def __init__(self, incoming, axes='auto', epsilon=1e-4, alpha=0.1,
                 beta=_bn_init.Constant(0), gamma=_bn_init.Constant(1),
                 mean=_bn_init.Constant(0), inv_std=_bn_init.Constant(1), **kwargs):
        super(BatchNormDNNLayer, self).__init__(incoming, axes, epsilon, alpha, beta, gamma,
                                                mean, inv_std, **kwargs)

    def _check_arguments(self, axes):
        ndim = len(self.input_shape)
        if ndim not in (2, 4, 5):
            raise ValueError("{}: the input must be 2D, 4D or 5D, got input shape {}".format(
                self._where(), self.input_shape))
        spatial = _bn_ops.spatial_axes(ndim)
        if self.axes not in (spatial, (0,)):
            raise ValueError("{}: axes must be 'auto' (or {}) or 0 (per-activation), got "
                             "axes={!r}".format(self._where(), spatial, axes))
        if self.epsilon < 1e-5:
            raise ValueError("{}: epsilon must be at least 1e-5 (cuDNN's minimum), got "
                             "{!r}".format(self._where(), self.epsilon))

    @property
    def mode(self):
        """``'spatial'`` or ``'per-activation'`` (the same for 2D input)."""
        return "spatial" if self.axes == _bn_ops.spatial_axes(len(self.input_shape)) \
            else "per-activation"

    def _train_backend(self, input, activation):
        backend = _bn_ops.dnn_backend(input, self.axes, activation)
        if backend == "cudnn" and not torch.compiler.is_compiling():
            reason = _bn_ops.cudnn_unavailable_reason(input)
            if reason is not None:
                raise RuntimeError("{}: cannot normalize with cuDNN: {}".format(
                    self._where(), reason))
        return backend


def batch_norm_dnn(layer, **kwargs):
    """Insert cuDNN batch normalization between a layer and its nonlinearity.

    The same graph surgery as :func:`lasagne.layers.batch_norm` (the
    layer's nonlinearity becomes the identity, its bias is removed and set
    to None, a layer named ``<name>_bn`` and, if there was a nonlinearity,
    a :class:`~lasagne.layers.NonlinearityLayer` named ``<name>_bn_nonlin``
    are stacked on it), with a :class:`BatchNormDNNLayer`.

    Parameters
    ----------
    layer : a :class:`Layer` instance
        The layer to normalize (modified in place).
    **kwargs
        Passed to :class:`BatchNormDNNLayer`.

    Returns
    -------
    BatchNormDNNLayer or NonlinearityLayer
        The top of the new stack.

    Notes
    -----
    The graph is the original's, layer for layer and name for name. The
    normalization and the nonlinearity are two layers, so plain
    :func:`~lasagne.layers.get_output` computes them one after the other;
    a graph evaluator that knows the normalization's output is used only by
    the nonlinearity computes the pair with
    :meth:`BatchNormDNNLayer.get_fused_output_for` in one pass.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> from lasagne.layers.dnn import Conv2DDNNLayer, batch_norm_dnn
    >>> l_in = InputLayer((None, 3, 32, 32))
    >>> l = batch_norm_dnn(Conv2DDNNLayer(l_in, 16, 3, name='conv1'))
    >>> l.name, l.input_layer.name, l.input_layer.input_layer.b
    ('conv1_bn_nonlin', 'conv1_bn', None)
    """
    return _stack_batch_norm(layer, BatchNormDNNLayer, kwargs)
