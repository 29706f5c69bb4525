"""Stochastic regularization layers: dropout and additive Gaussian noise.

Both are the identity when ``get_output`` is called with
``deterministic=True``. Random draws come from PyTorch's generator on the
input's device (seed it with :func:`lasagne.random.seed`), with no host
synchronisation, so the layers work inside ``torch.compile`` and CUDA graphs.

Building either layer draws one integer from :func:`lasagne.random.get_rng`,
as the original did to seed its own random stream: the numpy generator thus
advances exactly as in the original, and the layers built afterwards get the
same initial weights for the same seed.
"""

import numbers

import torch
import torch.nn.functional as F

from ..random import get_rng
from .base import Layer
from .special import _normalize_axes

__all__ = ["DropoutLayer", "dropout", "dropout_channels", "spatial_dropout",
           "dropout_locations", "GaussianNoiseLayer"]


def _draw_stream_seed():
    # the original seeded a per-layer stream with this draw; we keep the draw
    # so that the numpy generator advances identically
    return int(get_rng().randint(1, 2147462579))


class DropoutLayer(Layer):
    """Dropout: sets each input element to zero with probability ``p``.

    While training (``deterministic=False``) the output is ``x * mask``,
    where ``mask`` is 1 with probability ``1 - p`` and 0 otherwise, divided
    by ``1 - p`` if ``rescale`` (so that the expected output equals the
    input). With ``deterministic=True`` the input is returned unchanged.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    p : float (default: 0.5)
        The probability of dropping an element, ``0 <= p < 1`` (``p = 1`` is
        allowed with ``rescale=False``: the output is all zeros). It may be
        changed between calls by assigning ``layer.p``.
    rescale : bool (default: True)
        Divide the kept elements by ``1 - p``.
    shared_axes : tuple of int (default: ())
        Axes along which one mask value is shared (broadcast): ``(2, 3)`` on a
        4D input drops whole feature maps, ``(1,)`` whole locations across
        channels. Negative axes count from the end.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DropoutLayer
    >>> l_drop = DropoutLayer(InputLayer((None, 100)), p=0.2)
    """

    def __init__(self, incoming, p=0.5, rescale=True, shared_axes=(), **kwargs):
        super(DropoutLayer, self).__init__(incoming, **kwargs)
        self._seed = _draw_stream_seed()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError("{}: p must be a probability in [0, 1], got {!r}".format(
                self._where(), p))
        if p == 1 and rescale:
            raise ValueError("{}: p=1 drops everything and cannot be rescaled (division by "
                             "1 - p = 0); use rescale=False".format(self._where()))
        self.p = p
        self.rescale = rescale
        self.shared_axes = _normalize_axes(self._where(), "shared_axes", shared_axes,
                                           len(self.input_shape), ())

    def get_output_for(self, input, deterministic=False, **kwargs):
        if deterministic or self.p == 0:
            return input
        if self.rescale and not self.shared_axes:
            return F.dropout(input, self.p, training=True)  # one fused kernel
        retain = 1.0 - self.p
        mask_shape = [1 if axis in self.shared_axes else s for axis, s in enumerate(input.shape)]
        mask = torch.empty(mask_shape, dtype=input.dtype, device=input.device).bernoulli_(retain)
        if self.rescale:
            mask = mask.div_(retain)
        return input * mask


dropout = DropoutLayer  # shortcut, as in the original


def dropout_channels(incoming, *args, **kwargs):
    """Dropout of whole channels (feature maps): a :class:`DropoutLayer`
    with ``shared_axes`` set to every axis beyond the second.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into the dropout, or its shape
        ``(batch, channels, *spatial)``.
    *args, **kwargs
        Passed to :class:`DropoutLayer` (``shared_axes`` is overridden).

    Returns
    -------
    DropoutLayer

    Examples
    --------
    >>> from lasagne.layers import InputLayer, dropout_channels
    >>> dropout_channels(InputLayer((None, 16, 8, 8)), p=0.1).shared_axes
    (2, 3)
    """
    ndim = len(getattr(incoming, 'output_shape', incoming))
    kwargs['shared_axes'] = tuple(range(2, ndim))
    return DropoutLayer(incoming, *args, **kwargs)


spatial_dropout = dropout_channels  # alias, as in the original


def dropout_locations(incoming, *args, **kwargs):
    """Dropout of whole locations (pixels, voxels) across all channels: a
    :class:`DropoutLayer` with ``shared_axes=(1,)``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into the dropout, or its shape.
    *args, **kwargs
        Passed to :class:`DropoutLayer` (``shared_axes`` is overridden).

    Returns
    -------
    DropoutLayer
    """
    kwargs['shared_axes'] = (1,)
    return DropoutLayer(incoming, *args, **kwargs)


class GaussianNoiseLayer(Layer):
    """Adds Gaussian noise: ``x + sigma * N(0, 1)`` while training, the
    identity with ``deterministic=True``.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    sigma : float (default: 0.1)
        Standard deviation of the noise (>= 0). May be changed between calls
        by assigning ``layer.sigma``.
    **kwargs
        ``name``, passed to :class:`Layer`.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, GaussianNoiseLayer
    >>> l_noise = GaussianNoiseLayer(InputLayer((None, 100)), sigma=0.05)
    """

    def __init__(self, incoming, sigma=0.1, **kwargs):
        super(GaussianNoiseLayer, self).__init__(incoming, **kwargs)
        self._seed = _draw_stream_seed()
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or sigma < 0:
            raise ValueError("{}: sigma must be a non-negative number, got {!r}".format(
                self._where(), sigma))
        self.sigma = sigma

    def get_output_for(self, input, deterministic=False, **kwargs):
        if deterministic or self.sigma == 0:
            return input
        return input + torch.randn_like(input) * self.sigma
