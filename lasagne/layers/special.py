"""Layers that apply a simple elementwise or user-given transformation:
nonlinearities, learned biases and scales, fixed standardization, arbitrary
expressions, and parametric / randomized rectifiers."""

import numpy as np
import torch

from .. import init
from .. import nonlinearities
from ..random import get_rng
from ..utils import int_types
from .base import Layer, MergeLayer

__all__ = ["NonlinearityLayer", "BiasLayer", "ScaleLayer", "standardize", "ExpressionLayer",
           "InverseLayer", "ParametricRectifierLayer", "prelu", "RandomizedRectifierLayer",
           "rrelu"]


def _normalize_axes(where, argname, axes, ndim, auto):
    """Turn ``'auto'``, an int or a sequence of ints into a sorted tuple of
    distinct non-negative axes of an ``ndim``-dimensional input.

    ``auto`` is what ``'auto'`` stands for. Negative axes count from the end.
    """
    if isinstance(axes, str):
        if axes != 'auto':
            raise ValueError("{}: {} must be 'auto', an int or a tuple of ints, got {!r}".format(
                where, argname, axes))
        axes = auto
    elif isinstance(axes, int_types):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError("{}: {} must be 'auto', an int or a tuple of ints, got {!r}".format(
            where, argname, axes))
    result = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int_types):
            raise TypeError("{}: {} must contain ints, got {!r}".format(where, argname, axes))
        if not -ndim <= a < ndim:
            raise ValueError("{}: {} contains axis {}, but the input has {} dimensions".format(
                where, argname, a, ndim))
        result.append(int(a) % ndim)
    if len(set(result)) != len(result):
        raise ValueError("{}: {} names an axis twice: {!r}".format(where, argname, axes))
    return tuple(sorted(result))


def _param_shape(layer, argname, shared_axes):
    """Shape of a parameter spanning the axes not in ``shared_axes``."""
    shape = tuple(s for axis, s in enumerate(layer.input_shape) if axis not in shared_axes)
    if any(s is None for s in shape):
        raise ValueError("{}: the input sizes must be known on every axis the {} are not shared "
                         "over, got input shape {} with shared_axes={}".format(
                             layer._where(), argname, layer.input_shape, shared_axes))
    return shape


def _broadcastable(param, shared_axes):
    """View ``param`` with a size-1 axis inserted at every shared axis."""
    shape = list(param.shape)
    for axis in shared_axes:
        shape.insert(axis, 1)
    return param.reshape(shape)


class NonlinearityLayer(Layer):
    """Applies a nonlinearity elementwise: ``nonlinearity(x)``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    nonlinearity : callable or None (default: rectify)
        The function to apply; ``None`` means the identity.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, NonlinearityLayer
    >>> from lasagne.nonlinearities import tanh
    >>> NonlinearityLayer(InputLayer((None, 10)), tanh).output_shape
    (None, 10)
    """

    def __init__(self, incoming, nonlinearity=nonlinearities.rectify, **kwargs):
        super(NonlinearityLayer, self).__init__(incoming, **kwargs)
        if nonlinearity is not None and not callable(nonlinearity):
            raise TypeError("{}: nonlinearity must be callable or None, got {!r}".format(
                self._where(), nonlinearity))
        self.nonlinearity = nonlinearities.identity if nonlinearity is None else nonlinearity

    def get_output_for(self, input, **kwargs):
        return self.nonlinearity(input)


