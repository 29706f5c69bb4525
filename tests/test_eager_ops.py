"""The eager autograd functions of the kernel ops (lasagne.ops.eager) against
the registered torch.library ops: same values, same gradients, no double
backward. On the CPU both run the ops' reference implementations, so these
checks need no GPU; the GPU tests exercise the kernels through both paths."""

import numpy as np
import pytest
import torch

from lasagne.ops import batchnorm as bn_ops
from lasagne.ops import pool_cuda, spp_cuda


def _values_and_grad(fn, x, gy):
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    (gx,) = torch.autograd.grad(y, x, gy)
    return y.detach(), gx


@pytest.mark.parametrize("mode", ["max", "average_inc_pad", "average_exc_pad"])
def test_pool_eager_function_equals_op(rng, mode):
    x = torch.from_numpy(rng.standard_normal((2, 3, 7, 6)))
    args = ((3, 2), (2, 1), (1, 1), mode, True)
    eager = pool_cuda.pool(x.requires_grad_(), *args)
    assert type(eager.grad_fn).__name__ == "PoolKernelFunctionBackward"
    gy = torch.from_numpy(rng.standard_normal(tuple(eager.shape)))
    lists = [list(a) for a in args[:3]] + list(args[3:])
    y0, g0 = _values_and_grad(lambda t: torch.ops.lasagne.pool(t, *lists), x, gy)
    y1, g1 = _values_and_grad(lambda t: pool_cuda.pool(t, *args), x, gy)
    assert torch.equal(y0, y1) and torch.equal(g0, g1)
    # reference: numerical gradient of the same function
    xr = x.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: pool_cuda.pool(t, *args), (xr,))


@pytest.mark.parametrize("mode", ["max", "average_exc_pad"])
def test_spp_eager_function_equals_op(rng, mode):
    x = torch.from_numpy(rng.standard_normal((2, 3, 7, 9)))
    y = spp_cuda.spatial_pyramid_pool(x.requires_grad_(), [3, 2, 1], mode, "kaiming")
    assert type(y.grad_fn).__name__ == "SppKernelFunctionBackward"
    gy = torch.from_numpy(rng.standard_normal(tuple(y.shape)))
    y0, g0 = _values_and_grad(lambda t: torch.ops.lasagne.spp(t, [3, 2, 1], mode, "kaiming"),
                              x, gy)
    y1, g1 = _values_and_grad(
        lambda t: spp_cuda.spatial_pyramid_pool(t, [3, 2, 1], mode, "kaiming"), x, gy)
    assert torch.equal(y0, y1) and torch.equal(g0, g1)


def test_kernel_functions_refuse_double_backward(rng):
    x = torch.from_numpy(rng.standard_normal((1, 2, 5, 5))).requires_grad_()
    for y in (pool_cuda.pool(x, (2, 2), (1, 1), (0, 0), "max"),
              spp_cuda.spatial_pyramid_pool(x, [2, 1], "max", "fast")):
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable|twice"):
            gx.sum().backward()


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_params", [False, True])
def test_batch_norm_act_eager_function_equals_op(rng, relu, with_params):
    A, K, B = 4, 3, 5
    x = torch.from_numpy(rng.standard_normal((A, K, B)))
    g = torch.from_numpy(rng.uniform(0.5, 2, K)).requires_grad_() if with_params else None
    b = torch.from_numpy(rng.standard_normal(K)).requires_grad_() if with_params else None
    gy = torch.from_numpy(rng.standard_normal((A, K, B)))
    results = []
    for fn in (torch.ops.lasagne.batch_norm_act, bn_ops._batch_norm_act):
        xr = x.clone().requires_grad_()
        y, mean, inv_std = fn(xr, g, b, 1e-4, relu)
        if fn is bn_ops._batch_norm_act:  # the statistics carry no gradient
            assert not mean.requires_grad and not inv_std.requires_grad
        mean, inv_std = mean.detach(), inv_std.detach()
        inputs = [xr] + ([g, b] if with_params else [])
        grads = torch.autograd.grad(y, inputs, gy)
        results.append([y.detach(), mean, inv_std] + list(grads))
    for a, c in zip(*results):
        assert torch.equal(a, c)
    # against a float64 reference written here (batch statistics over A and B)
    mu = x.mean((0, 2), keepdim=True)
    ref = (x - mu) / torch.sqrt(x.var((0, 2), unbiased=False, keepdim=True) + 1e-4)
    if with_params:
        ref = ref * g.detach()[:, None] + b.detach()[:, None]
    if relu:
        ref = ref.clamp(min=0)
    np.testing.assert_allclose(results[1][0].numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)
