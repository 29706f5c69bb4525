"""Functions over a whole layer graph: traversal, outputs, shapes and
parameters."""

import difflib
import inspect
import warnings

import numpy as np
import torch

from .. import utils
from .averages import deferred_updates
from .base import Layer, MergeLayer
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


def _as_input_tensor(value, where):
    if isinstance(value, torch.Tensor):
        return value
    try:
        arr = np.asarray(value)
    except Exception:
        raise TypeError("get_output: the input for {} must be a tensor or an array, got {}".format(
            where, type(value).__name__))
    if arr.dtype.kind == 'f':
        return torch.tensor(arr, dtype=torch.get_default_dtype(), device=torch.get_default_device())
    if arr.dtype.kind in 'iub':
        return torch.tensor(arr, device=torch.get_default_device())
    raise TypeError("get_output: the input for {} must be numeric, got dtype {}".format(
        where, arr.dtype))


def _check_input(layer, value):
    expected = layer.input_shape
    if value.ndim != len(expected):
        raise ValueError("{}: expected a {}D input of shape {}, got shape {}".format(
            layer._where(), len(expected), expected, tuple(value.shape)))


def _check_device(layer, value):
    for param in layer.params:
        if param.device != value.device:
            raise RuntimeError("{}: the input is on {} but parameter {!r} is on {}; move the "
                               "network with Network(...).to(device) or build it under "
                               "torch.set_default_device".format(
                                   layer._where(), value.device, utils.param_name(param),
                                   param.device))
        break


def _dtype_mismatch(layer, values):
    """A message naming ``layer`` if its floating inputs and parameters
    disagree in dtype, else None."""
    dtypes = set(v.dtype for v in values if v.is_floating_point())
    for param in layer.params:
        if param.is_floating_point() and dtypes and param.dtype not in dtypes:
            return ("{}: the input has dtype {} but parameter {!r} has dtype {}; cast the input "
                    "or the network (e.g. Network(...).to(dtype))".format(
                        layer._where(), "/".join(sorted(str(d) for d in dtypes)),
                        utils.param_name(param), param.dtype))
    return None


_ALWAYS_ACCEPTED = frozenset(["deterministic"])
_accepted_cache = {}