class BiasLayer(Layer):
    """Adds a learned bias: ``x + b``, with ``b`` broadcast over
    ``shared_axes``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    b : numpy array, tensor, Parameter, callable or None (default: Constant(0))
        The bias; its shape is the input shape without the shared axes (e.g.
        ``(channels,)`` for the default on a 4D input). ``None``: no bias, the
        layer passes its input through.
    shared_axes : 'auto', int or tuple of int (default: 'auto')
        Axes the bias is shared (broadcast) over. ``'auto'`` shares over
        every axis but axis 1, as the biases of dense and convolution layers.
        Negative axes count from the end.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import BiasLayer
    >>> BiasLayer((20, 30, 40, 50), shared_axes=(0, 2)).b.shape
    torch.Size([30, 50])
    """

    def __init__(self, incoming, b=init.Constant(0), shared_axes='auto', **kwargs):
        super(BiasLayer, self).__init__(incoming, **kwargs)
        ndim = len(self.input_shape)
        self.shared_axes = _normalize_axes(self._where(), "shared_axes", shared_axes, ndim,
                                           (0,) + tuple(range(2, ndim)))
        if b is None:
            self.b = None
        else:
            shape = _param_shape(self, "biases", self.shared_axes)
            self.b = self.add_param(b, shape, name="b", regularizable=False)

    def get_output_for(self, input, **kwargs):
        if self.b is None:
            return input
        return input + _broadcastable(self.b, self.shared_axes)


class ScaleLayer(Layer):
    """Multiplies by learned scales: ``x * scales``, with ``scales`` broadcast
    over ``shared_axes``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    scales : numpy array, tensor, Parameter or callable (default: Constant(1))
        The scales; their shape is the input shape without the shared axes.
        Tagged ``regularizable=False``, as in the original.
    shared_axes : 'auto', int or tuple of int (default: 'auto')
        Axes the scales are shared (broadcast) over; ``'auto'`` means every
        axis but axis 1. Negative axes count from the end.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import ScaleLayer
    >>> ScaleLayer((20, 30, 40, 50), shared_axes=(0, 2)).scales.shape
    torch.Size([30, 50])
    """

    def __init__(self, incoming, scales=init.Constant(1), shared_axes='auto', **kwargs):
        super(ScaleLayer, self).__init__(incoming, **kwargs)
        ndim = len(self.input_shape)
        self.shared_axes = _normalize_axes(self._where(), "shared_axes", shared_axes, ndim,
                                           (0,) + tuple(range(2, ndim)))
        if scales is None:
            raise ValueError("{}: scales must be an array, a tensor, a Parameter or a callable, "
                             "got None".format(self._where()))
        shape = _param_shape(self, "scales", self.shared_axes)
        self.scales = self.add_param(scales, shape, name="scales", regularizable=False)

    def get_output_for(self, input, **kwargs):
        return input * _broadcastable(self.scales, self.shared_axes)


def standardize(layer, offset, scale, shared_axes='auto'):
    """Standardize with fixed statistics: ``(x - offset) / scale``.

    Stacks a :class:`BiasLayer` holding ``-offset`` and a :class:`ScaleLayer`
    holding ``1 / scale``, both with their parameter tagged non-trainable
    (they are still listed by ``get_all_params`` and saved with the
    network).

    Parameters
    ----------
    layer : a :class:`Layer` instance or a tuple
        The layer feeding into the standardization, or its shape.
    offset : numpy array or tensor
        Subtracted from the input; shape as a :class:`BiasLayer` bias with the
        given ``shared_axes``.
    scale : numpy array or tensor
        The input is divided by it; same shape as ``offset``.
    shared_axes : 'auto', int or tuple of int (default: 'auto')
        See :class:`BiasLayer`.

    Returns
    -------
    ScaleLayer
        The top of the two stacked layers.

    Examples
    --------
    >>> import numpy as np
    >>> from lasagne.layers import InputLayer, standardize
    >>> data = np.random.randn(100, 20)
    >>> l_in = InputLayer((None, 20))
    >>> l_std = standardize(l_in, data.mean(0), data.std(0), shared_axes=0)
    """
    offset = _as_param_value(offset)
    scale = _as_param_value(scale)
    layer = BiasLayer(layer, -offset, shared_axes)
    layer.params[layer.b].discard('trainable')
    layer = ScaleLayer(layer, 1 / scale, shared_axes)
    layer.params[layer.scales].discard('trainable')
    return layer


