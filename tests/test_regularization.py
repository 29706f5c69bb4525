"""Penalties and the regularize_* helpers against numpy float64 sums."""

import inspect

import numpy as np
import pytest
import torch

from lasagne import regularization as reg
from lasagne.layers import InputLayer, Layer, MergeLayer


class Affine(Layer):
    """A minimal dense layer for these tests: W (regularizable), b (not)."""

    def __init__(self, incoming, num_units, W=None, b=None, **kwargs):
        super(Affine, self).__init__(incoming, **kwargs)
        n_in = self.input_shape[1]
        self.num_units = num_units
        self.W = self.add_param(W if W is not None else np.random.randn(n_in, num_units),
                                (n_in, num_units))
        self.b = self.add_param(np.random.randn(num_units), (num_units,), regularizable=False)

    def get_output_shape_for(self, input_shape):
        return (input_shape[0], self.num_units)

    def get_output_for(self, input, **kwargs):
        return input @ self.W + self.b


class Sum(MergeLayer):
    def get_output_shape_for(self, input_shapes):
        return input_shapes[0]

    def get_output_for(self, inputs, **kwargs):
        return sum(inputs)


def values(params):
    return [p.detach().numpy().astype(np.float64) for p in params]


def np_l1(a):
    return np.abs(a).sum()


def np_l2(a):
    return (a ** 2).sum()


@pytest.fixture
def net(float64):
    l_in = InputLayer((None, 6))
    l1 = Affine(l_in, 5)
    l2 = Affine(l1, 4)
    l3 = Affine(l2, 3)
    return l_in, l1, l2, l3


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 4)])
def test_l1_l2(rng, shape, float64):
    a = rng.normal(size=shape)
    x = torch.tensor(a, requires_grad=True)
    out1, out2 = reg.l1(x), reg.l2(x)
    assert out1.ndim == 0 and out2.ndim == 0
    np.testing.assert_allclose(out1.item(), np_l1(a), rtol=1e-13)
    np.testing.assert_allclose(out2.item(), np_l2(a), rtol=1e-13)  # no factor 1/2
    (out1 + out2).backward()
    np.testing.assert_allclose(x.grad.numpy(), np.sign(a) + 2 * a, rtol=1e-13)


def test_apply_penalty(rng, float64):
    arrays = [rng.normal(size=(3, 4)), rng.normal(size=5), rng.normal(size=(2, 2, 2))]
    tensors = [torch.tensor(a) for a in arrays]
    expected = sum(np_l2(a) for a in arrays)
    np.testing.assert_allclose(reg.apply_penalty(tensors, reg.l2).item(), expected, rtol=1e-13)
    np.testing.assert_allclose(reg.apply_penalty(tuple(tensors), reg.l2).item(), expected,
                               rtol=1e-13)
    np.testing.assert_allclose(reg.apply_penalty(iter(tensors), reg.l2).item(), expected,
                               rtol=1e-13)
    # a single tensor is penalised as a whole, not row by row
    np.testing.assert_allclose(reg.apply_penalty(tensors[0], reg.l1).item(), np_l1(arrays[0]),
                               rtol=1e-13)
    zero = reg.apply_penalty([], reg.l2)
    assert isinstance(zero, torch.Tensor) and zero.item() == 0


def test_apply_penalty_kwargs(rng, float64):
    def lp(x, p=2):
        return torch.sum(torch.abs(x) ** p)

    arrays = [rng.normal(size=4), rng.normal(size=(2, 3))]
    out = reg.apply_penalty([torch.tensor(a) for a in arrays], lp, p=3)
    np.testing.assert_allclose(out.item(), sum((np.abs(a) ** 3).sum() for a in arrays),
                               rtol=1e-13)


