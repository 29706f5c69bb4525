"""NonlinearityLayer, BiasLayer, ScaleLayer, standardize, ExpressionLayer,
InverseLayer and the parametric / randomized rectifiers."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import lasagne
from lasagne.layers import (BiasLayer, DenseLayer, ExpressionLayer, InputLayer, InverseLayer,
                            NonlinearityLayer, ParametricRectifierLayer, RandomizedRectifierLayer,
                            ScaleLayer, get_all_params, get_output, prelu, rrelu, standardize)

from harness import check_layer, check_params, check_raises, shapes_compatible


def concrete(shape, fill=3):
    return tuple(fill if s is None else s for s in shape)


def broadcast_param(p, shared_axes, ndim):
    shape = list(p.shape)
    for axis in sorted(shared_axes):
        shape.insert(axis, 1)
    return p.reshape(shape)


# --- NonlinearityLayer --------------------------------------------------------

@pytest.mark.parametrize("nonlinearity, ref", [
    (lasagne.nonlinearities.rectify, lambda x: np.maximum(x, 0)),
    (None, lambda x: x),
    (lasagne.nonlinearities.tanh, np.tanh),
    (lasagne.nonlinearities.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
])
def test_nonlinearity_layer(float64, rng, nonlinearity, ref):
    layer = NonlinearityLayer(InputLayer((None, 3, 2)), nonlinearity)
    check_params(layer, {})
    check_layer(layer, rng.standard_normal((4, 3, 2)), ref)


def test_nonlinearity_layer_default_is_rectify():
    assert NonlinearityLayer((None, 2)).nonlinearity is lasagne.nonlinearities.rectify


def test_nonlinearity_layer_bad_argument():
    check_raises(TypeError, lambda: NonlinearityLayer((None, 2), "relu"),
                 "NonlinearityLayer", "nonlinearity")


# --- BiasLayer / ScaleLayer ---------------------------------------------------

@pytest.mark.parametrize("shape, shared_axes, param_shape", [
    ((None, 5), 'auto', (5,)),
    ((None, 3, 4, 2), 'auto', (3,)),
    ((20, 30, 4, 5), (0, 2), (30, 5)),
    ((None, 3, 4), 0, (3, 4)),
    ((None, 3, 4), (0, -1), (3,)),
    ((None, 3, 4), (-3, 1), (4,)),
    ((None,), 'auto', ()),
    ((2, 3), (), (2, 3)),
])
@pytest.mark.parametrize("kind", ["bias", "scale"])
def test_bias_scale_values(float64, rng, shape, shared_axes, param_shape, kind):
    init = lambda s: rng.standard_normal(s)  # noqa: E731
    if kind == "bias":
        layer = BiasLayer(InputLayer(shape), b=init, shared_axes=shared_axes, name="l")
        param = layer.b
        check_params(layer, {"b": (param_shape, {"trainable"})})
    else:
        layer = ScaleLayer(InputLayer(shape), scales=init, shared_axes=shared_axes, name="l")
        param = layer.scales
        check_params(layer, {"scales": (param_shape, {"trainable"})})
    p = param.detach().numpy().copy()
    x = rng.standard_normal(concrete(shape))
    ndim = len(shape)
    shared = [a % ndim for a in ((shared_axes,) if isinstance(shared_axes, int) else
                                 ((0,) + tuple(range(2, ndim)) if shared_axes == 'auto'
                                  else shared_axes))]
    pb = broadcast_param(p, shared, ndim)
    check_layer(layer, x, (lambda x: x + pb) if kind == "bias" else (lambda x: x * pb))


def test_bias_layer_none(float64, rng):
    layer = BiasLayer(InputLayer((None, 3)), b=None)
    assert layer.b is None and layer.get_params() == []
    x = rng.standard_normal((2, 3))
    out = check_layer(layer, x, lambda x: x)
    assert out.requires_grad


def test_scale_default_init():
    layer = ScaleLayer((None, 3, 2, 2))
    np.testing.assert_array_equal(layer.scales.detach().numpy(), np.ones(3))
    assert layer.shared_axes == (0, 2, 3)
    assert BiasLayer((None, 3)).shared_axes == (0,)


@pytest.mark.parametrize("cls", [BiasLayer, ScaleLayer])
def test_bias_scale_errors(cls):
    name = cls.__name__
    check_raises(ValueError, lambda: cls((None, None, 3)), name, "shared_axes")
    check_raises(ValueError, lambda: cls((None, 3), shared_axes=2), name, "shared_axes")
    check_raises(ValueError, lambda: cls((None, 3), shared_axes=(0, -2)), name, "shared_axes")
    check_raises(ValueError, lambda: cls((None, 3), shared_axes='all'), name, "shared_axes")
    check_raises(TypeError, lambda: cls((None, 3), shared_axes=(0.5,)), name, "shared_axes")
    check_raises(ValueError, lambda: cls((None, 3), np.zeros(4)), name, "(3,)")


def test_scale_none_rejected():
    check_raises(ValueError, lambda: ScaleLayer((None, 3), scales=None), "ScaleLayer", "scales")


def test_standardize(float64, rng):
    l_in = InputLayer((None, 4, 3))
    offset = rng.standard_normal(4)
    scale = rng.uniform(0.5, 2, 4)
    layer = standardize(l_in, offset, scale)
    assert isinstance(layer, ScaleLayer) and isinstance(layer.input_layer, BiasLayer)
    params = get_all_params(layer)
    assert len(params) == 2
    assert get_all_params(layer, trainable=True) == []
    x = rng.standard_normal((2, 4, 3))
    # check_layer feeds a layer's direct input; here the whole stack is checked
    out = get_output(layer, x).detach().numpy()
    np.testing.assert_allclose(out, (x - offset[:, None]) / scale[:, None], rtol=1e-12)


@given(st.lists(st.one_of(st.none(), st.integers(1, 3)), min_size=1, max_size=4),
       st.data())
def test_bias_shape_property(shape, data):
    ndim = len(shape)
    known = [a for a in range(ndim) if shape[a] is not None]
    unknown = [a for a in range(ndim) if shape[a] is None]
    extra = data.draw(st.lists(st.sampled_from(known), unique=True)) if known else []
    shared = tuple(sorted(set(unknown) | set(extra)))
    layer = BiasLayer(tuple(shape), shared_axes=shared)
    out = layer.get_output_for(torch.zeros(concrete(shape, 2)))
    assert shapes_compatible(layer.output_shape, tuple(out.shape))
    assert tuple(layer.b.shape) == tuple(shape[a] for a in range(ndim) if a not in shared)


# --- ExpressionLayer ----------------------------------------------------------

def test_expression_same_shape(float64, rng):
    layer = ExpressionLayer(InputLayer((None, 3)), lambda x: x ** 2)
    assert layer.output_shape == (None, 3)
    check_layer(layer, rng.standard_normal((4, 3)), lambda x: x ** 2)


def test_expression_tuple_and_callable(float64, rng):
    l_in = InputLayer((None, 3, 4))
    fixed = ExpressionLayer(l_in, lambda x: x.sum(-1), output_shape=(None, 3))
    # a tuple is the output shape whatever the input, as in the original
    assert fixed.output_shape == (None, 3)
    assert fixed.get_output_shape_for((2, 3, 4)) == (None, 3)
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_allclose(get_output(fixed, x).numpy(), x.sum(-1), rtol=1e-12)
    fn = ExpressionLayer(l_in, lambda x: x.transpose(1, 2),
                         output_shape=lambda s: (s[0], s[2], s[1]))
    assert fn.output_shape == (None, 4, 3)
    check_layer(fn, rng.standard_normal((2, 3, 4)), lambda x: x.transpose(0, 2, 1))


@pytest.mark.parametrize("shape, fn, ref, expected", [
    ((None, 100, 20), lambda x: x.mean(-1), lambda x: x.mean(-1), (None, 100)),
    ((None, 3, 4), lambda x: x.flatten(1), lambda x: x.reshape(len(x), -1), (None, 12)),
    ((None, 3, 4), lambda x: x.sum(0), lambda x: x.sum(0), (3, 4)),
    ((None, 3, 4), lambda x: x.reshape(-1, 4), lambda x: x.reshape(-1, 4), (None, 4)),
    ((5, 3), lambda x: x[None, :, :2], lambda x: x[None, :, :2], (1, 5, 2)),
    ((None, None), lambda x: x.unsqueeze(1) * 2, lambda x: x[:, None] * 2, (None, 1, None)),
])
def test_expression_auto(float64, rng, shape, fn, ref, expected):
    layer = ExpressionLayer(InputLayer(shape), fn, output_shape='auto')
    assert layer.output_shape == expected
    assert layer.output_shape == expected  # cached
    check_layer(layer, rng.standard_normal(concrete(shape, 4)), ref)


def test_expression_errors():
    check_raises(TypeError, lambda: ExpressionLayer((None, 3), "x"), "ExpressionLayer",
                 "function")
    check_raises(ValueError, lambda: ExpressionLayer((None, 3), abs, output_shape='same'),
                 "ExpressionLayer", "output_shape")
    check_raises(ValueError, lambda: ExpressionLayer((None, 3), abs, output_shape=(None, -2)),
                 "ExpressionLayer", "output_shape")
    bad = ExpressionLayer((None, 3), lambda x: x.reshape(7, -1), output_shape='auto', name="e")
    check_raises(ValueError, lambda: bad.output_shape, "ExpressionLayer(name='e')",
                 "output_shape='auto'")


# --- InverseLayer -------------------------------------------------------------

def test_inverse_of_dense_given_inputs(float64, rng):
    l_in = InputLayer((None, 5))
    l_enc = DenseLayer(l_in, num_units=3, b=lambda s: rng.standard_normal(s))
    layer = InverseLayer(InputLayer((None, 3)), l_enc)
    assert layer.output_shape == (None, 5)
    W = l_enc.W.detach().numpy().copy()
    b = l_enc.b.detach().numpy().copy()
    g, h, x = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal((4, 5))
    # inputs in layer.input_layers order: (incoming, inverted layer, its input)
    check_layer(layer, [g, h, x], lambda g, h, x: (g * (x @ W + b > 0)) @ W.T, grad=False)


def test_inverse_autoencoder_graph(float64, rng):
    l_in = InputLayer((None, 6))
    l_enc = DenseLayer(l_in, num_units=4, nonlinearity=None)
    l_dec = InverseLayer(l_enc, l_enc)
    W = l_enc.W.detach().numpy().copy()
    x = rng.standard_normal((3, 6))
    for requires_grad in (False, True):
        xt = torch.tensor(x, requires_grad=requires_grad)
        out = get_output(l_dec, xt)
        np.testing.assert_allclose(out.detach().numpy(), (x @ W + l_enc.b.detach().numpy()) @ W.T,
                                   rtol=1e-10)
        out.sum().backward()
        assert l_enc.W.grad is not None and torch.isfinite(l_enc.W.grad).all()
        l_enc.W.grad = None
    with torch.no_grad():
        out = get_output(l_dec, torch.tensor(x))
    assert out.shape == (3, 6)


def test_inverse_errors():
    check_raises(TypeError, lambda: InverseLayer((None, 3), DenseLayer((None, 2), 3)),
                 "InverseLayer", "layer")


# --- ParametricRectifierLayer / RandomizedRectifierLayer ------------------------

@pytest.mark.parametrize("shape, shared_axes, alpha_shape", [
    ((None, 3, 4, 4), 'auto', (3,)),
    ((None, 3, 4), 'all', ()),
    ((2, 3, 4), (0, 2), (3,)),
    ((None, 5), 0, (5,)),
])
def test_prelu_values(float64, rng, shape, shared_axes, alpha_shape):
    layer = ParametricRectifierLayer(InputLayer(shape), alpha=lambda s: rng.uniform(0, 1, s),
                                     shared_axes=shared_axes, name="pr")
    check_params(layer, {"alpha": (alpha_shape, {"trainable"})})
    ndim = len(shape)
    shared = layer.shared_axes
    a = broadcast_param(layer.alpha.detach().numpy().copy(), shared, ndim)
    x = rng.standard_normal(concrete(shape))
    check_layer(layer, x, lambda x: np.where(x > 0, x, a * x))


def test_prelu_helper():
    dense = DenseLayer((None, 4), 3)
    layer = prelu(dense)
    assert isinstance(layer, ParametricRectifierLayer) and layer.input_layer is dense
    assert dense.nonlinearity is lasagne.nonlinearities.identity
    np.testing.assert_array_equal(layer.alpha.detach().numpy(), np.full(3, 0.25))
    check_raises(ValueError, lambda: ParametricRectifierLayer((None, None, 3)),
                 "ParametricRectifierLayer", "shared_axes")


def test_rrelu(float64, rng):
    l_in = InputLayer((None, 3, 5))
    layer = RandomizedRectifierLayer(l_in, lower=0.2, upper=0.6)
    assert layer.shared_axes == (0, 2)
    x = -np.abs(rng.standard_normal((4, 3, 5))) - 0.1
    check_layer(layer, x, lambda x: x * 0.4, deterministic=True)
    out = get_output(layer, torch.tensor(x)).numpy()
    slope = out / x
    assert np.all((slope >= 0.2 - 1e-12) & (slope <= 0.6 + 1e-12))
    # one slope per channel, shared over the batch and the trailing axis
    np.testing.assert_allclose(slope, np.broadcast_to(slope[:1, :, :1], slope.shape), rtol=1e-12)
    pos = np.abs(x)
    np.testing.assert_array_equal(get_output(layer, torch.tensor(pos)).numpy(), pos)
    helper = rrelu(DenseLayer(l_in, 2))
    assert helper.input_layer.nonlinearity is lasagne.nonlinearities.identity
    check_raises(ValueError, lambda: RandomizedRectifierLayer(l_in, lower=0.5, upper=0.1),
                 "RandomizedRectifierLayer", "lower")
