"""Evaluating a layer graph: the loop behind :func:`~lasagne.layers.get_output`
and :class:`lasagne.Network`.

The graph is resolved once into an :class:`EvaluationPlan` (which layer to
call, where its inputs come from, what to check); running the plan is then a
flat loop with a few attribute reads per layer. ``get_output`` builds a plan
per call; a :class:`~lasagne.Network` builds its plan once, at construction,
so its forward spends its host time in the layers' own work.
"""

import difflib
import inspect
import warnings

import numpy as np
import torch

from .. import utils
from . import helper  # helper imports this module; get_all_layers is read at call time
from .averages import deferred_updates
from .base import Layer, MergeLayer
from .input import InputLayer

__all__ = ["EvaluationPlan", "evaluate"]


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


def _raise_ndim(layer, value):
    expected = layer.input_shape
    raise ValueError("{}: expected a {}D input of shape {}, got shape {}".format(
        layer._where(), len(expected), expected, tuple(value.shape)))


def _raise_device(layer, value, param):
    raise RuntimeError("{}: the input is on {} but parameter {!r} is on {}; move the network "
                       "with Network(...).to(device) or build it under "
                       "torch.set_default_device".format(layer._where(), value.device,
                                                         utils.param_name(param),
                                                         param.device))


def _check_merge_inputs(layer, values, param):
    for value, shape in zip(values, layer.input_shapes):
        if value.ndim != len(shape):
            raise ValueError("{}: expected {}D inputs of shapes {}, got {}".format(
                layer._where(), len(shape), layer.input_shapes,
                [tuple(v.shape) for v in values]))
    for value in values[1:]:
        if value.device != values[0].device:
            raise RuntimeError("{}: inputs on different devices {}".format(
                layer._where(), [str(v.device) for v in values]))
    if values and param is not None and param.device != values[0].device:
        _raise_device(layer, values[0], param)


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
                  stacklevel=5)


class EvaluationPlan(object):
    """The layers of a graph in evaluation order, each with the source of its
    input(s), resolved once.

    Parameters
    ----------
    order : list of Layer
        ``get_all_layers(outputs, treat_as_input=...)``: every layer after
        the layers that feed it.
    given : iterable of Layer
        The layers whose outputs are supplied (inputs, and input layers with
        an ``input_var``); they are not evaluated.
    fusions : dict, optional
        Maps a consumer layer to the producer layer it fuses with: the
        producer is not evaluated on its own, and the consumer's output is
        ``producer.get_fused_output_for(producer_input, consumer.nonlinearity,
        **kwargs)``. Only pairs where the consumer is the producer's sole
        user may be given (:class:`lasagne.Network` finds them).

    Notes
    -----
    The plan holds the graph's structure as it was when the plan was built:
    the layers, their inputs and their first parameter (for the device
    check). Layer attributes read at call time (a nonlinearity, a
    parameter's value) may change afterwards.
    """

    def __init__(self, order, given, fusions=None):
        given = set(given)
        fused_producers = set(fusions.values()) if fusions else set()
        available = set(given)
        steps = []
        accepted = set(_ALWAYS_ACCEPTED)
        for layer in order:
            if layer in given or layer in fused_producers:
                continue
            consumer = None
            if fusions and layer in fusions:
                consumer, layer = layer, fusions[layer]
            store = consumer if consumer is not None else layer
            if isinstance(layer, InputLayer):
                steps.append((_MISSING, layer, None, None, None, None))
                available.add(store)
                continue
            merge = isinstance(layer, MergeLayer)
            sources = list(layer.input_layers) if merge else layer.input_layer
            if any(s not in available for s in (sources if merge else [sources])):
                steps.append((_FREE, layer, None, None, None, None))
                available.add(store)
                continue
            param = next(iter(layer.params), None)
            kind = _MERGE if merge else (_FUSED if consumer is not None else _PLAIN)
            expected_ndim = None if merge else len(layer.input_shape)
            steps.append((kind, layer, consumer, sources, expected_ndim, param))
            available.add(store)
            accepted |= _accepted_kwargs(layer)
        self.steps = steps
        self.accepted = frozenset(accepted)

    def run(self, outputs, kwargs):
        """Evaluate every step, adding each layer's output to ``outputs``
        (a dict from layer to tensor holding the given layers' outputs)."""
        compiling = torch.compiler.is_compiling()
        for kind, layer, consumer, sources, expected_ndim, param in self.steps:
            if kind is _MERGE:
                value = [outputs[s] for s in sources]
            elif kind is _PLAIN or kind is _FUSED:
                value = outputs[sources]
            elif kind is _MISSING:
                raise ValueError("get_output() was called without an input for {}".format(
                    layer._where()))
            else:
                raise ValueError("get_output() was called without an input for the "
                                 "free-floating layer {}; give its input in the inputs dict"
                                 .format(layer._where()))
            if compiling:
                result = _call(kind, layer, consumer, value, kwargs)
            else:
                if kind is _MERGE:
                    _check_merge_inputs(layer, value, param)
                else:
                    if value.ndim != expected_ndim:
                        _raise_ndim(layer, value)
                    if param is not None and param.device != value.device:
                        _raise_device(layer, value, param)
                try:
                    result = _call(kind, layer, consumer, value, kwargs)
                except RuntimeError as e:
                    message = _dtype_mismatch(layer, value if kind is _MERGE else [value])
                    if message is None:
                        raise
                    raise RuntimeError(message) from e
            outputs[consumer if consumer is not None else layer] = result
        if kwargs and not compiling:
            _warn_unused_kwargs(kwargs, self.accepted)
        return outputs


