"""Random number generation shared by the whole library.

Initialisers (:mod:`lasagne.init`) draw from a numpy random generator, exactly
as the original Lasagne did, so that the same seed yields the same initial
weights. Stochastic layers (dropout, Gaussian noise) draw from PyTorch's own
generator on the device of their input, so that they work inside
``torch.compile`` and CUDA graphs. :func:`seed` seeds both at once.
"""

import numpy as np
import torch

_rng = np.random


def get_rng():
    """Return the numpy random generator used by the initialisers.

    Returns
    -------
    numpy.random.RandomState or module
        The generator set with :func:`set_rng`; by default the global
        ``numpy.random`` module, as in the original Lasagne.
    """
    return _rng


def set_rng(new_rng):
    """Set the numpy random generator used by the initialisers.

    Parameters
    ----------
    new_rng : numpy.random.RandomState
        Any object with the ``numpy.random.RandomState`` drawing methods.
    """
    global _rng
    _rng = new_rng


def seed(value):
    """Seed the initialisers and the stochastic layers in one call.

    Sets a fresh ``numpy.random.RandomState(value)`` for the initialisers and
    calls ``torch.manual_seed(value)`` for dropout and noise layers.

    Parameters
    ----------
    value : int
        The seed.
    """
    set_rng(np.random.RandomState(value))
    torch.manual_seed(value)