def _as_param_value(x):
    if isinstance(x, torch.Tensor):
        return x.detach()
    return np.asarray(x, dtype=np.float64)


class ExpressionLayer(Layer):
    """Applies a user function to its input: ``function(x)``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    function : callable
        Takes the input tensor and returns the output tensor.
    output_shape : None, tuple, callable or 'auto' (default: None)
        * ``None``: the output shape is the input shape;
        * a tuple: the output shape whatever the input (``None`` for sizes
          that vary);
        * a callable: called with the input shape, returns the output shape;
        * ``'auto'``: inferred by running ``function`` on zeros of the input
          shape (on PyTorch's default device, without gradients). Unknown
          (``None``) input sizes are probed with sizes 2 and 3; an output size
          that differs between the two probes is reported as ``None``. The
          result is cached per input shape.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, ExpressionLayer
    >>> l_in = InputLayer((None, 100, 20))
    >>> ExpressionLayer(l_in, lambda x: x.mean(-1), output_shape='auto').output_shape
    (None, 100)
    """

    _PROBE_SIZES = (2, 3)

    def __init__(self, incoming, function, output_shape=None, **kwargs):
        super(ExpressionLayer, self).__init__(incoming, **kwargs)
        if not callable(function):
            raise TypeError("{}: function must be callable, got {!r}".format(
                self._where(), function))
        self.function = function
        self._auto_cache = {}
        if output_shape is None or (isinstance(output_shape, str) and output_shape == 'auto'):
            self._output_shape = output_shape
        elif isinstance(output_shape, str):
            raise ValueError("{}: output_shape must be None, 'auto', a tuple or a callable, "
                             "got {!r}".format(self._where(), output_shape))
        elif callable(output_shape):
            self._output_shape = None
            self.get_output_shape_for = output_shape
        else:
            try:
                shape = tuple(output_shape)
            except TypeError:
                raise TypeError("{}: output_shape must be None, 'auto', a tuple or a callable, "
                                "got {!r}".format(self._where(), output_shape))
            if not all(s is None or (isinstance(s, int_types) and s >= 0) for s in shape):
                raise ValueError("{}: output_shape must hold non-negative ints or None, got "
                                 "{!r}".format(self._where(), output_shape))
            self._output_shape = tuple(None if s is None else int(s) for s in shape)

    def get_output_shape_for(self, input_shape):
        if self._output_shape is None:
            return input_shape
        if isinstance(self._output_shape, str):
            return self._infer_output_shape(tuple(input_shape))
        return self._output_shape

    def _infer_output_shape(self, input_shape):
        if input_shape in self._auto_cache:
            return self._auto_cache[input_shape]
        unknown = any(s is None for s in input_shape)
        probes = []
        for fill in (self._PROBE_SIZES if unknown else self._PROBE_SIZES[:1]):
            x = torch.zeros(tuple(fill if s is None else s for s in input_shape))
            try:
                with torch.no_grad():
                    y = self.function(x)
            except Exception as e:
                raise ValueError("{}: output_shape='auto' could not run the function on zeros of "
                                 "shape {}: {}: {}".format(self._where(), tuple(x.shape),
                                                          type(e).__name__, e)) from e
            if not isinstance(y, torch.Tensor):
                raise TypeError("{}: output_shape='auto' needs the function to return a tensor, "
                                "got {}".format(self._where(), type(y).__name__))
            probes.append(tuple(y.shape))
        if len(set(len(p) for p in probes)) != 1:
            raise ValueError("{}: output_shape='auto': the output dimensionality depends on the "
                             "unknown input sizes ({}); give output_shape explicitly".format(
                                 self._where(), probes))
        shape = tuple(sizes[0] if len(set(sizes)) == 1 else None for sizes in zip(*probes))
        self._auto_cache[input_shape] = shape
        return shape

    def get_output_for(self, input, **kwargs):
        return self.function(input)


