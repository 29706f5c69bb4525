"""Objectives against float64 numpy references on fresh random data."""

import warnings

import numpy as np
import pytest
import torch

from lasagne import objectives as obj


def t(a, grad=False):
    a = np.asarray(a)
    return torch.tensor(a, dtype=torch.float64 if a.dtype.kind == 'f' else None,
                        requires_grad=grad)


def probs(rng, n, k):
    x = rng.normal(size=(n, k))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def close(actual, expected, **kw):
    np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=1e-12, atol=1e-12, **kw)


def assert_grad_flows(out, x):
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


# ------------------------------------------------------------ binary_crossentropy

@pytest.mark.parametrize("shape", [(10,), (6, 4), (3, 2, 5)])
def test_binary_crossentropy(rng, shape):
    p = rng.uniform(0.01, 0.99, size=shape)
    y = rng.uniform(0, 1, size=shape)
    y.flat[0], y.flat[-1] = 0.0, 1.0
    pt = t(p, grad=True)
    out = obj.binary_crossentropy(pt, t(y))
    close(out, -y * np.log(p) - (1 - y) * np.log(1 - p))
    assert_grad_flows(out, pt)


def test_binary_crossentropy_column_and_vector(rng):
    p = rng.uniform(0.01, 0.99, size=(7, 1))
    y = rng.integers(0, 2, size=7).astype(np.float64)
    out = obj.binary_crossentropy(t(p), t(y))
    assert out.shape == (7, 1)  # paired element by element, not (7, 7)
    close(out, -y[:, None] * np.log(p) - (1 - y[:, None]) * np.log(1 - p))


def test_binary_crossentropy_no_clipping():
    out = obj.binary_crossentropy(t([0.0, 1.0]), t([1.0, 0.0]))
    assert torch.isinf(out).all()


# ------------------------------------------------------------ categorical_crossentropy

@pytest.mark.parametrize("n,k", [(8, 5), (1, 3), (5, 1)])
def test_categorical_crossentropy_int_targets(rng, n, k):
    p = probs(rng, n, k)
    y = rng.integers(0, k, size=n)
    pt = t(p, grad=True)
    out = obj.categorical_crossentropy(pt, t(y))
    assert out.shape == (n,)
    close(out, -np.log(p[np.arange(n), y]))
    assert_grad_flows(out, pt)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8])
def test_categorical_crossentropy_int_dtypes(rng, dtype):
    p = probs(rng, 6, 4)
    y = rng.integers(0, 4, size=6).astype(dtype)
    close(obj.categorical_crossentropy(t(p), torch.as_tensor(y)), -np.log(p[np.arange(6), y]))


def test_categorical_crossentropy_matrix_targets(rng):
    p = probs(rng, 9, 4)
    y = probs(rng, 9, 4)  # soft targets
    pt = t(p, grad=True)
    out = obj.categorical_crossentropy(pt, t(y))
    close(out, -(y * np.log(p)).sum(axis=1))
    assert_grad_flows(out, pt)
    # one-hot matrix equals the index form
    idx = rng.integers(0, 4, size=9)
    onehot = np.eye(4)[idx]
    close(obj.categorical_crossentropy(t(p), t(onehot)), -np.log(p[np.arange(9), idx]))


def test_categorical_crossentropy_errors(rng):
    p = t(probs(rng, 4, 3))
    with pytest.raises(TypeError, match="rank mismatch"):
        obj.categorical_crossentropy(p, t(np.zeros((4, 3, 2))))
    with pytest.raises(TypeError, match="rank mismatch"):
        obj.categorical_crossentropy(p, torch.tensor(1))
    with pytest.raises(TypeError, match="integer"):
        obj.categorical_crossentropy(p, t(np.array([0.0, 1.0, 2.0, 0.0])))


def test_numpy_inputs_accepted(rng):
    p = probs(rng, 5, 3)
    y = rng.integers(0, 3, size=5)
    out = obj.categorical_crossentropy(p, y)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), -np.log(p[np.arange(5), y]), rtol=1e-6)


# ------------------------------------------------------------ squared_error

@pytest.mark.parametrize("shape", [(10,), (4, 3), (2, 3, 4)])
def test_squared_error(rng, shape):
    a, b = rng.normal(size=shape), rng.normal(size=shape)
    at = t(a, grad=True)
    out = obj.squared_error(at, t(b))
    close(out, (a - b) ** 2)
    assert_grad_flows(out, at)


def test_squared_error_column_and_vector(rng):
    a, b = rng.normal(size=(6, 1)), rng.normal(size=6)
    out = obj.squared_error(t(a), t(b))
    assert out.shape == (6, 1)
    close(out, (a - b[:, None]) ** 2)
    # a genuine (n, k) vs (k,) broadcast is left alone
    a = rng.normal(size=(6, 3))
    b = rng.normal(size=3)
    close(obj.squared_error(t(a), t(b)), (a - b) ** 2)


