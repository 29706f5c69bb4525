"""Elementwise nonlinearities, with the original Lasagne's names and defaults.

Each is a plain function (or a callable object with parameters) taking and
returning a ``torch.Tensor``.
"""

import torch
import torch.nn.functional as F


def sigmoid(x):
    """Logistic sigmoid :math:`1 / (1 + e^{-x})`."""
    return torch.sigmoid(x)


def softmax(x):
    """Softmax over axis 1 (the class axis of a ``(batch, classes)`` output)."""
    return torch.softmax(x, dim=1)


def tanh(x):
    """Hyperbolic tangent."""
    return torch.tanh(x)


class ScaledTanH(object):
    """Scaled hyperbolic tangent :math:`s_{out} \\tanh(s_{in} x)`.

    Parameters
    ----------
    scale_in : float (default: 1)
        Factor applied to the input.
    scale_out : float (default: 1)
        Factor applied to the output.

    Examples
    --------
    LeCun's recommended scaling:

    >>> from lasagne.nonlinearities import ScaledTanH
    >>> scaled_tanh = ScaledTanH(scale_in=2./3, scale_out=1.7159)
    """

    def __init__(self, scale_in=1, scale_out=1):
        self.scale_in = scale_in
        self.scale_out = scale_out

    def __call__(self, x):
        return torch.tanh(x * self.scale_in) * self.scale_out


ScaledTanh = ScaledTanH


def rectify(x):
    """Rectified linear unit :math:`\\max(0, x)`."""
    return torch.relu(x)


class LeakyRectify(object):
    """Leaky rectifier :math:`\\max(\\alpha x, x)` for ``0 <= leakiness <= 1``.

    Parameters
    ----------
    leakiness : float (default: 0.01)
        Slope :math:`\\alpha` for negative inputs.
    """

    def __init__(self, leakiness=0.01):
        self.leakiness = leakiness

    def __call__(self, x):
        return F.leaky_relu(x, self.leakiness)


leaky_rectify = LeakyRectify()
"""Leaky rectifier with leakiness 0.01."""

very_leaky_rectify = LeakyRectify(1. / 3)
"""Leaky rectifier with leakiness 1/3."""


def elu(x):
    """Exponential linear unit: ``x`` for ``x > 0``, :math:`e^x - 1` otherwise."""
    return F.elu(x)


class SELU(object):
    """Scaled exponential linear unit:
    ``scale * x`` for ``x > 0``, ``scale * scale_neg * (exp(x) - 1)`` otherwise.

    Parameters
    ----------
    scale : float (default: 1)
    scale_neg : float (default: 1)

    Notes
    -----
    :data:`selu` holds the self-normalising constants of Klambauer et al.
    (2017).
    """

    def __init__(self, scale=1, scale_neg=1):
        self.scale = scale
        self.scale_neg = scale_neg

    def __call__(self, x):
        return self.scale * torch.where(x > 0, x, self.scale_neg * torch.expm1(x))


selu = SELU(scale=1.0507009873554804934193349852946,
            scale_neg=1.6732632423543772848170429916717)
"""SELU with the self-normalising constants."""


def softplus(x):
    """Softplus :math:`\\log(1 + e^x)`."""
    return F.softplus(x)


def linear(x):
    """Identity: returns its input unchanged."""
    return x


identity = linear