# step kinds
_PLAIN, _FUSED, _MERGE, _MISSING, _FREE = "plain", "fused", "merge", "missing", "free"


def _call(kind, layer, consumer, value, kwargs):
    if kind is _FUSED:
        return layer.get_fused_output_for(value, consumer.nonlinearity, **kwargs)
    return layer.get_output_for(value, **kwargs)


def evaluate(layer_or_layers, inputs, kwargs, plan=None):
    """:func:`~lasagne.layers.get_output`, optionally with a prepared plan.

    Parameters
    ----------
    layer_or_layers, inputs
        As for :func:`~lasagne.layers.get_output`.
    kwargs : dict
        The keyword arguments for every layer's ``get_output_for``.
    plan : EvaluationPlan, optional
        A plan for exactly these outputs and for given layers equal to the
        keys of ``inputs`` (a dict); :class:`lasagne.Network` keeps one.
        Without it, one is built for this call.

    Returns
    -------
    torch.Tensor or list of torch.Tensor
    """
    if isinstance(inputs, dict):
        for key in inputs:
            if not isinstance(key, Layer):
                raise TypeError("get_output: the keys of the inputs dict must be Layer "
                                "instances, got {!r}".format(key))
    outputs = {}
    if plan is None:
        treat_as_input = list(inputs.keys()) if isinstance(inputs, dict) else []
        all_layers = helper.get_all_layers(layer_or_layers, treat_as_input)
        for layer in all_layers:
            if isinstance(layer, InputLayer) and layer not in treat_as_input \
                    and layer.input_var is not None:
                outputs[layer] = layer.input_var
        if inputs is not None and not isinstance(inputs, dict):
            input_layers = [l for l in all_layers if isinstance(l, InputLayer)]
            if len(input_layers) != 1:
                raise ValueError("get_output() was called with a single input on a network with "
                                 "{} input layers; pass a dict mapping each input layer to its "
                                 "tensor".format(len(input_layers)))
            inputs = {input_layers[0]: inputs}
    if inputs is not None:
        for layer, value in inputs.items():
            outputs[layer] = _as_input_tensor(value, layer._where())
    if plan is None:
        plan = EvaluationPlan(all_layers, outputs.keys())
    with deferred_updates():
        outputs = plan.run(outputs, kwargs)
    if isinstance(layer_or_layers, (list, tuple)):
        return [outputs[l] for l in layer_or_layers]
    return outputs[layer_or_layers]