class InverseLayer(MergeLayer):
    """Applies the transpose of the Jacobian of another layer: the gradient
    of ``layer``'s output with respect to its input, given ``incoming`` as
    the output gradient.

    For a :class:`DenseLayer` without nonlinearity this is ``x @ W.T`` (a
    transposed dense layer); for a convolution, the transposed convolution;
    for max pooling, unpooling to the argmax positions. Nonlinearities and
    biases of ``layer`` enter through their derivatives. Useful for
    autoencoders with tied weights.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer (shaped as ``layer``'s output).
    layer : a :class:`Layer` instance
        The layer to invert; its input must be a layer.
    **kwargs
        ``name``, passed to :class:`MergeLayer`.

    Notes
    -----
    The output is computed with ``torch.autograd.grad(..., create_graph=True)``,
    so it is differentiable. Where autograd links ``layer``'s input and output
    in the current ``get_output`` call, that graph is differentiated (as the
    original did); otherwise (the input does not require gradients, or under
    ``torch.no_grad``) ``layer``'s forward is run once more on its input.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DenseLayer, InverseLayer
    >>> l_in = InputLayer((None, 10))
    >>> l_enc = DenseLayer(l_in, num_units=3)
    >>> InverseLayer(l_enc, l_enc).output_shape
    (None, 10)
    """

    def __init__(self, incoming, layer, **kwargs):
        self.name = kwargs.get('name')
        if not isinstance(layer, Layer) or isinstance(layer, MergeLayer) \
                or layer.input_layer is None:
            raise TypeError("{}: layer must be a single-input Layer built on another layer, got "
                            "{!r}".format(self._where(), layer))
        self.inverted_layer = layer
        super(InverseLayer, self).__init__([incoming, layer, layer.input_layer], **kwargs)

    def get_output_shape_for(self, input_shapes):
        return input_shapes[2]

    def get_output_for(self, inputs, **kwargs):
        grad_out, layer_out, layer_in = inputs
        with torch.enable_grad():
            if layer_in.requires_grad and layer_out.grad_fn is not None:
                # differentiate the graph this get_output call built
                x, y = layer_in, layer_out
            else:
                # no graph links the two (e.g. a plain input tensor, or
                # torch.no_grad): run the inverted layer again on its input
                x = layer_in.detach().requires_grad_(True)
                y = self.inverted_layer.get_output_for(x, **kwargs)
            (g,) = torch.autograd.grad(y, x, grad_outputs=grad_out, create_graph=True)
        return g


class ParametricRectifierLayer(Layer):
    """Parametric rectifier (PReLU): ``max(0, x) + alpha * min(0, x)`` with a
    learned slope ``alpha``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    alpha : numpy array, tensor, Parameter or callable (default: Constant(0.25))
        The slopes; shape is the input shape without ``shared_axes``. Tagged
        ``regularizable=False``.
    shared_axes : 'auto', 'all', int or tuple of int (default: 'auto')
        Axes the slopes are shared over; ``'auto'`` is every axis but axis 1,
        ``'all'`` every axis (one scalar slope).
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, ParametricRectifierLayer
    >>> ParametricRectifierLayer(InputLayer((None, 8, 5, 5))).alpha.shape
    torch.Size([8])
    """

    def __init__(self, incoming, alpha=init.Constant(0.25), shared_axes='auto', **kwargs):
        super(ParametricRectifierLayer, self).__init__(incoming, **kwargs)
        ndim = len(self.input_shape)
        if isinstance(shared_axes, str) and shared_axes == 'all':
            shared_axes = tuple(range(ndim))
        self.shared_axes = _normalize_axes(self._where(), "shared_axes", shared_axes, ndim,
                                           (0,) + tuple(range(2, ndim)))
        shape = _param_shape(self, "slopes (alpha)", self.shared_axes)
        self.alpha = self.add_param(alpha, shape, name="alpha", regularizable=False)

    def get_output_for(self, input, **kwargs):
        alpha = _broadcastable(self.alpha, self.shared_axes)
        return torch.clamp(input, min=0) + alpha * torch.clamp(input, max=0)


