"""Graph helpers: traversal order, outputs, shapes, parameters and values."""

import sys
import warnings

import numpy as np
import pytest
import torch

from lasagne.layers import (BiasLayer, ConcatLayer, DenseLayer, ElemwiseSumLayer, InputLayer,
                            Layer, count_params, get_all_layers, get_all_param_values,
                            get_all_params, get_output, get_output_shape, set_all_param_values,
                            standardize)

from harness import check_raises
from lasagne.utils import param_name


class Spy(Layer):
    """Identity layer that records the keyword arguments of each call."""

    def __init__(self, incoming, **kwargs):
        super(Spy, self).__init__(incoming, **kwargs)
        self.calls = []

    def get_output_for(self, input, foo=None, **kwargs):
        self.calls.append(dict(kwargs, foo=foo))
        return input


@pytest.fixture
def graph():
    """Two inputs, a layer reused by two consumers, tied weights, merges."""
    g = {}
    g['in1'] = InputLayer((None, 4), name="in1")
    g['in2'] = InputLayer((None, 4), name="in2")
    g['shared'] = DenseLayer(g['in1'], 4, name="shared")
    g['tied'] = DenseLayer(g['in2'], 4, W=g['shared'].W, name="tied")
    g['sum'] = ElemwiseSumLayer([g['shared'], g['tied']], name="sum")
    g['cat'] = ConcatLayer([g['sum'], g['shared']], name="cat")
    g['out'] = DenseLayer(g['cat'], 3, nonlinearity=None, name="out")
    return g


def names(layers):
    return [l.name for l in layers]


# --- get_all_layers -----------------------------------------------------------

def test_get_all_layers_order(graph):
    layers = get_all_layers(graph['out'])
    assert names(layers) == ["in1", "shared", "in2", "tied", "sum", "cat", "out"]
    assert len(set(layers)) == len(layers)
    position = {l: i for i, l in enumerate(layers)}
    for l in layers:
        parents = getattr(l, 'input_layers', [getattr(l, 'input_layer', None)])
        assert all(position[p] < position[l] for p in parents if p is not None)


def test_get_all_layers_roots_and_treat_as_input(graph):
    assert names(get_all_layers([graph['tied'], graph['out']])) == \
        ["in2", "tied", "in1", "shared", "sum", "cat", "out"]
    assert names(get_all_layers((graph['shared'],))) == ["in1", "shared"]
    assert names(get_all_layers(graph['out'], treat_as_input=[graph['sum']])) == \
        ["sum", "in1", "shared", "cat", "out"]
    assert get_all_layers(graph['in1']) == [graph['in1']]


# --- get_output ---------------------------------------------------------------

def reference_forward(g, x1, x2):
    p = {k: [t.detach().numpy() for t in g[k].get_params()] for k in ('shared', 'tied', 'out')}
    shared = np.maximum(x1 @ p['shared'][0] + p['shared'][1], 0)
    tied = np.maximum(x2 @ p['shared'][0] + p['tied'][1], 0)
    cat = np.concatenate([shared + tied, shared], axis=1)
    return cat @ p['out'][0] + p['out'][1]


def test_get_output_dict_tensor_and_array(graph, rng):
    x1 = rng.standard_normal((5, 4)).astype(np.float32)
    x2 = rng.standard_normal((5, 4)).astype(np.float32)
    expected = reference_forward(graph, x1, x2)
    out = get_output(graph['out'], {graph['in1']: torch.tensor(x1), graph['in2']: x2})
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    # a single tensor or array for a network with a single input layer
    for x in (torch.tensor(x1), x1, x1.astype(np.float64)):
        out = get_output(graph['shared'], x)
        assert out.dtype == torch.get_default_dtype()
        np.testing.assert_allclose(out.detach().numpy(),
                                   np.maximum(x1 @ graph['shared'].W.detach().numpy(), 0),
                                   rtol=1e-5, atol=1e-6)
    outs = get_output([graph['shared'], graph['out']], {graph['in1']: x1, graph['in2']: x2})
    assert isinstance(outs, list) and len(outs) == 2
    assert outs[1].shape == (5, 3)


