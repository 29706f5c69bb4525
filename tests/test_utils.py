"""lasagne.utils: as_tuple, create_param, floatX, one_hot, unique,
compute_norms."""

import numpy as np
import pytest
import torch

from lasagne import utils
from lasagne.utils import as_tuple, compute_norms, create_param, floatX, one_hot, unique
from lasagne.utils import param_name


# ------------------------------------------------------------ as_tuple

def test_as_tuple():
    assert as_tuple(3, 2) == (3, 3)
    assert as_tuple(None, 3) == (None, None, None)
    assert as_tuple([1, 2], 2) == (1, 2)
    assert as_tuple((4, 5, 6), 3) == (4, 5, 6)
    assert as_tuple(range(2), 2) == (0, 1)
    assert as_tuple(np.int64(2), 2, utils.int_types) == (2, 2)
    assert as_tuple((1, np.int32(2)), 2, utils.int_types) == (1, np.int32(2))


def test_as_tuple_errors():
    with pytest.raises(ValueError, match="length 2"):
        as_tuple((1, 2, 3), 2)
    with pytest.raises(ValueError, match="length 3"):
        as_tuple([], 3)
    with pytest.raises(TypeError, match="int"):
        as_tuple(1.5, 2, int)
    with pytest.raises(TypeError, match="int"):
        as_tuple((1, 2.0), 2, utils.int_types)
    with pytest.raises(TypeError, match="int or float"):
        as_tuple("ab", 2, (int, float))


# ------------------------------------------------------------ floatX

def test_floatX(float64):
    a = np.arange(4, dtype=np.int32)
    assert floatX(a).dtype == np.float64
    assert floatX([1, 2]).dtype == np.float64
    b = np.ones(3)
    assert floatX(b) is b  # already the right dtype: not copied


def test_floatX_follows_torch_default():
    assert torch.get_default_dtype() == torch.float32
    assert floatX(np.ones(2)).dtype == np.float32
    assert floatX(1.5).dtype == np.float32 and floatX(1.5).shape == ()


# ------------------------------------------------------------ create_param

def test_create_param_numpy_copied(rng):
    a = rng.normal(size=(3, 4))
    p = create_param(a, (3, 4))
    assert isinstance(p, torch.nn.Parameter) and p.requires_grad
    assert p.dtype == torch.float32
    np.testing.assert_array_equal(p.detach().numpy(), a.astype(np.float32))
    a[0, 0] = 100.0  # the parameter does not alias the array
    assert p[0, 0].item() != 100.0


def test_create_param_numpy_float64_not_aliased(rng, float64):
    a = rng.normal(size=(2, 5))
    p = create_param(a, [2, 5])  # any iterable shape
    assert p.dtype == torch.float64
    np.testing.assert_array_equal(p.detach().numpy(), a)
    with torch.no_grad():
        p.zero_()
    assert np.abs(a).sum() > 0


def test_create_param_shares_parameter():
    shared = torch.nn.Parameter(torch.randn(2, 3))
    assert create_param(shared, (2, 3)) is shared
    assert create_param(shared, (2, 3), name="W") is shared


def test_create_param_leaf_tensor():
    x = torch.randn(4)
    p = create_param(x, (4,))
    assert isinstance(p, torch.nn.Parameter) and p.requires_grad
    assert p.data_ptr() == x.data_ptr()  # wraps the same memory
    i = torch.arange(3)
    q = create_param(i, (3,))
    assert not q.requires_grad  # integer tensors cannot require grad


def test_create_param_non_leaf_tensor_raises():
    base = torch.randn(3, requires_grad=True)
    with pytest.raises(TypeError, match="'W'"):
        create_param(base * 2, (3,), name="W")


def test_create_param_callable(rng):
    values = rng.normal(size=(2, 3))
    calls = []

    def initializer(shape):
        calls.append(shape)
        return values

    p = create_param(initializer, (2, 3))
    assert calls == [(2, 3)]
    np.testing.assert_array_equal(p.detach().numpy(), values.astype(np.float32))
    p = create_param(lambda shape: torch.ones(shape, dtype=torch.float64), (2, 2))
    assert p.dtype == torch.float32 and p.is_leaf
    np.testing.assert_array_equal(p.detach().numpy(), np.ones((2, 2)))


def test_create_param_callable_errors():
    with pytest.raises(RuntimeError, match="'W'.*shape"):
        create_param(lambda shape: np.zeros((3, 3)), (2, 3), name="W")
    with pytest.raises(RuntimeError, match="'b'"):
        create_param(lambda shape: object(), (2,), name="b")


