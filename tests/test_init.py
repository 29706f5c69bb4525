"""Initializers: bit-identical draws to an independent re-derivation of the
original Lasagne's algorithms, distribution statistics, and errors."""

import numpy as np
import pytest
import torch

import lasagne
from lasagne import init
from lasagne.random import get_rng, set_rng
from lasagne.utils import create_param

SHAPES = [(7, 5), (5, 7), (6, 6), (4, 3, 5), (6, 3, 2, 4), (3, 2, 2, 3, 2)]


@pytest.fixture(autouse=True)
def restore_rng():
    saved = get_rng()
    yield
    set_rng(saved)


@pytest.fixture
def seed(rng):
    """A fresh seed per test; the initializers draw from RandomState(seed)
    and the expected values from a second RandomState(seed)."""
    value = int(rng.integers(0, 2 ** 31 - 1))
    set_rng(np.random.RandomState(value))
    return value


def f32(a):
    return np.asarray(a, dtype=np.float32)


def check_equal(actual, expected):
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == np.float32, actual.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


def fans(shape, c01b=False):
    """(fan_in, fan_out) of a weight, written out from the definitions."""
    if c01b:
        receptive = shape[1] * shape[2]
        return shape[0] * receptive, shape[3] * receptive
    receptive = 1
    for d in shape[2:]:
        receptive *= d
    return shape[0] * receptive, shape[1] * receptive


# ----------------------------------------------------------------- bit-equality

def test_constant(seed):
    state = get_rng().get_state()[1].copy()
    check_equal(init.Constant()((3, 4)), np.zeros((3, 4), np.float32))
    check_equal(init.Constant(2.5)((2, 3, 4)), np.full((2, 3, 4), 2.5, np.float32))
    check_equal(init.Constant(-1)(5), np.full(5, -1, np.float32))
    # draws nothing
    np.testing.assert_array_equal(get_rng().get_state()[1], state)


@pytest.mark.parametrize("shape", [(50,), (4, 6), (3, 4, 5), 17])
def test_normal(seed, shape):
    ref = np.random.RandomState(seed)
    check_equal(init.Normal()(shape), f32(ref.normal(0.0, 0.01, size=shape)))
    check_equal(init.Normal(std=0.5, mean=-2.0)(shape), f32(ref.normal(-2.0, 0.5, size=shape)))
    check_equal(init.Normal(0.3)(shape), f32(ref.normal(0.0, 0.3, size=shape)))


@pytest.mark.parametrize("shape", [(50,), (4, 6), (3, 4, 5)])
def test_uniform(seed, shape):
    ref = np.random.RandomState(seed)
    # default: symmetric range 0.01
    check_equal(init.Uniform()(shape), f32(ref.uniform(-0.01, 0.01, size=shape)))
    # a number: (-r, r); mean is ignored without std
    check_equal(init.Uniform(range=0.3, mean=5.0)(shape), f32(ref.uniform(-0.3, 0.3, size=shape)))
    # a pair: the interval itself
    check_equal(init.Uniform(range=(2.0, 3.5))(shape), f32(ref.uniform(2.0, 3.5, size=shape)))
    # std (and mean) override range: mean -+ sqrt(3) std
    half = np.sqrt(3) * 0.2
    check_equal(init.Uniform(range=(7, 9), std=0.2, mean=1.5)(shape),
                f32(ref.uniform(1.5 - half, 1.5 + half, size=shape)))


def test_uniform_range_attribute():
    assert init.Uniform().range == (-0.01, 0.01)
    assert init.Uniform(range=(1, 4)).range == (1, 4)
    low, high = init.Uniform(std=1.0, mean=2.0).range
    assert low == pytest.approx(2 - np.sqrt(3)) and high == pytest.approx(2 + np.sqrt(3))


