"""DenseLayer and NINLayer against float64 numpy references."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import lasagne
from lasagne.layers import DenseLayer, InputLayer, NINLayer, get_output

from harness import check_layer, check_params, check_raises, shapes_compatible
from lasagne.utils import param_name

W_TAGS = {'trainable', 'regularizable'}
B_TAGS = {'trainable'}


def relu(x):
    return np.maximum(x, 0)


def dense_ref(x, W, b, lead, nonlin=relu):
    if lead < 0:
        lead += x.ndim
    flat = x.reshape(x.shape[:lead] + (-1,))
    out = np.tensordot(flat, W, axes=([flat.ndim - 1], [0]))
    if b is not None:
        out = out + b
    return nonlin(out)


@pytest.mark.parametrize("shape, lead", [
    ((None, 3, 4), 1),
    ((None, 3, 4), 2),
    ((None, 3, 4), -1),
    ((None, None, 4), -1),
    ((None, 2, 3, 4), -2),
    ((3, 4), 0),
    ((None, 7), 1),
    ((None, 1), 1),
])
def test_dense_values(float64, rng, shape, lead):
    l_in = InputLayer(shape)
    layer = DenseLayer(l_in, num_units=5, num_leading_axes=lead, name="fc")
    trailing = shape[lead:]
    n_in = int(np.prod(trailing))
    check_params(layer, {"W": ((n_in, 5), W_TAGS), "b": ((5,), B_TAGS)})
    with torch.no_grad():
        layer.b.copy_(torch.as_tensor(rng.standard_normal(5)))
    x = rng.standard_normal([2 + i if s is None else s for i, s in enumerate(shape)])
    W = layer.W.detach().numpy().copy()
    b = layer.b.detach().numpy().copy()
    check_layer(layer, x, lambda x: dense_ref(x, W, b, lead))


def test_dense_no_bias_identity(float64, rng):
    W = rng.standard_normal((6, 3))
    layer = DenseLayer((None, 2, 3), num_units=3, W=W, b=None, nonlinearity=None)
    assert layer.b is None
    assert layer.nonlinearity is lasagne.nonlinearities.identity
    check_params(layer, {"W": ((6, 3), W_TAGS)})
    x = rng.standard_normal((4, 2, 3))
    check_layer(layer, x, lambda x: x.reshape(4, 6) @ W)


def test_dense_custom_nonlinearity(float64, rng):
    layer = DenseLayer((None, 4), num_units=3, nonlinearity=torch.tanh)
    W = layer.W.detach().numpy().copy()
    x = rng.standard_normal((5, 4))
    check_layer(layer, x, lambda x: np.tanh(x @ W))


def test_dense_default_init_follows_lasagne_rng():
    old = lasagne.random.get_rng()
    try:
        lasagne.random.set_rng(np.random.RandomState(123))
        layer = DenseLayer((None, 10), num_units=4)
        lasagne.random.set_rng(np.random.RandomState(123))
        expected = lasagne.init.GlorotUniform()((10, 4))
    finally:
        lasagne.random.set_rng(old)
    np.testing.assert_array_equal(layer.W.detach().numpy(), expected)
    np.testing.assert_array_equal(layer.b.detach().numpy(), np.zeros(4))


def test_dense_tied_weights():
    first = DenseLayer((None, 4), num_units=4, name="a")
    second = DenseLayer(first, num_units=4, W=first.W, name="b")
    assert second.W is first.W
    assert param_name(second.W) == "a.W"  # the shared parameter keeps its first name


@pytest.mark.parametrize("num_units", [0, -3, 2.5, True, None])
def test_dense_bad_num_units(num_units):
    check_raises(ValueError, lambda: DenseLayer((None, 4), num_units=num_units),
                 "DenseLayer", "num_units")


def test_dense_bad_num_leading_axes():
    check_raises(ValueError, lambda: DenseLayer((None, 4), 3, num_leading_axes=2),
                 "DenseLayer", "num_leading_axes")
    check_raises(ValueError, lambda: DenseLayer((None, 4), 3, num_leading_axes=-3),
                 "DenseLayer", "num_leading_axes")
    check_raises(TypeError, lambda: DenseLayer((None, 4), 3, num_leading_axes=1.0),
                 "DenseLayer", "num_leading_axes")


def test_dense_unknown_trailing_size():
    check_raises(ValueError, lambda: DenseLayer((None, None, 4), 3, name="fc"),
                 "DenseLayer(name='fc')", "trailing", "num_leading_axes")


def test_dense_bad_W_shape(rng):
    check_raises(ValueError, lambda: DenseLayer((None, 4), 3, W=rng.standard_normal((3, 4)),
                                                name="fc"),
                 "DenseLayer(name='fc')", "fc.W", "(4, 3)")
    check_raises(ValueError, lambda: DenseLayer((None, 4), 3, b=np.zeros((3, 1))),
                 "DenseLayer", "'b'")


def test_dense_wrong_input_ndim():
    layer = DenseLayer(InputLayer((None, 4)), 3, name="fc")
    check_raises(ValueError, lambda: get_output(layer, torch.zeros(2, 4, 1)),
                 "DenseLayer(name='fc')", "2D")


@given(st.lists(st.one_of(st.none(), st.integers(1, 4)), min_size=1, max_size=4),
       st.lists(st.integers(1, 3), min_size=1, max_size=2),
       st.integers(1, 4))
def test_dense_shape_property(leading, trailing, units):
    shape = tuple(leading) + tuple(trailing)
    lead = len(leading) if len(leading) % 2 else -len(trailing)
    layer = DenseLayer(shape, num_units=units, num_leading_axes=lead)
    concrete = tuple(2 if s is None else s for s in shape)
    out = layer.get_output_for(torch.zeros(concrete))
    assert shapes_compatible(layer.output_shape, tuple(out.shape))
    assert layer.get_output_shape_for(concrete) == tuple(out.shape)


def nin_ref(x, W, b, untied):
    out = np.einsum('bc...,cu->bu...', x, W)
    if b is not None:
        out = out + (b[None] if untied else b.reshape((1, -1) + (1,) * (x.ndim - 2)))
    return relu(out)


@pytest.mark.parametrize("shape, untied", [
    ((None, 3, 5, 4), False),
    ((2, 3, 5, 4), True),
    ((None, 3), False),
    ((None, 2, 6), True),
    ((None, 1, 1, 1, 2), False),
])
def test_nin_values(float64, rng, shape, untied):
    layer = NINLayer(shape, num_units=4, untie_biases=untied,
                     b=lambda s: rng.standard_normal(s), name="nin")
    b_shape = (4,) + (tuple(shape[2:]) if untied else ())
    check_params(layer, {"W": ((shape[1], 4), W_TAGS), "b": (b_shape, B_TAGS)})
    W = layer.W.detach().numpy().copy()
    b = layer.b.detach().numpy().copy()
    x = rng.standard_normal([3 if s is None else s for s in shape])
    check_layer(layer, x, lambda x: nin_ref(x, W, b, untied))


def test_nin_no_bias(float64, rng):
    layer = NINLayer((None, 3, 2, 2), num_units=2, b=None, nonlinearity=None)
    W = layer.W.detach().numpy().copy()
    x = rng.standard_normal((2, 3, 2, 2))
    check_layer(layer, x, lambda x: np.einsum('bchw,cu->buhw', x, W))


def test_nin_errors():
    check_raises(ValueError, lambda: NINLayer((None, 3, 4), 0), "NINLayer", "num_units")
    check_raises(ValueError, lambda: NINLayer((None,), 2), "NINLayer", "axis 1")
    check_raises(ValueError, lambda: NINLayer((None, None, 4), 2), "NINLayer", "axis 1")
    check_raises(ValueError, lambda: NINLayer((None, 3, None), 2, untie_biases=True),
                 "NINLayer", "'b'")


@given(st.lists(st.one_of(st.none(), st.integers(1, 4)), min_size=0, max_size=3),
       st.booleans())
def test_nin_shape_property(spatial, batch_known):
    shape = (3 if batch_known else None, 2) + tuple(spatial)
    layer = NINLayer(shape, num_units=3)
    out = layer.get_output_for(torch.zeros(tuple(2 if s is None else s for s in shape)))
    assert shapes_compatible(layer.output_shape, tuple(out.shape))