def test_get_output_input_var_and_missing_inputs(graph):
    var = torch.randn(2, 4)
    l_in = InputLayer((None, 4), input_var=var)
    layer = DenseLayer(l_in, 2)
    assert torch.equal(get_output(layer), get_output(layer, var))
    check_raises(ValueError, lambda: get_output(graph['out'], torch.zeros(2, 4)),
                 "single input", "2 input layers")
    check_raises(ValueError, lambda: get_output(graph['out'], {graph['in1']: torch.zeros(2, 4)}),
                 "InputLayer(name='in2')")
    floating = DenseLayer(DenseLayer((None, 3), 2, name="f"), 2)
    check_raises(ValueError, lambda: get_output(floating), "free-floating", "DenseLayer(name='f')")
    check_raises(TypeError, lambda: get_output(graph['out'], {"in1": torch.zeros(2, 4)}),
                 "Layer")


def test_dict_input_is_treated_as_input(graph):
    l_in = InputLayer((None, 4))
    below = Spy(l_in, name="below")
    middle = Spy(below, name="middle")
    top = Spy(middle, name="top")
    x = torch.randn(3, 4)
    out = get_output(top, {middle: x})
    assert out is x
    assert below.calls == [] and middle.calls == [] and len(top.calls) == 1


def test_kwargs_reach_every_layer():
    l_in = InputLayer((None, 4))
    a = Spy(l_in)
    b = Spy(DenseLayer(a, 4))
    c = Spy(ElemwiseSumLayer([a, b]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_output(c, torch.zeros(2, 4), deterministic=True, foo=3)
    for spy in (a, b, c):
        assert spy.calls == [{"deterministic": True, "foo": 3}]
    with pytest.warns(UserWarning, match="unused kwargs") as record:
        get_output(c, torch.zeros(2, 4), deterministc=True)
    assert "perhaps you meant deterministic" in str(record[0].message)
    assert record[0].filename == __file__  # the warning points at the caller


def test_get_output_ndim_device_and_dtype_mismatch():
    l_in = InputLayer((None, 4))
    layer = DenseLayer(l_in, 3, name="fc")
    check_raises(ValueError, lambda: get_output(layer, torch.zeros(2, 4, 1)),
                 "DenseLayer(name='fc')", "2D")
    check_raises(RuntimeError, lambda: get_output(layer, torch.zeros(2, 4, dtype=torch.float64)),
                 "DenseLayer(name='fc')", "dtype", "fc.W")
    on_meta = DenseLayer(l_in, 3, W=torch.nn.Parameter(torch.empty(4, 3, device="meta")), b=None,
                         name="m")
    check_raises(RuntimeError, lambda: get_output(on_meta, torch.zeros(2, 4)),
                 "DenseLayer(name='m')", "device", "meta")
    merged = ElemwiseSumLayer([l_in, l_in], name="s")
    check_raises(ValueError, lambda: get_output(merged, torch.zeros(2, 4, 1)),
                 "ElemwiseSumLayer(name='s')", "2D")


# --- get_output_shape ---------------------------------------------------------

def test_get_output_shape(graph):
    out = graph['out']
    assert get_output_shape(out) == (None, 3)
    assert get_output_shape([out, graph['cat']]) == [(None, 3), (None, 8)]
    assert get_output_shape(out, {}) == (None, 3)
    assert get_output_shape(out, {graph['in1']: (7, 4), graph['in2']: (7, 4)}) == (7, 3)
    assert get_output_shape(graph['cat'], {graph['sum']: (5, 4)}) == (5, 8)
    assert get_output_shape(graph['shared'], (9, 4)) == (9, 4)
    check_raises(ValueError, lambda: get_output_shape(out, (9, 4)), "dict")
    # a layer built on a shape tuple keeps its recorded input shape
    floating = DenseLayer(DenseLayer((None, 3), 2), 5)
    assert get_output_shape(floating, {floating: (4, 5)}) == (4, 5)
    merge = ConcatLayer([(None, 2), graph['in1']])
    assert get_output_shape(merge, {graph['in1']: (3, 4)}) == (3, 6)


# --- parameters ---------------------------------------------------------------

def test_get_all_params_order_and_tags(graph):
    s, t, o = graph['shared'], graph['tied'], graph['out']
    assert get_all_params(o) == [s.W, s.b, t.b, o.W, o.b]
    assert [param_name(p) for p in get_all_params(o)] == \
        ["shared.W", "shared.b", "tied.b", "out.W", "out.b"]
    assert get_all_params(o, trainable=True) == [s.W, s.b, t.b, o.W, o.b]
    assert get_all_params(o, regularizable=True) == [s.W, o.W]
    assert get_all_params(o, regularizable=False) == [s.b, t.b, o.b]
    assert get_all_params([t, s]) == [s.W, t.b, s.b]
    std = standardize(o, np.zeros(3), np.ones(3))
    assert get_all_params(std)[-2:] == std.input_layer.get_params() + std.get_params()
    assert get_all_params(std, trainable=False) == get_all_params(std)[-2:]
    assert count_params(o) == 16 + 4 + 4 + 8 * 3 + 3
    assert count_params(o, regularizable=True) == 16 + 24
    assert count_params(graph['in1']) == 0


def test_param_values_round_trip(graph, rng):
    out = graph['out']
    x = {graph['in1']: rng.standard_normal((2, 4)), graph['in2']: rng.standard_normal((2, 4))}
    values = get_all_param_values(out)
    assert [v.shape for v in values] == [(4, 4), (4,), (4,), (8, 3), (3,)]
    assert all(isinstance(v, np.ndarray) for v in values)
    new = [rng.standard_normal(v.shape) for v in values]
    set_all_param_values(out, new)
    got = get_all_param_values(out)
    for g, n in zip(got, new):
        np.testing.assert_allclose(g, n, rtol=1e-6)
    # the tied weight was written once and both layers see it
    assert graph['tied'].W is graph['shared'].W
    np.testing.assert_allclose(graph['tied'].W.detach().numpy(), new[0], rtol=1e-6)
    expected = reference_forward(graph, x[graph['in1']], x[graph['in2']])
    np.testing.assert_allclose(get_output(out, x).detach().numpy(), expected, rtol=1e-5,
                               atol=1e-5)
    # values may be tensors, and a tag filter selects what is set
    set_all_param_values(out, [torch.zeros(4), torch.ones(4), torch.zeros(3)],
                         regularizable=False)
    np.testing.assert_array_equal(graph['tied'].b.detach().numpy(), np.ones(4))
    # values are copies, not views
    values = get_all_param_values(out)
    values[0][:] = 123
    assert not np.any(graph['shared'].W.detach().numpy() == 123)


def test_set_all_param_values_errors(graph):
    out = graph['out']
    values = get_all_param_values(out)
    check_raises(ValueError, lambda: set_all_param_values(out, values[:-1]), "4 values",
                 "5 parameters")
    bad = list(values)
    bad[3] = np.zeros((3, 8))
    check_raises(ValueError, lambda: set_all_param_values(out, bad), "out.W", "(8, 3)", "(3, 8)")
    # nothing was changed by the failed call
    np.testing.assert_array_equal(get_all_param_values(out)[3], values[3])


# --- deep networks ------------------------------------------------------------

def test_5000_layer_chain_without_recursion(rng):
    limit = sys.getrecursionlimit()
    l_in = InputLayer((None, 2))
    layer = l_in
    for i in range(5000):
        if i % 2:
            layer = DenseLayer(layer, num_units=2, W=np.eye(2), nonlinearity=None)
        else:
            layer = BiasLayer(layer, b=np.full(2, 0.001))
    assert sys.getrecursionlimit() == limit
    layers = get_all_layers(layer)
    assert len(layers) == 5001 and layers[0] is l_in and layers[-1] is layer
    params = get_all_params(layer)
    assert len(params) == 2500 * 3
    assert count_params(layer) == 2500 * 2 + 2500 * 6
    assert get_output_shape(layer, (7, 2)) == (7, 2)
    x = torch.tensor(rng.standard_normal((3, 2)), dtype=torch.float32, requires_grad=True)
    out = get_output(layer, x)
    np.testing.assert_allclose(out.detach().numpy(), x.detach().numpy() + 2500 * 0.001,
                               rtol=1e-4, atol=1e-3)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.ones((3, 2)), rtol=1e-5)
    assert params[0].grad is not None and params[-1].grad is not None
    values = get_all_param_values(layer)
    set_all_param_values(layer, values)
    assert sys.getrecursionlimit() == limit
