"""The generic per-layer harness every layer test goes through.

``check_layer`` runs one built layer on concrete inputs and checks, in one
place:

* the shape the layer predicts (``output_shape``, with ``None`` matching
  anything) and the shape ``get_output_shape`` predicts for the concrete input
  sizes both equal the shape produced;
* float64 agreement with an independent reference written in the test;
* gradients reach the input and every trainable parameter, and are finite;

``check_params`` checks parameter names, shapes and tags, and
``check_raises`` that a bad argument raises naming the layer and argument.
"""

import re

import numpy as np
import pytest
import torch

import lasagne
from lasagne.layers import InputLayer, MergeLayer, get_output, get_output_shape
from lasagne.utils import param_name


def shapes_compatible(predicted, actual):
    """True if ``predicted`` (None = unknown) matches ``actual``."""
    return len(predicted) == len(actual) and all(
        p is None or p == a for p, a in zip(predicted, actual))


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def check_layer(layer, inputs, reference=None, atol=1e-10, rtol=1e-7, grad=True,
                **output_kwargs):
    """Run ``layer`` on ``inputs`` and check shape, values and gradients.

    Parameters
    ----------
    layer : Layer
        Built on InputLayer(s) (or shape tuples); for a MergeLayer ``inputs``
        is a list in the order of ``layer.input_layers``.
    inputs : numpy.ndarray or list of numpy.ndarray
        Concrete input data.
    reference : callable, optional
        ``reference(*inputs_float64) -> numpy array``, written independently
        in the test.
    grad : bool
        Check that gradients flow to inputs and trainable parameters.
    **output_kwargs
        Passed to ``get_output`` (e.g. ``deterministic=True``).

    Returns
    -------
    torch.Tensor
        The layer's output.
    """
    arrays = _as_list(inputs)
    dtype = torch.get_default_dtype()
    tensors = [torch.tensor(a, dtype=dtype if np.asarray(a).dtype.kind == 'f' else None,
                            requires_grad=grad and np.asarray(a).dtype.kind == 'f')
               for a in arrays]
    if isinstance(layer, MergeLayer):
        in_layers = layer.input_layers
        feed = {l: t for l, t in zip(in_layers, tensors)}
        shape_feed = {l: tuple(t.shape) for l, t in zip(in_layers, tensors)}
    else:
        assert len(tensors) == 1
        feed = {layer.input_layer: tensors[0]} if layer.input_layer is not None else None
        shape_feed = {layer.input_layer: tuple(tensors[0].shape)} \
            if layer.input_layer is not None else None
    if feed is None:
        out = layer.get_output_for(tensors[0], **output_kwargs)
        predicted_concrete = layer.get_output_shape_for(tuple(tensors[0].shape))
    else:
        out = get_output(layer, feed, **output_kwargs)
        predicted_concrete = get_output_shape(layer, shape_feed)
    actual = tuple(out.shape)
    assert shapes_compatible(layer.output_shape, actual), \
        "{}: predicted output_shape {} but produced {}".format(layer, layer.output_shape, actual)
    assert tuple(predicted_concrete) == actual, \
        "{}: get_output_shape predicted {} for inputs {} but produced {}".format(
            layer, predicted_concrete, [tuple(t.shape) for t in tensors], actual)
    if reference is not None:
        expected = np.asarray(reference(*[np.asarray(a, dtype=np.float64)
                                          if np.asarray(a).dtype.kind == 'f' else a
                                          for a in arrays]))
        assert expected.shape == actual, "reference shape {} != output shape {}".format(
            expected.shape, actual)
        np.testing.assert_allclose(out.detach().cpu().numpy(), expected, atol=atol, rtol=rtol)
    if grad and out.is_floating_point() and out.requires_grad:
        weights = torch.randn_like(out)
        (out * weights).sum().backward()
        for t in tensors:
            if t.requires_grad:
                assert t.grad is not None, "{}: no gradient reached the input".format(layer)
                assert torch.isfinite(t.grad).all()
        for p in layer.get_params(trainable=True):
            assert p.grad is not None, "{}: no gradient reached {}".format(
                layer, param_name(p) or tuple(p.shape))
            assert torch.isfinite(p.grad).all()
    return out


def check_params(layer, expected):
    """Check a layer's parameters against ``{attr: (shape, tags)}`` in order.

    ``attr`` is the attribute holding the parameter (``'W'``); the parameter
    must be named ``<layer.name>.<attr>`` when the layer has a name.
    """
    params = layer.get_params()
    assert len(params) == len(expected), "{}: params {} but expected {}".format(
        layer, [param_name(p) for p in params], list(expected))
    for p, (attr, (shape, tags)) in zip(params, expected.items()):
        assert getattr(layer, attr) is p, "{}.{} is not the registered parameter".format(
            layer, attr)
        assert isinstance(p, torch.nn.Parameter)
        assert tuple(p.shape) == tuple(shape), "{}.{} shape {} != {}".format(
            layer, attr, tuple(p.shape), shape)
        assert layer.params[p] == set(tags), "{}.{} tags {} != {}".format(
            layer, attr, layer.params[p], set(tags))
        if layer.name is not None:
            assert param_name(p) == "{}.{}".format(layer.name, attr)


def check_raises(exc, factory, *words):
    """``factory()`` must raise ``exc`` whose message contains every word.

    Use it with the layer's class name and the argument's name, so that the
    message tells the user where and what.
    """
    with pytest.raises(exc) as info:
        factory()
    msg = str(info.value)
    for w in words:
        assert re.search(re.escape(w), msg), "message {!r} does not mention {!r}".format(msg, w)
    return info.value


__all__ = ["check_layer", "check_params", "check_raises", "shapes_compatible", "InputLayer",
           "lasagne"]