# ------------------------------------------------------------ aggregate

@pytest.mark.parametrize("shape,wshape", [((10,), (10,)), ((4, 5), (4, 5)), ((4, 5), (4, 1)),
                                          ((4, 5), (5,)), ((4, 5), ())])
def test_aggregate(rng, shape, wshape):
    loss = rng.uniform(0, 3, size=shape)
    w = rng.uniform(0, 1, size=wshape)
    lt = t(loss, grad=True)
    close(obj.aggregate(lt), loss.mean())
    close(obj.aggregate(lt, mode='sum'), loss.sum())
    close(obj.aggregate(lt, t(w)), (loss * w).mean())
    close(obj.aggregate(lt, t(w), mode='sum'), (loss * w).sum())
    out = obj.aggregate(lt, t(w), mode='normalized_sum')
    # the divisor is the sum of the weights as given (not broadcast)
    close(out, (loss * w).sum() / w.sum())
    assert out.ndim == 0
    assert_grad_flows(out, lt)


def test_aggregate_mask(rng):
    loss = rng.uniform(size=8)
    mask = np.array([1, 0, 1, 1, 0, 0, 1, 1], dtype=np.float64)
    close(obj.aggregate(t(loss), t(mask), mode='normalized_sum'), loss[mask == 1].mean())


def test_aggregate_accuracy_values():
    acc = torch.tensor([True, False, True, True])
    assert float(obj.aggregate(acc)) == 0.75
    assert float(obj.aggregate(torch.tensor([1, 0, 0, 0]), mode='sum')) == 1.0


def test_aggregate_errors(rng):
    loss = t(rng.uniform(size=(4, 5)))
    with pytest.raises(ValueError, match="mode"):
        obj.aggregate(loss, mode='median')
    with pytest.raises(ValueError, match="weights"):
        obj.aggregate(loss, mode='normalized_sum')
    with pytest.raises(ValueError, match="weights"):
        obj.aggregate(loss, t(np.ones((4, 3))))
    with pytest.raises(ValueError, match="weights"):
        obj.aggregate(loss, t(np.ones((2, 4, 5))))  # would enlarge the loss


# ------------------------------------------------------------ binary_hinge_loss

def np_hinge(scores, signs, delta):
    return np.maximum(0.0, delta - scores * signs)


@pytest.mark.parametrize("delta", [1, 0.5, 2.0])
def test_binary_hinge_loss_log_odds(rng, delta):
    s = rng.normal(0, 2, size=(5, 4))
    y = rng.integers(0, 2, size=(5, 4))
    st = t(s, grad=True)
    out = obj.binary_hinge_loss(st, t(y), delta=delta, log_odds=True)
    close(out, np_hinge(s, 2 * y - 1, delta))
    assert_grad_flows(out, st)
    signs = 2 * y - 1
    close(obj.binary_hinge_loss(t(s), t(signs), delta=delta, log_odds=True, binary=False),
          np_hinge(s, signs, delta))


def test_binary_hinge_loss_probabilities(rng):
    p = rng.uniform(0.02, 0.98, size=12)
    y = rng.integers(0, 2, size=12).astype(np.float64)
    pt = t(p, grad=True)
    out = obj.binary_hinge_loss(pt, t(y), log_odds=False)
    close(out, np_hinge(np.log(p / (1 - p)), 2 * y - 1, 1))
    assert_grad_flows(out, pt)


