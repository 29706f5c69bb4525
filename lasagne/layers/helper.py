"""Functions over a whole layer graph: traversal, outputs, shapes and
parameters."""

import numpy as np
import torch

from .. import utils
from .base import MergeLayer
from .evaluation import evaluate
from .input import InputLayer

__all__ = ["get_all_layers", "get_output", "get_output_shape", "get_all_params",
           "count_params", "get_all_param_values", "set_all_param_values"]


def _input_layers_of(layer):
    if isinstance(layer, MergeLayer):
        return layer.input_layers
    return [layer.input_layer]


def get_all_layers(layer, treat_as_input=None):
    """All layers below (and including) the given layer(s), in an order where
    every layer comes after the layers that feed it.

    The traversal is iterative, so graphs of any depth work under Python's
    default recursion limit. Each layer appears once.

    Parameters
    ----------
    layer : Layer or list of Layer
        The layer(s) to start from.
    treat_as_input : iterable of Layer, optional
        Layers whose inputs are not followed.

    Returns
    -------
    list of Layer
    """
    roots = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    stop = set(treat_as_input) if treat_as_input is not None else set()
    done = set()
    result = []
    # Depth-first, post-order, iterative: each stack entry is (layer, expanded)
    stack = [(root, False) for root in reversed(roots)]
    seen = set()
    while stack:
        current, expanded = stack.pop()
        if current in done:
            continue
        if expanded:
            done.add(current)
            result.append(current)
            continue
        if current in seen:
            continue
        seen.add(current)
        stack.append((current, True))
        if current not in stop:
            parents = [p for p in _input_layers_of(current) if p is not None]
            for parent in reversed(parents):
                if parent not in done:
                    stack.append((parent, False))
    return result


def get_output(layer_or_layers, inputs=None, **kwargs):
    """Compute the output of a network.

    Parameters
    ----------
    layer_or_layers : Layer or list of Layer
        The layer(s) whose output to compute.
    inputs : None, tensor, array or dict
        A tensor (or numpy array) for the network's single input layer, or a
        dict mapping layers to tensors; any layer in the dict is treated as an
        input (its own inputs are not followed). ``None`` uses each input
        layer's ``input_var``.
    **kwargs
        Passed to every layer's ``get_output_for``, e.g.
        ``deterministic=True`` to disable dropout and use batch-norm
        averages.

    Returns
    -------
    torch.Tensor or list of torch.Tensor
        One output per requested layer.

    Raises
    ------
    ValueError
        When an input is missing, the input has the wrong number of
        dimensions for a layer, or a single input is given to a network with
        several input layers.
    TypeError
        When a key of the ``inputs`` dict is not a layer.
    RuntimeError
        Naming the layer, when its input is on another device than its
        parameters, or (where the layer fails) of another float dtype.

    Warns
    -----
    UserWarning
        For keyword arguments that no layer's ``get_output_for`` names (as
        the original: a likely typo such as ``determinstic=True``).
    """
    return evaluate(layer_or_layers, inputs, kwargs)



def get_output_shape(layer_or_layers, input_shapes=None):
    """The output shape(s) of a network, by shape arithmetic only.

    Parameters
    ----------
    layer_or_layers : Layer or list of Layer
    input_shapes : None, tuple or dict
        Overrides for input shapes: one tuple for the single input layer, or
        a dict mapping layers to shapes. ``None`` uses the shapes given at
        build time.

    Returns
    -------
    tuple or list of tuple
    """
    if input_shapes is None or input_shapes == {}:
        if isinstance(layer_or_layers, (list, tuple)):
            return [l.output_shape for l in layer_or_layers]
        return layer_or_layers.output_shape
    treat_as_input = list(input_shapes.keys()) if isinstance(input_shapes, dict) else []
    all_layers = get_all_layers(layer_or_layers, treat_as_input)
    shapes = {}
    if isinstance(input_shapes, dict):
        shapes.update((l, tuple(s)) for l, s in input_shapes.items())
    else:
        input_layers = [l for l in all_layers if isinstance(l, InputLayer)]
        if len(input_layers) != 1:
            raise ValueError("get_output_shape() was called with a single input shape on a "
                             "network with {} input layers; pass a dict".format(len(input_layers)))
        shapes[input_layers[0]] = tuple(input_shapes)
    for layer in all_layers:
        if layer in shapes:
            continue
        if isinstance(layer, InputLayer):
            shapes[layer] = layer.output_shape
        elif isinstance(layer, MergeLayer):
            # an input given as a shape tuple at build time keeps that shape
            shapes[layer] = layer.get_output_shape_for(
                [shapes[l] if l is not None else s
                 for l, s in zip(layer.input_layers, layer.input_shapes)])
        elif layer.input_layer is None:
            shapes[layer] = layer.output_shape
        else:
            shapes[layer] = layer.get_output_shape_for(shapes[layer.input_layer])
    if isinstance(layer_or_layers, (list, tuple)):
        return [shapes[l] for l in layer_or_layers]
    return shapes[layer_or_layers]


def get_all_params(layer, unwrap_shared=True, **tags):
    """All parameters of a network, in the original Lasagne's order.

    Layers are visited as :func:`get_all_layers` orders them, and each
    layer's parameters in the order it added them; a shared parameter
    appears once. This order is what Model Zoo weight files rely on.

    Parameters
    ----------
    layer : Layer or list of Layer
    unwrap_shared : bool (default: True)
        Kept for the original signature (parameters are always
        ``torch.nn.Parameter``).
    **tags
        Tag filters, e.g. ``trainable=True``, ``regularizable=False``.

    Returns
    -------
    list of torch.nn.Parameter
    """
    layers = get_all_layers(layer)
    params = [p for l in layers for p in l.get_params(unwrap_shared=unwrap_shared, **tags)]
    return utils.unique(params)


def count_params(layer, **tags):
    """Total number of scalar parameters of a network (see
    :func:`get_all_params` for ``tags``)."""
    return sum(p.numel() for p in get_all_params(layer, **tags))


def get_all_param_values(layer, **tags):
    """The values of all parameters as a list of numpy arrays, in
    :func:`get_all_params` order."""
    return [p.detach().cpu().numpy().copy() for p in get_all_params(layer, **tags)]


def set_all_param_values(layer, values, **tags):
    """Set all parameters of a network from a list of arrays.

    Parameters
    ----------
    layer : Layer or list of Layer
    values : list of numpy.ndarray or torch.Tensor
        In :func:`get_all_params` order, e.g. a Model Zoo file's
        ``'param values'``.
    **tags
        Tag filters selecting the parameters to set.

    Raises
    ------
    ValueError
        If the number of values or any shape does not match.
    """
    params = get_all_params(layer, **tags)
    values = list(values)
    if len(params) != len(values):
        raise ValueError("set_all_param_values: got {} values for {} parameters".format(
            len(values), len(params)))
    for i, (p, v) in enumerate(zip(params, values)):
        shape = tuple(v.shape) if hasattr(v, "shape") else np.shape(v)
        if tuple(p.shape) != tuple(shape):
            raise ValueError("set_all_param_values: parameter {} ({!r}) has shape {}, the value "
                             "has shape {}".format(i, utils.param_name(p), tuple(p.shape),
                                                   tuple(shape)))
    with torch.no_grad():
        for p, v in zip(params, values):
            src = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
            p.copy_(src.to(device=p.device, dtype=p.dtype))


