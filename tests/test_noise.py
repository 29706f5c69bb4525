"""DropoutLayer (and its helpers) and GaussianNoiseLayer."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import lasagne
from lasagne.layers import (DropoutLayer, GaussianNoiseLayer, InputLayer, dropout,
                            dropout_channels, dropout_locations, spatial_dropout)

from harness import check_layer, check_params, check_raises, shapes_compatible


@pytest.mark.parametrize("cls, kwargs", [
    (DropoutLayer, dict(p=0.5)),
    (DropoutLayer, dict(p=0.2, rescale=False, shared_axes=(0, -1))),
    (GaussianNoiseLayer, dict(sigma=0.3)),
])
def test_deterministic_is_identity(float64, rng, cls, kwargs):
    layer = cls(InputLayer((None, 3, 4)), name="n", **kwargs)
    check_params(layer, {})
    x = rng.standard_normal((2, 3, 4))
    check_layer(layer, x, lambda x: x, deterministic=True)


def test_zero_probability_is_identity(float64):
    x = torch.randn(3, 4)
    assert DropoutLayer((None, 4), p=0).get_output_for(x) is x
    assert GaussianNoiseLayer((None, 4), sigma=0).get_output_for(x) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
@pytest.mark.parametrize("rescale", [True, False])
def test_dropout_values_and_rate(rng, p, rescale):
    x = torch.tensor(rng.uniform(1, 2, (100, 1000)), dtype=torch.float32)
    out = DropoutLayer((None, 1000), p=p, rescale=rescale).get_output_for(x)
    assert out.dtype == x.dtype and out.shape == x.shape
    kept = out != 0
    scale = 1 / (1 - p) if rescale else 1.0
    torch.testing.assert_close(out[kept], x[kept] * scale)
    # 100,000 Bernoulli draws: the kept fraction is within 5 standard deviations
    frac = kept.double().mean().item()
    assert abs(frac - (1 - p)) < 5 * np.sqrt(p * (1 - p) / x.numel())


def test_dropout_full_drop_without_rescale():
    out = DropoutLayer((None, 5), p=1, rescale=False).get_output_for(torch.ones(3, 5))
    assert torch.equal(out, torch.zeros(3, 5))


@pytest.mark.parametrize("shared_axes, mask_axes", [
    ((2, 3), (0, 1)),
    ((1,), (0, 2, 3)),
    ((-1, -2), (0, 1)),
    ((0,), (1, 2, 3)),
    ((0, 1, 2, 3), ()),
])
def test_dropout_shared_axes(shared_axes, mask_axes):
    layer = DropoutLayer((None, 16, 5, 6), p=0.5, shared_axes=shared_axes)
    out = layer.get_output_for(torch.ones(8, 16, 5, 6))
    shared = tuple(a % 4 for a in shared_axes)
    assert layer.shared_axes == tuple(sorted(shared))
    # along the shared axes the mask is constant
    first = out
    for axis in shared:
        first = first.narrow(axis, 0, 1)
    assert torch.equal(out, first.expand_as(out))
    assert set(out.unique().tolist()) <= {0.0, 2.0}


def test_dropout_helpers():
    l_in = InputLayer((None, 8, 4, 4, 4))
    assert dropout is DropoutLayer and spatial_dropout is dropout_channels
    assert dropout_channels(l_in, p=0.3).shared_axes == (2, 3, 4)
    assert dropout_channels((None, 8, 4), 0.3).shared_axes == (2,)
    loc = dropout_locations(l_in, p=0.3, name="d")
    assert loc.shared_axes == (1,) and loc.p == 0.3 and loc.name == "d"


def test_dropout_gradient():
    x = torch.randn(50, 20, requires_grad=True)
    out = DropoutLayer((None, 20), p=0.5).get_output_for(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() * 2)


def test_noise_is_seedable():
    d = DropoutLayer((None, 30), p=0.5)
    g = GaussianNoiseLayer((None, 30))
    x = torch.randn(4, 30)
    lasagne.random.seed(7)
    a = (d.get_output_for(x), g.get_output_for(x))
    lasagne.random.seed(7)
    b = (d.get_output_for(x), g.get_output_for(x))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(d.get_output_for(x), a[0])


def test_construction_advances_lasagne_rng_like_the_original():
    # the original drew one int from get_rng() to seed each layer's stream;
    # later initial weights depend on it
    old = lasagne.random.get_rng()
    try:
        lasagne.random.set_rng(np.random.RandomState(3))
        DropoutLayer((None, 4))
        GaussianNoiseLayer((None, 4))
        after = lasagne.random.get_rng().uniform(size=3)
    finally:
        lasagne.random.set_rng(old)
    ref = np.random.RandomState(3)
    ref.randint(1, 2147462579)
    ref.randint(1, 2147462579)
    np.testing.assert_array_equal(after, ref.uniform(size=3))


def test_noise_layers_compile_without_graph_breaks():
    d = DropoutLayer((None, 3, 4), p=0.25, shared_axes=(2,))
    g = GaussianNoiseLayer((None, 3, 4), sigma=0.5)

    def f(x):
        return g.get_output_for(d.get_output_for(x))

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    out = compiled(torch.ones(2, 3, 4))
    assert out.shape == (2, 3, 4)


def test_gaussian_noise_statistics(rng):
    x = torch.tensor(rng.standard_normal((200, 500)))
    sigma = 0.3
    noise = GaussianNoiseLayer((None, 500), sigma=sigma).get_output_for(x) - x
    n = noise.numel()
    assert abs(noise.mean().item()) < 5 * sigma / np.sqrt(n)
    assert abs(noise.std().item() - sigma) < 0.01
    assert noise.dtype == x.dtype


def test_noise_errors():
    for p in (-0.1, 1.5, "0.5", None):
        check_raises(ValueError, lambda: DropoutLayer((None, 3), p=p), "DropoutLayer", "p")
    check_raises(ValueError, lambda: DropoutLayer((None, 3), p=1), "DropoutLayer", "p=1",
                 "rescale")
    check_raises(ValueError, lambda: DropoutLayer((None, 3), shared_axes=(2,), name="d"),
                 "DropoutLayer(name='d')", "shared_axes")
    check_raises(ValueError, lambda: GaussianNoiseLayer((None, 3), sigma=-1), "GaussianNoiseLayer",
                 "sigma")


@given(st.lists(st.one_of(st.none(), st.integers(1, 4)), min_size=1, max_size=4), st.data())
def test_dropout_shape_property(shape, data):
    ndim = len(shape)
    shared = data.draw(st.lists(st.integers(-ndim, ndim - 1), unique_by=lambda a: a % ndim))
    layer = DropoutLayer(tuple(shape), p=0.5, shared_axes=tuple(shared))
    out = layer.get_output_for(torch.ones(tuple(2 if s is None else s for s in shape)))
    assert shapes_compatible(layer.output_shape, tuple(out.shape))
    assert layer.output_shape == tuple(shape)