def prelu(layer, **kwargs):
    """Replace ``layer``'s nonlinearity by a learned parametric rectifier.

    Sets ``layer.nonlinearity`` to the identity and stacks a
    :class:`ParametricRectifierLayer` on it.

    Parameters
    ----------
    layer : a :class:`Layer` instance
        A layer with a ``nonlinearity`` attribute.
    **kwargs
        Passed to :class:`ParametricRectifierLayer`.

    Returns
    -------
    ParametricRectifierLayer
    """
    nonlinearity = getattr(layer, 'nonlinearity', None)
    if nonlinearity is not None:
        layer.nonlinearity = nonlinearities.identity
    return ParametricRectifierLayer(layer, **kwargs)


class RandomizedRectifierLayer(Layer):
    """Randomized leaky rectifier (RReLU): ``max(0, x) + a * min(0, x)``
    with ``a`` drawn uniformly from ``[lower, upper]`` while training and
    ``a = (lower + upper) / 2`` when deterministic.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    lower : float (default: 0.3)
        Lower bound of the slope.
    upper : float (default: 0.8)
        Upper bound of the slope, ``upper >= lower``.
    shared_axes : 'auto', 'all', int or tuple of int (default: 'auto')
        Axes one random slope is shared over; ``'auto'`` is every axis but
        axis 1 (one slope per channel for the whole batch), ``'all'`` draws
        one slope.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Notes
    -----
    Slopes are drawn from PyTorch's generator on the input's device (seed it
    with :func:`lasagne.random.seed`). Building the layer draws one integer
    from :func:`lasagne.random.get_rng`, as the original did to seed its
    stream, so initial weights of later layers match the original's for the
    same seed.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, RandomizedRectifierLayer
    >>> l = RandomizedRectifierLayer(InputLayer((None, 8, 5, 5)))
    """

    def __init__(self, incoming, lower=0.3, upper=0.8, shared_axes='auto', **kwargs):
        super(RandomizedRectifierLayer, self).__init__(incoming, **kwargs)
        self._seed = get_rng().randint(1, 2147462579)
        if not lower <= upper:
            raise ValueError("{}: lower must not exceed upper, got lower={!r}, upper={!r}".format(
                self._where(), lower, upper))
        self.lower = lower
        self.upper = upper
        ndim = len(self.input_shape)
        if isinstance(shared_axes, str) and shared_axes == 'all':
            shared_axes = tuple(range(ndim))
        self.shared_axes = _normalize_axes(self._where(), "shared_axes", shared_axes, ndim,
                                           (0,) + tuple(range(2, ndim)))

    def get_output_for(self, input, deterministic=False, **kwargs):
        if deterministic or self.upper == self.lower:
            slope = (self.lower + self.upper) / 2.0
            return torch.clamp(input, min=0) + slope * torch.clamp(input, max=0)
        shape = [1 if axis in self.shared_axes else s for axis, s in enumerate(input.shape)]
        slope = torch.empty(shape, dtype=input.dtype, device=input.device).uniform_(
            self.lower, self.upper)
        return torch.clamp(input, min=0) + slope * torch.clamp(input, max=0)


def rrelu(layer, **kwargs):
    """Replace ``layer``'s nonlinearity by a randomized leaky rectifier.

    Sets ``layer.nonlinearity`` to the identity and stacks a
    :class:`RandomizedRectifierLayer` on it.

    Parameters
    ----------
    layer : a :class:`Layer` instance
        A layer with a ``nonlinearity`` attribute.
    **kwargs
        Passed to :class:`RandomizedRectifierLayer`.

    Returns
    -------
    RandomizedRectifierLayer
    """
    nonlinearity = getattr(layer, 'nonlinearity', None)
    if nonlinearity is not None:
        layer.nonlinearity = nonlinearities.identity
    return RandomizedRectifierLayer(layer, **kwargs)