@pytest.mark.parametrize("spec", [np.zeros((3, 4)), torch.zeros(3, 4),
                                  torch.nn.Parameter(torch.zeros(3, 4))])
def test_create_param_wrong_shape(spec):
    with pytest.raises(ValueError, match="'W'.*shape"):
        create_param(spec, (4, 3), name="W")


@pytest.mark.parametrize("spec", [np.zeros(3), torch.zeros(3),
                                  torch.nn.Parameter(torch.zeros(3))])
def test_create_param_wrong_ndim(spec):
    with pytest.raises(ValueError, match="'gamma'.*dimensions"):
        create_param(spec, (3, 1), name="gamma")


@pytest.mark.parametrize("spec", [1.0, "glorot", [1, 2, 3], None])
def test_create_param_wrong_spec(spec):
    with pytest.raises(ValueError, match="'W'"):
        create_param(spec, (3,), name="W")


@pytest.mark.parametrize("shape", [(0, 3), (3, -1), (None, 3)])
def test_create_param_bad_shape(shape):
    with pytest.raises(ValueError, match="'W'"):
        create_param(np.zeros((1, 3)), shape, name="W")


def test_create_param_sets_name():
    p = create_param(np.zeros(2), (2,), name="layer.W")
    assert param_name(p) == "layer.W"
    assert type(p) is torch.nn.Parameter  # a plain parameter: torch.compile traces it
    shared = torch.nn.Parameter(torch.zeros(2))
    assert create_param(shared, (2,), name="other.W") is shared


# ------------------------------------------------------------ one_hot

def test_one_hot(rng):
    x = rng.integers(0, 5, size=12)
    out = one_hot(torch.tensor(x))
    expected = np.eye(x.max() + 1)[x]
    assert out.dtype == torch.get_default_dtype()
    np.testing.assert_array_equal(out.numpy(), expected)
    out = one_hot(torch.tensor(x), 7)
    np.testing.assert_array_equal(out.numpy(), np.eye(7)[x])
    np.testing.assert_array_equal(one_hot(x, 6).numpy(), np.eye(6)[x])  # numpy input


# ------------------------------------------------------------ unique

def test_unique():
    assert unique([3, 1, 3, 2, 1]) == [3, 1, 2]
    assert unique([]) == []
    a, b = torch.zeros(2), torch.zeros(2)  # equal values, distinct objects
    out = unique([a, b, a, b])
    assert len(out) == 2 and out[0] is a and out[1] is b
    p = torch.nn.Parameter(torch.ones(3))
    assert unique([p, p, p]) == [p]


# ------------------------------------------------------------ compute_norms

def np_norms(a, axes):
    return np.sqrt((a.astype(np.float64) ** 2).sum(axis=axes))


@pytest.mark.parametrize("shape,axes", [((6, 4), (0,)), ((5, 3, 4), (1, 2)),
                                        ((4, 3, 2, 2), (1, 2, 3)),
                                        ((3, 2, 2, 2, 2), (1, 2, 3, 4))])
def test_compute_norms_default_axes(rng, shape, axes):
    a = rng.normal(size=shape)
    out = compute_norms(a)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, np_norms(a, axes), rtol=1e-13)
    out_t = compute_norms(torch.tensor(a))
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), np_norms(a, axes), rtol=1e-13)


def test_compute_norms_explicit_axes(rng):
    a = rng.normal(size=(4, 5, 6))
    np.testing.assert_allclose(compute_norms(a, norm_axes=(0, 2)), np_norms(a, (0, 2)),
                               rtol=1e-13)
    np.testing.assert_allclose(compute_norms(a, norm_axes=[1]), np_norms(a, (1,)), rtol=1e-13)
    b = rng.normal(size=(2, 2, 2, 2, 2, 2))
    np.testing.assert_allclose(compute_norms(b, norm_axes=(0,)), np_norms(b, (0,)), rtol=1e-13)


def test_compute_norms_unsupported_ndim(rng):
    with pytest.raises(ValueError, match="norm_axes"):
        compute_norms(rng.normal(size=(2,) * 6))


def test_compute_norms_1d_as_original(rng):
    # the original treats a 1D array (a bias) as one vector per element
    a = rng.normal(size=5)
    np.testing.assert_allclose(compute_norms(a), np.abs(a), rtol=1e-13)
    np.testing.assert_allclose(compute_norms(torch.tensor(a)).numpy(), np.abs(a), rtol=1e-13)