GAINS = [(1.0, 1.0), ('relu', np.sqrt(2)), (0.5, 0.5)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain,gain_value", GAINS)
def test_glorot_uniform(seed, shape, gain, gain_value):
    ref = np.random.RandomState(seed)
    fan_in, fan_out = fans(shape)
    std = gain_value * np.sqrt(2.0 / (fan_in + fan_out))
    a = np.sqrt(3) * std
    check_equal(init.GlorotUniform(gain=gain)(shape), f32(ref.uniform(-a, a, size=shape)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain,gain_value", GAINS)
def test_glorot_normal(seed, shape, gain, gain_value):
    ref = np.random.RandomState(seed)
    fan_in, fan_out = fans(shape)
    std = gain_value * np.sqrt(2.0 / (fan_in + fan_out))
    check_equal(init.GlorotNormal(gain=gain)(shape), f32(ref.normal(0.0, std, size=shape)))


@pytest.mark.parametrize("cls,draw", [
    (init.GlorotUniform, lambda r, std, s: r.uniform(-np.sqrt(3) * std, np.sqrt(3) * std, size=s)),
    (init.GlorotNormal, lambda r, std, s: r.normal(0.0, std, size=s)),
])
def test_glorot_c01b(seed, cls, draw):
    shape = (3, 5, 2, 8)  # channels, rows, cols, filters
    ref = np.random.RandomState(seed)
    fan_in, fan_out = fans(shape, c01b=True)
    std = np.sqrt(2) * np.sqrt(2.0 / (fan_in + fan_out))
    check_equal(cls(gain='relu', c01b=True)(shape), f32(draw(ref, std, shape)))


class Recorder(init.Initializer):
    """An initializer taking ``std`` that records it and returns it."""
    stds = []

    def __init__(self, std):
        Recorder.stds.append(std)
        self.std = std

    def sample(self, shape):
        return lasagne.utils.floatX(np.full(shape, self.std))


def test_glorot_and_he_with_custom_initializer():
    Recorder.stds.clear()
    out = init.Glorot(Recorder, gain=3.0)((10, 20, 3))
    assert Recorder.stds[-1] == pytest.approx(3.0 * np.sqrt(2.0 / (30 + 60)), rel=1e-15)
    assert out.shape == (10, 20, 3)
    init.He(Recorder)((10, 20, 3))
    assert Recorder.stds[-1] == pytest.approx(np.sqrt(1.0 / 60), rel=1e-15)
    init.He(Recorder, c01b=True)((2, 3, 4, 5))
    assert Recorder.stds[-1] == pytest.approx(np.sqrt(1.0 / 24), rel=1e-15)


def he_fan_in(shape, c01b=False):
    if c01b:
        return shape[0] * shape[1] * shape[2]
    if len(shape) == 2:
        return shape[0]  # dense weights are (num_inputs, num_units)
    n = 1
    for d in shape[1:]:
        n *= d
    return n


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain,gain_value", GAINS)
def test_he_uniform(seed, shape, gain, gain_value):
    ref = np.random.RandomState(seed)
    std = gain_value * np.sqrt(1.0 / he_fan_in(shape))
    a = np.sqrt(3) * std
    check_equal(init.HeUniform(gain=gain)(shape), f32(ref.uniform(-a, a, size=shape)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain,gain_value", GAINS)
def test_he_normal(seed, shape, gain, gain_value):
    ref = np.random.RandomState(seed)
    std = gain_value * np.sqrt(1.0 / he_fan_in(shape))
    check_equal(init.HeNormal(gain=gain)(shape), f32(ref.normal(0.0, std, size=shape)))


def test_he_c01b(seed):
    shape = (3, 5, 2, 8)
    ref = np.random.RandomState(seed)
    std = np.sqrt(1.0 / he_fan_in(shape, c01b=True))
    check_equal(init.HeNormal(c01b=True)(shape), f32(ref.normal(0.0, std, size=shape)))
    a = np.sqrt(3) * std
    check_equal(init.HeUniform(c01b=True)(shape), f32(ref.uniform(-a, a, size=shape)))


@pytest.mark.parametrize("shape", SHAPES + [(1, 9), (9, 1)])
@pytest.mark.parametrize("gain,gain_value", GAINS)
def test_orthogonal(seed, shape, gain, gain_value):
    ref = np.random.RandomState(seed)
    rows = shape[0]
    cols = int(np.prod(shape[1:]))
    gaussian = ref.normal(0.0, 1.0, (rows, cols))
    u, _, vt = np.linalg.svd(gaussian, full_matrices=False)
    q = u if rows >= cols else vt  # the factor with the matrix's own shape
    expected = f32(gain_value * q.reshape(shape))
    W = init.Orthogonal(gain=gain)(shape)
    check_equal(W, expected)
    # orthonormal rows (wide) or columns (tall), times gain
    M = W.reshape(rows, cols).astype(np.float64) / gain_value
    if rows <= cols:
        np.testing.assert_allclose(M @ M.T, np.eye(rows), atol=1e-5)
    if rows >= cols:
        np.testing.assert_allclose(M.T @ M, np.eye(cols), atol=1e-5)


@pytest.mark.parametrize("shape,sparsity", [((20, 6), 0.1), ((20, 6), 0.25), ((9, 4), 0.5),
                                            ((5, 3), 0.1), ((10, 3), 1.0)])
def test_sparse(seed, shape, sparsity):
    ref = np.random.RandomState(seed)
    n_rows, n_cols = shape
    count = int(sparsity * n_rows)
    expected = np.zeros(shape, np.float32)
    for col in range(n_cols):
        order = np.arange(n_rows)
        ref.shuffle(order)
        expected[order[:count], col] = f32(ref.normal(0.0, 0.05, size=count))
    W = init.Sparse(sparsity=sparsity, std=0.05)(shape)
    check_equal(W, expected)
    # exactly `count` nonzeros per column (a normal draw is never exactly 0)
    assert ((W != 0).sum(axis=0) == count).all()


def test_sparse_defaults(seed):
    W = init.Sparse()((100, 30))
    assert ((W != 0).sum(axis=0) == 10).all()


# ----------------------------------------------------------------- statistics

def test_statistics_large_samples(seed):
    n = 400_000
    W = init.Normal(std=0.2, mean=0.5)((n,)).astype(np.float64)
    assert abs(W.mean() - 0.5) < 5 * 0.2 / np.sqrt(n)
    assert abs(W.std() - 0.2) < 0.005 * 0.2
    W = init.Uniform(range=(1.0, 3.0))((n,)).astype(np.float64)
    assert W.min() >= 1.0 and W.max() < 3.0
    assert abs(W.mean() - 2.0) < 0.01
    assert abs(W.std() - 2.0 / np.sqrt(12)) < 0.005
    W = init.Uniform(std=0.3, mean=-1.0)((n,)).astype(np.float64)
    assert abs(W.mean() + 1.0) < 0.005 and abs(W.std() - 0.3) < 0.003
    shape = (400, 250, 2, 2)
    fan_in, fan_out = 250 * 4, 400 * 4
    for cls in (init.GlorotUniform, init.GlorotNormal):
        W = cls(gain='relu')(shape).astype(np.float64)
        std = np.sqrt(2) * np.sqrt(2.0 / (fan_in + fan_out))
        assert abs(W.mean()) < 0.01 * std
        assert abs(W.std() / std - 1) < 0.01
    for cls in (init.HeUniform, init.HeNormal):
        W = cls(gain='relu')(shape).astype(np.float64)
        std = np.sqrt(2.0 / fan_in)
        assert abs(W.mean()) < 0.01 * std
        assert abs(W.std() / std - 1) < 0.01
    W = init.GlorotUniform()((300, 200)).astype(np.float64)
    bound = np.sqrt(6.0 / 500)
    assert np.abs(W).max() <= bound * (1 + 1e-6)
    assert np.abs(W).max() > 0.99 * bound


# ----------------------------------------------------------------- errors

@pytest.mark.parametrize("make", [init.GlorotUniform, init.GlorotNormal, init.HeUniform,
                                  init.HeNormal, init.Orthogonal,
                                  lambda: init.Glorot(init.Normal),
                                  lambda: init.He(init.Uniform)])
@pytest.mark.parametrize("shape", [(5,), (), 5])
def test_fewer_than_two_dims_raise(make, shape):
    with pytest.raises(RuntimeError):
        make()(shape)


@pytest.mark.parametrize("cls", [init.GlorotUniform, init.GlorotNormal, init.HeUniform,
                                 init.HeNormal])
@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 5), (2, 3, 4, 5, 6)])
def test_c01b_needs_4d(cls, shape):
    with pytest.raises(RuntimeError, match="4D"):
        cls(c01b=True)(shape)


@pytest.mark.parametrize("shape", [(5,), (3, 4, 5), (2, 2, 2, 2)])
def test_sparse_needs_2d(shape):
    with pytest.raises(RuntimeError, match="2D"):
        init.Sparse()(shape)


def test_bad_gain_string():
    for cls in (init.GlorotUniform, init.HeNormal, init.Orthogonal):
        with pytest.raises(ValueError, match="gain"):
            cls(gain='tanh')


def test_base_class_is_abstract():
    with pytest.raises(NotImplementedError):
        init.Initializer()((2, 2))


# ----------------------------------------------------------------- integration

def test_same_seed_same_weights_default_module_rng():
    # the default generator is the numpy.random module itself
    set_rng(np.random)
    np.random.seed(1234)
    first = init.GlorotUniform()((30, 20))
    np.random.seed(1234)
    second = init.GlorotUniform()((30, 20))
    np.testing.assert_array_equal(first, second)
    ref = np.random.RandomState(1234)
    a = np.sqrt(3) * np.sqrt(2.0 / 50)
    np.testing.assert_array_equal(first, f32(ref.uniform(-a, a, size=(30, 20))))


def test_create_param_from_initializer(seed):
    ref = np.random.RandomState(seed)
    p = create_param(init.HeNormal(gain='relu'), (12, 8))
    assert isinstance(p, torch.nn.Parameter)
    expected = f32(ref.normal(0.0, np.sqrt(2) * np.sqrt(1.0 / 12), size=(12, 8)))
    np.testing.assert_array_equal(p.detach().numpy(), expected)


def test_float64_default_dtype(seed, float64):
    ref = np.random.RandomState(seed)
    W = init.Normal(std=1.0)((3, 4))
    assert W.dtype == np.float64
    np.testing.assert_array_equal(W, ref.normal(0.0, 1.0, size=(3, 4)))
    assert init.Orthogonal()((4, 4)).dtype == np.float64
    assert init.Sparse()((10, 2)).dtype == np.float64
