"""Fully connected layers: :class:`DenseLayer` and the network-in-network
:class:`NINLayer` (a dense layer applied at every position)."""

import numpy as np
import torch
import torch.nn.functional as F

from .. import init
from .. import nonlinearities
from ..utils import int_types
from .base import Layer

__all__ = ["DenseLayer", "NINLayer"]


def _check_num_units(where, num_units):
    if isinstance(num_units, bool) or not isinstance(num_units, int_types) or num_units <= 0:
        raise ValueError("{}: num_units must be a positive int, got {!r}".format(
            where, num_units))
    return int(num_units)


class DenseLayer(Layer):
    """A fully connected layer: ``nonlinearity(dot(x, W) + b)``.

    The trailing axes of the input (all but the first ``num_leading_axes``)
    are flattened into one feature axis of length ``num_inputs``, which is
    multiplied with ``W``; the leading axes are kept.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    num_units : int
        The number of output features (> 0).
    W : numpy array, tensor, Parameter or callable (default: GlorotUniform())
        Weights of shape ``(num_inputs, num_units)``, where ``num_inputs`` is
        the product of the trailing input sizes. See
        :func:`lasagne.utils.create_param`.
    b : numpy array, tensor, Parameter, callable or None (default: Constant(0.))
        Biases of shape ``(num_units,)``; ``None`` for no bias.
    nonlinearity : callable or None (default: rectify)
        Applied to the result; ``None`` means the identity.
    num_leading_axes : int (default: 1)
        How many leading axes to keep. A negative value ``-k`` keeps all but
        the last ``k`` axes, whatever the input's dimensionality.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DenseLayer
    >>> l_in = InputLayer((None, 3, 4))
    >>> DenseLayer(l_in, num_units=5).output_shape
    (None, 5)
    >>> DenseLayer(l_in, num_units=5, num_leading_axes=2).output_shape
    (None, 3, 5)
    """

    def __init__(self, incoming, num_units, W=init.GlorotUniform(), b=init.Constant(0.),
                 nonlinearity=nonlinearities.rectify, num_leading_axes=1, **kwargs):
        super(DenseLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        self.num_units = _check_num_units(where, num_units)
        self.nonlinearity = nonlinearities.identity if nonlinearity is None else nonlinearity
        ndim = len(self.input_shape)
        if isinstance(num_leading_axes, bool) or not isinstance(num_leading_axes, int_types):
            raise TypeError("{}: num_leading_axes must be an int, got {!r}".format(
                where, num_leading_axes))
        if num_leading_axes >= ndim:
            raise ValueError("{}: num_leading_axes={} leaves no trailing axis of the {}D input "
                             "{} for the dot product".format(where, num_leading_axes, ndim,
                                                             self.input_shape))
        if num_leading_axes < -ndim:
            raise ValueError("{}: num_leading_axes={} asks for more trailing axes than the {}D "
                             "input {} has".format(where, num_leading_axes, ndim,
                                                   self.input_shape))
        self.num_leading_axes = int(num_leading_axes)
        trailing = self.input_shape[self.num_leading_axes:]
        if any(s is None for s in trailing):
            raise ValueError("{}: the trailing input sizes must be known (only the leading axes "
                             "may be None), got input shape {} with num_leading_axes={}".format(
                                 where, self.input_shape, self.num_leading_axes))
        num_inputs = int(np.prod(trailing))
        self.W = self.add_param(W, (num_inputs, self.num_units), name="W")
        if b is None:
            self.b = None
        else:
            self.b = self.add_param(b, (self.num_units,), name="b", regularizable=False)

    def get_output_shape_for(self, input_shape):
        return tuple(input_shape[:self.num_leading_axes]) + (self.num_units,)

    def get_output_for(self, input, **kwargs):
        lead = self.num_leading_axes
        if lead < 0:
            lead += input.ndim
        if input.ndim > lead + 1:
            input = input.flatten(lead)
        # F.linear computes input @ weight.T + bias in one fused call
        return self.nonlinearity(F.linear(input, self.W.t(), self.b))


class NINLayer(Layer):
    """Network-in-network layer: a dense layer over axis 1 applied at every
    position of the trailing axes (a convolution with filter size 1 in any
    number of dimensions).

    For an input ``(batch, channels, *spatial)`` the output is
    ``(batch, num_units, *spatial)`` with
    ``out[n, u, ...] = nonlinearity(sum_c x[n, c, ...] * W[c, u] + b[u, ...])``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape
        (at least 2D; ``input_shape[1]`` must be known).
    num_units : int
        The number of output channels (> 0).
    untie_biases : bool (default: False)
        If False, one bias per unit (shape ``(num_units,)``); if True, one bias
        per unit and position (shape ``(num_units, *spatial)``, which must be
        known).
    W : numpy array, tensor, Parameter or callable (default: GlorotUniform())
        Weights of shape ``(channels, num_units)``.
    b : numpy array, tensor, Parameter, callable or None (default: Constant(0.))
        Biases (see ``untie_biases``); ``None`` for no bias.
    nonlinearity : callable or None (default: rectify)
        Applied to the result; ``None`` means the identity.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, NINLayer
    >>> NINLayer(InputLayer((None, 16, 8, 8)), num_units=4).output_shape
    (None, 4, 8, 8)
    """

    def __init__(self, incoming, num_units, untie_biases=False, W=init.GlorotUniform(),
                 b=init.Constant(0.), nonlinearity=nonlinearities.rectify, **kwargs):
        super(NINLayer, self).__init__(incoming, **kwargs)
        where = self._where()
        self.num_units = _check_num_units(where, num_units)
        self.nonlinearity = nonlinearities.identity if nonlinearity is None else nonlinearity
        self.untie_biases = bool(untie_biases)
        if len(self.input_shape) < 2 or self.input_shape[1] is None:
            raise ValueError("{}: the input must be at least 2D with a known size on axis 1 "
                             "(channels), got input shape {}".format(where, self.input_shape))
        self.W = self.add_param(W, (self.input_shape[1], self.num_units), name="W")
        if b is None:
            self.b = None
        else:
            if self.untie_biases:
                shape = (self.num_units,) + tuple(self.input_shape[2:])
            else:
                shape = (self.num_units,)
            self.b = self.add_param(b, shape, name="b", regularizable=False)

    def get_output_shape_for(self, input_shape):
        return (input_shape[0], self.num_units) + tuple(input_shape[2:])

    def get_output_for(self, input, **kwargs):
        # channels last, matmul, channels back to axis 1
        out = torch.matmul(input.movedim(1, -1), self.W).movedim(-1, 1)
        if self.b is not None:
            if self.untie_biases:
                out = out + self.b.unsqueeze(0)
            else:
                out = out + self.b.view((1, -1) + (1,) * (input.ndim - 2))
        return self.nonlinearity(out)