def test_binary_hinge_loss_default_warns_and_uses_log_odds(rng):
    s = rng.normal(size=6)
    y = rng.integers(0, 2, size=6)
    with pytest.warns(FutureWarning, match="log_odds"):
        out = obj.binary_hinge_loss(t(s), t(y))
    close(out, np_hinge(s, 2 * y - 1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obj.binary_hinge_loss(t(s), t(y), log_odds=True)


def test_binary_hinge_loss_column_and_vector(rng):
    s = rng.normal(size=(5, 1))
    y = rng.integers(0, 2, size=5)
    out = obj.binary_hinge_loss(t(s), t(y), log_odds=True)
    assert out.shape == (5, 1)
    close(out, np_hinge(s, (2 * y - 1)[:, None], 1))


# ------------------------------------------------------------ multiclass_hinge_loss

def np_multiclass_hinge(p, y, delta):
    n = p.shape[0]
    correct = p[np.arange(n), y]
    others = p.copy()
    others[np.arange(n), y] = -np.inf
    return np.maximum(0.0, others.max(axis=1) - correct + delta)


@pytest.mark.parametrize("n,k", [(8, 5), (1, 2), (6, 3)])
@pytest.mark.parametrize("delta", [1, 0.3])
def test_multiclass_hinge_loss(rng, n, k, delta):
    p = rng.normal(size=(n, k))
    y = rng.integers(0, k, size=n)
    pt = t(p, grad=True)
    out = obj.multiclass_hinge_loss(pt, t(y), delta=delta)
    assert out.shape == (n,)
    close(out, np_multiclass_hinge(p, y, delta))
    close(obj.multiclass_hinge_loss(t(p), t(np.eye(k)[y]), delta=delta),
          np_multiclass_hinge(p, y, delta))
    assert_grad_flows(obj.multiclass_hinge_loss(pt, t(y), delta=10.0), pt)


def test_multiclass_hinge_loss_errors(rng):
    p = t(rng.normal(size=(4, 3)))
    with pytest.raises(TypeError, match="rank mismatch"):
        obj.multiclass_hinge_loss(p, t(np.zeros((4, 3, 1))))
    with pytest.raises(TypeError, match="integer"):
        obj.multiclass_hinge_loss(p, t(np.zeros(4)))
    with pytest.raises(ValueError, match="2 classes"):
        obj.multiclass_hinge_loss(t(rng.normal(size=(4, 1))), torch.zeros(4, dtype=torch.long))


# ------------------------------------------------------------ accuracies

@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_binary_accuracy(rng, threshold):
    p = rng.uniform(size=(6, 3))
    p[0, 0] = threshold  # at the threshold counts as positive
    y = rng.integers(0, 2, size=(6, 3))
    y[0, 0] = 1
    out = obj.binary_accuracy(t(p), t(y), threshold=threshold)
    expected = ((p >= threshold).astype(int) == y).astype(np.float64)
    assert out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), expected)
    # float targets work the same
    np.testing.assert_array_equal(
        obj.binary_accuracy(t(p), t(y.astype(np.float64)), threshold).numpy(), expected)
    assert float(obj.aggregate(out)) == pytest.approx(expected.mean())


def test_binary_accuracy_column_and_vector(rng):
    p = rng.uniform(size=(5, 1))
    y = rng.integers(0, 2, size=5)
    out = obj.binary_accuracy(t(p), t(y))
    assert out.shape == (5, 1)
    np.testing.assert_array_equal(out.numpy()[:, 0], ((p[:, 0] >= 0.5) == y).astype(float))


def np_topk_accuracy(p, y, k):
    ranked = np.argsort(-p, axis=1, kind='stable')[:, :k]
    return (ranked == y[:, None]).any(axis=1).astype(np.float64)


@pytest.mark.parametrize("top_k", [1, 2, 3, 7])
def test_categorical_accuracy(rng, top_k):
    n, k = 20, 5
    p = rng.normal(size=(n, k))  # continuous: no ties
    y = rng.integers(0, k, size=n)
    expected = np_topk_accuracy(p, y, top_k)
    out = obj.categorical_accuracy(t(p), t(y), top_k=top_k)
    assert out.shape == (n,) and out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), expected)
    # one-hot targets give the same
    np.testing.assert_array_equal(
        obj.categorical_accuracy(t(p), t(np.eye(k)[y]), top_k=top_k).numpy(), expected)
    if top_k == 1:
        np.testing.assert_array_equal(expected, (p.argmax(axis=1) == y).astype(float))


def test_categorical_accuracy_ties_first_max():
    p = torch.tensor([[0.4, 0.4, 0.2]])
    assert obj.categorical_accuracy(p, torch.tensor([0])).item() == 1.0
    assert obj.categorical_accuracy(p, torch.tensor([1])).item() == 0.0


def test_categorical_accuracy_errors(rng):
    p = t(rng.normal(size=(4, 3)))
    with pytest.raises(TypeError, match="rank mismatch"):
        obj.categorical_accuracy(p, t(np.zeros((4, 3, 2))))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            obj.categorical_accuracy(p, torch.zeros(4, dtype=torch.long), top_k=bad)
    out = obj.categorical_accuracy(p, torch.zeros(4, dtype=torch.long), top_k=np.int64(2))
    assert out.shape == (4,)


def test_float32_end_to_end(rng):
    scores = torch.tensor(rng.normal(size=(16, 4)), dtype=torch.float32, requires_grad=True)
    y = torch.tensor(rng.integers(0, 4, size=16))
    loss = obj.aggregate(obj.categorical_crossentropy(torch.softmax(scores, 1), y))
    assert loss.dtype == torch.float32
    loss.backward()
    ref = -np.log(np.exp(scores.detach().numpy().astype(np.float64))
                  / np.exp(scores.detach().numpy().astype(np.float64)).sum(1, keepdims=True))
    np.testing.assert_allclose(loss.item(), ref[np.arange(16), y.numpy()].mean(), rtol=1e-5)
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