def test_apply_penalty_does_not_hide_penalty_errors(float64):
    def broken(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        reg.apply_penalty([torch.ones(2)], broken)
    with pytest.raises(TypeError, match="penalty"):
        reg.apply_penalty([torch.ones(2)], "l2")


def test_regularize_layer_params(net):
    _, l1, l2, l3 = net
    # only W is regularizable
    np.testing.assert_allclose(reg.regularize_layer_params(l2, reg.l2).item(),
                               np_l2(values([l2.W])[0]), rtol=1e-13)
    np.testing.assert_allclose(reg.regularize_layer_params([l1, l3], reg.l1).item(),
                               np_l1(values([l1.W])[0]) + np_l1(values([l3.W])[0]), rtol=1e-13)
    # tags select other parameters
    np.testing.assert_allclose(
        reg.regularize_layer_params(l2, reg.l2, tags={'regularizable': False}).item(),
        np_l2(values([l2.b])[0]), rtol=1e-13)
    np.testing.assert_allclose(
        reg.regularize_layer_params(l2, reg.l2, tags={'trainable': True}).item(),
        sum(np_l2(v) for v in values([l2.W, l2.b])), rtol=1e-13)


def test_regularize_layer_params_weighted(net):
    _, l1, l2, l3 = net
    out = reg.regularize_layer_params_weighted({l1: 0.1, l3: 0.5}, reg.l2)
    W1, W3 = values([l1.W, l3.W])
    np.testing.assert_allclose(out.item(), 0.1 * np_l2(W1) + 0.5 * np_l2(W3), rtol=1e-13)
    out = reg.regularize_layer_params_weighted({l2: 2.0}, reg.l1, tags={'trainable': True})
    np.testing.assert_allclose(out.item(), 2.0 * sum(np_l1(v) for v in values([l2.W, l2.b])),
                               rtol=1e-13)
    assert reg.regularize_layer_params_weighted({}, reg.l2).item() == 0
    with pytest.raises(TypeError, match="dict"):
        reg.regularize_layer_params_weighted([l1, l2], reg.l2)


def test_regularize_network_params(net):
    _, l1, l2, l3 = net
    out = reg.regularize_network_params(l3, reg.l2)
    np.testing.assert_allclose(out.item(), sum(np_l2(v) for v in values([l1.W, l2.W, l3.W])),
                               rtol=1e-13)
    out = reg.regularize_network_params(l2, reg.l1, tags={'regularizable': False})
    np.testing.assert_allclose(out.item(), sum(np_l1(v) for v in values([l1.b, l2.b])),
                               rtol=1e-13)


def test_shared_parameter(float64):
    l_in = InputLayer((None, 4))
    a = Affine(l_in, 4)
    b = Affine(a, 4, W=a.W)  # tied weights
    assert b.W is a.W
    W = values([a.W])[0]
    # a whole network counts a shared parameter once ...
    np.testing.assert_allclose(reg.regularize_network_params(b, reg.l2).item(), np_l2(W),
                               rtol=1e-13)
    # ... a list of layers penalises each layer's parameters (as the original)
    np.testing.assert_allclose(reg.regularize_layer_params([a, b], reg.l2).item(), 2 * np_l2(W),
                               rtol=1e-13)


def test_merge_network(float64):
    l_in = InputLayer((None, 3))
    left, right = Affine(l_in, 2), Affine(l_in, 2)
    top = Affine(Sum([left, right]), 2)
    out = reg.regularize_network_params(top, reg.l2)
    np.testing.assert_allclose(out.item(),
                               sum(np_l2(v) for v in values([left.W, right.W, top.W])),
                               rtol=1e-13)


def test_gradients_reach_parameters(net, rng):
    l_in, l1, l2, l3 = net
    penalty = 1e-2 * reg.regularize_network_params(l3, reg.l2) \
        + reg.regularize_layer_params_weighted({l1: 0.3}, reg.l1)
    penalty.backward()
    W1, W2, W3 = values([l1.W, l2.W, l3.W])
    np.testing.assert_allclose(l1.W.grad.numpy(), 2e-2 * W1 + 0.3 * np.sign(W1), rtol=1e-12)
    np.testing.assert_allclose(l2.W.grad.numpy(), 2e-2 * W2, rtol=1e-12)
    np.testing.assert_allclose(l3.W.grad.numpy(), 2e-2 * W3, rtol=1e-12)
    assert l1.b.grad is None  # biases are not regularized by default


def test_signatures():
    for fn in (reg.regularize_layer_params, reg.regularize_layer_params_weighted,
               reg.regularize_network_params):
        params = inspect.signature(fn).parameters
        assert params['tags'].default == {'regularizable': True}
        assert list(params)[1:3] == ['penalty', 'tags']


def test_bad_tags(net):
    with pytest.raises(TypeError, match="tags"):
        reg.regularize_network_params(net[-1], reg.l2, tags=['regularizable'])