def _accepted_kwargs(layer):
    """Keyword arguments a layer's ``get_output_for`` names explicitly, plus
    those listed in its ``get_output_kwargs``."""
    method = layer.get_output_for
    key = getattr(method, "__func__", method)
    names = _accepted_cache.get(key)
    if names is None:
        try:
            sig = inspect.signature(method)
        except (TypeError, ValueError):
            names = frozenset()
        else:
            names = frozenset(p.name for p in sig.parameters.values()
                              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        _accepted_cache[key] = names
    return names.union(layer.get_output_kwargs)


def _warn_unused_kwargs(kwargs, accepted):
    unused = sorted(set(kwargs) - accepted)
    if not unused:
        return
    lines = []
    for name in unused:
        close = difflib.get_close_matches(name, sorted(accepted))
        lines.append("{} (perhaps you meant {})".format(name, close[0]) if close else name)
    warnings.warn("get_output() was called with unused kwargs:\n\t" + "\n\t".join(lines),
                  stacklevel=3)


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


def evaluate(layer_or_layers, inputs, kwargs, fusions=None, order=None):
    """:func:`get_output` with an optional fusion plan.

    Parameters
    ----------
    layer_or_layers, inputs
        As for :func:`get_output`.
    kwargs : dict
        The keyword arguments for every layer's ``get_output_for``.
    fusions : dict, optional
        Maps a consumer layer to the producer layer it fuses with: the
        producer is not evaluated on its own, and the consumer's output is
        ``producer.get_fused_output_for(producer_input, consumer.nonlinearity,
        **kwargs)``. Only pairs where the consumer is the producer's sole user
        may be given (``lasagne.Network`` builds such a plan).
    order : list of Layer, optional
        ``get_all_layers(layer_or_layers, treat_as_input=inputs' keys)``,
        when the caller already has it (``lasagne.Network`` keeps it).

    Returns
    -------
    torch.Tensor or list of torch.Tensor
    """
    fused_producers = set(fusions.values()) if fusions else ()
    if isinstance(inputs, dict):
        for key in inputs:
            if not isinstance(key, Layer):
                raise TypeError("get_output: the keys of the inputs dict must be Layer "
                                "instances, got {!r}".format(key))
    treat_as_input = list(inputs.keys()) if isinstance(inputs, dict) else []
    all_layers = order if order is not None else get_all_layers(layer_or_layers,
                                                                treat_as_input)
    outputs = {}
    for layer in all_layers:
        if isinstance(layer, InputLayer) and layer not in treat_as_input \
                and layer.input_var is not None:
            outputs[layer] = layer.input_var
    if isinstance(inputs, dict):
        for layer, value in inputs.items():
            outputs[layer] = _as_input_tensor(value, layer._where())
    elif inputs is not None:
        input_layers = [l for l in all_layers if isinstance(l, InputLayer)]
        if len(input_layers) != 1:
            raise ValueError("get_output() was called with a single input on a network with {} "
                             "input layers; pass a dict mapping each input layer to its "
                             "tensor".format(len(input_layers)))
        outputs[input_layers[0]] = _as_input_tensor(inputs, input_layers[0]._where())
    compiling = torch.compiler.is_compiling()
    with deferred_updates():
        outputs = _evaluate_layers(all_layers, outputs, fused_producers, fusions, kwargs,
                                   compiling)
    if isinstance(layer_or_layers, (list, tuple)):
        return [outputs[l] for l in layer_or_layers]
    return outputs[layer_or_layers]


def _evaluate_layers(all_layers, outputs, fused_producers, fusions, kwargs, compiling):
    """The loop of :func:`evaluate`: every layer's output, in order."""
    accepted = set(_ALWAYS_ACCEPTED)
    for layer in all_layers:
        if layer in outputs or layer in fused_producers:
            continue
        consumer = None
        if fusions and layer in fusions:
            # the producer computes both layers in one call
            consumer, layer = layer, fusions[layer]
        if isinstance(layer, InputLayer):
            raise ValueError("get_output() was called without an input for {}".format(
                layer._where()))
        try:
            if isinstance(layer, MergeLayer):
                layer_inputs = [outputs[l] for l in layer.input_layers]
            else:
                layer_inputs = outputs[layer.input_layer]
        except KeyError:
            raise ValueError("get_output() was called without an input for the free-floating "
                             "layer {}; give its input in the inputs dict".format(layer._where()))
        if not compiling:
            if isinstance(layer, MergeLayer):
                for value, shape in zip(layer_inputs, layer.input_shapes):
                    if value.ndim != len(shape):
                        raise ValueError("{}: expected {}D inputs of shapes {}, got {}".format(
                            layer._where(), len(shape), layer.input_shapes,
                            [tuple(v.shape) for v in layer_inputs]))
                for value in layer_inputs[1:]:
                    if value.device != layer_inputs[0].device:
                        raise RuntimeError("{}: inputs on different devices {}".format(
                            layer._where(), [str(v.device) for v in layer_inputs]))
                if layer_inputs:
                    _check_device(layer, layer_inputs[0])
            else:
                _check_input(layer, layer_inputs)
                _check_device(layer, layer_inputs)
            if kwargs:
                accepted |= _accepted_kwargs(layer)
            try:
                result = _output_for(layer, consumer, layer_inputs, kwargs)
            except RuntimeError as e:
                values = layer_inputs if isinstance(layer, MergeLayer) else [layer_inputs]
                message = _dtype_mismatch(layer, values)
                if message is None:
                    raise
                raise RuntimeError(message) from e
        else:
            result = _output_for(layer, consumer, layer_inputs, kwargs)
        outputs[consumer if consumer is not None else layer] = result
    if kwargs and not compiling:
        _warn_unused_kwargs(kwargs, accepted)
    return outputs


def _output_for(layer, consumer, layer_inputs, kwargs):
    if consumer is None:
        return layer.get_output_for(layer_inputs, **kwargs)
    return layer.get_fused_output_for(layer_inputs, consumer.nonlinearity, **kwargs)


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


