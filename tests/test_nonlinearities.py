"""Nonlinearities against float64 numpy formulas on fresh random inputs."""

import numpy as np
import pytest
import torch

from lasagne import nonlinearities as nl


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

REFERENCES = [
    (nl.sigmoid, np_sigmoid),
    (nl.tanh, np.tanh),
    (nl.ScaledTanH(scale_in=2. / 3, scale_out=1.7159), lambda x: 1.7159 * np.tanh(2. / 3 * x)),
    (nl.ScaledTanh(scale_in=0.5, scale_out=2.4), lambda x: 2.4 * np.tanh(0.5 * x)),
    (nl.ScaledTanH(), np.tanh),
    (nl.rectify, lambda x: np.maximum(x, 0)),
    (nl.LeakyRectify(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    (nl.LeakyRectify(), lambda x: np.where(x > 0, x, 0.01 * x)),
    (nl.leaky_rectify, lambda x: np.where(x > 0, x, 0.01 * x)),
    (nl.very_leaky_rectify, lambda x: np.where(x > 0, x, x / 3.0)),
    (nl.elu, np_elu),
    (nl.SELU(), np_elu),
    (nl.SELU(scale=2.0, scale_neg=0.5), lambda x: 2.0 * np.where(x > 0, x, 0.5 * np.expm1(
        np.minimum(x, 0)))),
    (nl.selu, lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))),
    (nl.softplus, lambda x: np.logaddexp(0.0, x)),
    (nl.linear, lambda x: x),
    (nl.identity, lambda x: x),
]


def ids(case):
    f = case[0]
    return getattr(f, "__name__", type(f).__name__)


@pytest.mark.parametrize("fn,ref", REFERENCES, ids=[ids(c) for c in REFERENCES])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 2), (11,)])
def test_elementwise_against_numpy(rng, float64, fn, ref, shape):
    x = rng.normal(0, 3, size=shape)
    x.flat[0] = -25.0  # deep negative and large positive values too
    x.flat[-1] = 25.0
    out = fn(torch.tensor(x))
    assert out.shape == x.shape and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn,ref", REFERENCES, ids=[ids(c) for c in REFERENCES])
def test_float32(rng, fn, ref):
    x = rng.normal(0, 3, size=(6, 4)).astype(np.float32)
    out = fn(torch.tensor(x))
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref(x.astype(np.float64)), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("fn", [f for f, _ in REFERENCES if f not in (nl.linear, nl.identity)],
                         ids=[ids(c) for c in REFERENCES if c[0] not in (nl.linear, nl.identity)])
def test_gradients(rng, fn):
    x = torch.tensor(rng.normal(0, 2, size=(4, 3)), dtype=torch.float64, requires_grad=True)
    # keep away from the kinks at 0, where the derivative is not defined
    with torch.no_grad():
        x[x.abs() < 1e-3] += 0.01
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("shape", [(5, 3), (1, 1), (4, 10)])
def test_softmax(rng, float64, shape):
    x = rng.normal(0, 5, size=shape)
    x[0, 0] = 700.0  # would overflow a naive exp
    out = nl.softmax(torch.tensor(x)).numpy()
    np.testing.assert_allclose(out, np_softmax(x), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(out.sum(axis=1), np.ones(shape[0]), rtol=1e-12)
    assert (out >= 0).all() and (out <= 1).all()


def test_softmax_gradient(rng):
    x = torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(nl.softmax, (x,))


def test_selu_constants():
    assert nl.selu.scale == pytest.approx(SELU_SCALE, rel=1e-16)
    assert nl.selu.scale_neg == pytest.approx(SELU_ALPHA, rel=1e-16)
    s = nl.SELU()
    assert s.scale == 1 and s.scale_neg == 1


def test_selu_self_normalising(rng, float64):
    x = torch.tensor(rng.normal(size=400_000))
    y = nl.selu(x).numpy()
    assert abs(y.mean()) < 0.01
    assert abs(y.var() - 1.0) < 0.01


def test_defaults_and_aliases():
    assert nl.ScaledTanh is nl.ScaledTanH
    assert nl.identity is nl.linear
    assert nl.LeakyRectify().leakiness == 0.01
    assert nl.leaky_rectify.leakiness == 0.01
    assert nl.very_leaky_rectify.leakiness == pytest.approx(1. / 3)
    t = nl.ScaledTanH()
    assert (t.scale_in, t.scale_out) == (1, 1)
    x = torch.randn(3)
    assert nl.linear(x) is x


def test_leaky_rectify_extremes(rng, float64):
    x = torch.tensor(rng.normal(size=20))
    np.testing.assert_array_equal(nl.LeakyRectify(0)(x).numpy(), nl.rectify(x).numpy())
    np.testing.assert_array_equal(nl.LeakyRectify(1)(x).numpy(), x.numpy())
