"""Weight penalties (regularization terms) for the loss.

A penalty is a function from one tensor to a scalar: :func:`l1` (sum of
absolute values) and :func:`l2` (sum of squares) are provided, and any
callable of that form works. :func:`apply_penalty` sums a penalty over one
tensor or several; the ``regularize_*`` helpers apply it to the parameters of
a layer, of a few layers (each with its own coefficient), or of a whole
network, selected by tags (by default those tagged ``regularizable``, i.e.
weights but not biases).

Examples
--------
>>> from lasagne.layers import InputLayer, DenseLayer
>>> from lasagne.regularization import (regularize_network_params,
...                                     regularize_layer_params_weighted, l1, l2)
>>> l_in = InputLayer((None, 20))
>>> l_hid = DenseLayer(l_in, num_units=30)
>>> l_out = DenseLayer(l_hid, num_units=5)
>>> penalty = 1e-4 * regularize_network_params(l_out, l2)
>>> penalty = penalty + regularize_layer_params_weighted({l_hid: 0.1, l_out: 0.5}, l1)
>>> penalty.ndim
0
"""

import torch

from .layers import Layer, get_all_params

__all__ = ["l1", "l2", "apply_penalty", "regularize_layer_params",
           "regularize_layer_params_weighted", "regularize_network_params"]


def l1(x):
    """L1 penalty: the sum of the absolute values of ``x``'s elements.

    Parameters
    ----------
    x : torch.Tensor

    Returns
    -------
    torch.Tensor
        A 0-dimensional tensor.

    Examples
    --------
    >>> import torch
    >>> from lasagne.regularization import l1
    >>> l1(torch.tensor([1.0, -2.0]))
    tensor(3.)
    """
    return torch.sum(torch.abs(x))


def l2(x):
    """L2 penalty: the sum of the squares of ``x``'s elements (the squared
    L2 norm, without a factor 1/2).

    Parameters
    ----------
    x : torch.Tensor

    Returns
    -------
    torch.Tensor
        A 0-dimensional tensor.

    Examples
    --------
    >>> import torch
    >>> from lasagne.regularization import l2
    >>> l2(torch.tensor([1.0, -2.0]))
    tensor(5.)
    """
    return torch.sum(x ** 2)


def _zero():
    return torch.zeros((), dtype=torch.get_default_dtype(), device=torch.get_default_device())


def _check_penalty(penalty, where):
    if not callable(penalty):
        raise TypeError("{}: penalty must be a callable such as lasagne.regularization.l2, "
                        "got {!r}".format(where, penalty))


def _check_tags(tags, where):
    if not isinstance(tags, dict):
        raise TypeError("{}: tags must be a dict such as {{'regularizable': True}}, got "
                        "{!r}".format(where, tags))


def apply_penalty(tensor_or_tensors, penalty, **kwargs):
    """Sum of a penalty over one tensor or a collection of tensors.

    Parameters
    ----------
    tensor_or_tensors : torch.Tensor or iterable of torch.Tensor
        A single tensor is penalised as a whole (not row by row).
    penalty : callable
        ``penalty(tensor, **kwargs)`` returns a scalar.
    **kwargs
        Passed on to ``penalty``.

    Returns
    -------
    torch.Tensor
        A 0-dimensional tensor; zero for an empty collection.

    Examples
    --------
    >>> import torch
    >>> from lasagne.regularization import apply_penalty, l2
    >>> apply_penalty([torch.ones(2), torch.ones(3)], l2)
    tensor(5.)
    """
    _check_penalty(penalty, "apply_penalty")
    if isinstance(tensor_or_tensors, torch.Tensor):
        return penalty(tensor_or_tensors, **kwargs)
    try:
        tensors = list(tensor_or_tensors)
    except TypeError:  # not iterable: a single object the penalty understands
        return penalty(tensor_or_tensors, **kwargs)
    if not tensors:
        return _zero()
    return sum(penalty(x, **kwargs) for x in tensors)


def regularize_layer_params(layer, penalty, tags={'regularizable': True}, **kwargs):
    """Penalty over the parameters of one layer or a list of layers
    (only those layers, not the layers below them).

    Parameters
    ----------
    layer : Layer or iterable of Layer
    penalty : callable
        E.g. :func:`l1` or :func:`l2`.
    tags : dict (default: ``{'regularizable': True}``)
        Tag filters passed to :meth:`Layer.get_params`; by default weights
        but not biases.
    **kwargs
        Passed on to ``penalty``.

    Returns
    -------
    torch.Tensor
        A 0-dimensional tensor.

    Notes
    -----
    As in the original, parameters are gathered layer by layer without
    removing duplicates: a parameter shared by two listed layers is
    penalised twice.
    """
    _check_penalty(penalty, "regularize_layer_params")
    _check_tags(tags, "regularize_layer_params")
    layers = [layer] if isinstance(layer, Layer) else list(layer)
    params = []
    for l in layers:
        params.extend(l.get_params(**tags))
    return apply_penalty(params, penalty, **kwargs)


def regularize_layer_params_weighted(layers, penalty, tags={'regularizable': True}, **kwargs):
    """Weighted sum of a penalty over the parameters of several layers.

    Parameters
    ----------
    layers : dict
        Maps each :class:`Layer` to its coefficient.
    penalty : callable
        E.g. :func:`l1` or :func:`l2`.
    tags : dict (default: ``{'regularizable': True}``)
        Tag filters passed to :meth:`Layer.get_params`.
    **kwargs
        Passed on to ``penalty``.

    Returns
    -------
    torch.Tensor
        ``sum(coeff * apply_penalty(layer's params))`` over the dict, a
        0-dimensional tensor (zero for an empty dict).

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DenseLayer
    >>> from lasagne.regularization import regularize_layer_params_weighted, l2
    >>> l_hid = DenseLayer(InputLayer((None, 20)), num_units=30)
    >>> l_out = DenseLayer(l_hid, num_units=5)
    >>> penalty = regularize_layer_params_weighted({l_hid: 0.1, l_out: 0.5}, l2)
    """
    _check_penalty(penalty, "regularize_layer_params_weighted")
    _check_tags(tags, "regularize_layer_params_weighted")
    if not isinstance(layers, dict):
        raise TypeError("regularize_layer_params_weighted: layers must be a dict mapping "
                        "layers to coefficients, got {!r}".format(type(layers).__name__))
    if not layers:
        return _zero()
    return sum(coeff * apply_penalty(layer.get_params(**tags), penalty, **kwargs)
               for layer, coeff in layers.items())


def regularize_network_params(layer, penalty, tags={'regularizable': True}, **kwargs):
    """Penalty over all parameters of a network: the given layer(s) and
    every layer below them, each shared parameter counted once (see
    :func:`lasagne.layers.get_all_params`).

    Parameters
    ----------
    layer : Layer or list of Layer
        The network's output layer(s).
    penalty : callable
        E.g. :func:`l1` or :func:`l2`.
    tags : dict (default: ``{'regularizable': True}``)
        Tag filters passed to :func:`lasagne.layers.get_all_params`.
    **kwargs
        Passed on to ``penalty``.

    Returns
    -------
    torch.Tensor
        A 0-dimensional tensor.
    """
    _check_penalty(penalty, "regularize_network_params")
    _check_tags(tags, "regularize_network_params")
    return apply_penalty(get_all_params(layer, **tags), penalty, **kwargs)
