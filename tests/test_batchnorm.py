"""Batch normalization on CPU: BatchNormLayer, BatchNormDNNLayer, batch_norm,
batch_norm_dnn and the ops behind them, against a float64 numpy reference."""

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from lasagne import nonlinearities
from lasagne.layers import (BatchNormLayer, DenseLayer, InputLayer, NonlinearityLayer,
                            batch_norm, get_all_params, get_output)
from lasagne.layers.dnn import BatchNormDNNLayer, batch_norm_dnn
from lasagne.ops import batchnorm as bn_ops

from harness import check_layer, check_params, check_raises
from lasagne.utils import param_name

LAYERS = [BatchNormLayer, BatchNormDNNLayer]


# -- the numpy reference ---------------------------------------------------------------------------

def _resolve(axes, ndim):
    if axes == 'auto':
        return (0,) + tuple(range(2, ndim))
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    return tuple(sorted(a % ndim for a in axes))


def _expand(p, axes, ndim):
    """A parameter of the kept axes' shape, broadcastable against the input."""
    return np.expand_dims(np.asarray(p, dtype=np.float64), axes)


def ref_stats(x, axes, eps):
    """Batch mean and inverse standard deviation (biased variance)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=axes)
    var = ((x - np.expand_dims(mean, axes)) ** 2).mean(axis=axes)
    return mean, 1.0 / np.sqrt(var + eps)


def ref_normalize(x, axes, mean, inv_std, gamma=None, beta=None):
    x = np.asarray(x, dtype=np.float64)
    nd = x.ndim
    g = 1.0 if gamma is None else _expand(gamma, axes, nd)
    b = 0.0 if beta is None else _expand(beta, axes, nd)
    return (x - _expand(mean, axes, nd)) * (g * _expand(inv_std, axes, nd)) + b


def _np(t):
    return t.detach().cpu().double().numpy()


def _random_params(rng, shape):
    return dict(beta=rng.normal(size=shape), gamma=rng.uniform(0.5, 2.0, size=shape),
                mean=rng.normal(size=shape), inv_std=rng.uniform(0.5, 2.0, size=shape))


# shapes and axes, for the core layer and the dnn layer
CASES = [
    ((6, 5), 'auto'),
    ((4, 3, 5, 6), 'auto'),
    ((4, 3, 5, 6), 0),
    ((3, 2, 3, 4, 5), 'auto'),
    ((3, 2, 3, 4, 5), (0,)),
    ((5, 1), 'auto'),           # single feature
    ((4, 1, 3, 3), 'auto'),     # single channel
    ((4, 3, 5, 6), (0, 2, 3)),  # 'auto' spelled out
]


# -- every switch combination, outputs and moving averages ----------------------------------------------

@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("shape,axes,channels_last",
                         [c + (False,) for c in CASES] + [c + (True,) for c in CASES
                                                          if len(c[0]) == 4])
def test_switches_outputs_and_averages(float64, rng, cls, shape, axes, channels_last):
    nd = len(shape)
    raxes = _resolve(axes, nd)
    pshape = tuple(s for d, s in enumerate(shape) if d not in raxes)
    alpha, eps = 0.3, 1e-3
    for deterministic, use, update in itertools.product(
            [False, True], [None, False, True], [None, False, True]):
        init = _random_params(rng, pshape)
        layer = cls(InputLayer((None,) + shape[1:]), axes=axes, epsilon=eps, alpha=alpha,
                    **init)
        mean, inv_std = init['mean'].copy(), init['inv_std'].copy()
        use_avg = deterministic if use is None else use
        upd = (not deterministic) if update is None else update
        for _ in range(3):
            x = rng.normal(loc=1.5, scale=2.0, size=shape)
            xt = torch.tensor(x)
            if channels_last:
                xt = xt.contiguous(memory_format=torch.channels_last)
            out = layer.get_output_for(xt, deterministic=deterministic,
                                       batch_norm_use_averages=use,
                                       batch_norm_update_averages=update)
            bm, bi = ref_stats(x, raxes, eps)
            if use_avg:
                expected = ref_normalize(x, raxes, mean, inv_std, init['gamma'], init['beta'])
            else:
                expected = ref_normalize(x, raxes, bm, bi, init['gamma'], init['beta'])
            if upd:
                mean = (1 - alpha) * mean + alpha * bm
                inv_std = (1 - alpha) * inv_std + alpha * bi
            assert out.shape == xt.shape and out.dtype == torch.float64
            np.testing.assert_allclose(_np(out), expected, rtol=1e-9, atol=1e-9,
                                       err_msg=str((deterministic, use, update)))
            np.testing.assert_allclose(_np(layer.mean), mean, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(_np(layer.inv_std), inv_std, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("shape,axes", [((6, 4), 'auto'), ((3, 2, 4, 5), 'auto'),
                                        ((3, 2, 4, 5), 0), ((2, 2, 2, 3, 3), 'auto')])
@pytest.mark.parametrize("no_beta,no_gamma", [(True, False), (False, True), (True, True)])
def test_beta_gamma_none(float64, rng, cls, shape, axes, no_beta, no_gamma):
    nd = len(shape)
    raxes = _resolve(axes, nd)
    kwargs = {}
    if no_beta:
        kwargs['beta'] = None
    if no_gamma:
        kwargs['gamma'] = None
    layer = cls(InputLayer(shape), axes=axes, **kwargs)
    assert (layer.beta is None) == no_beta and (layer.gamma is None) == no_gamma
    names = [n for n, off in (('beta', no_beta), ('gamma', no_gamma)) if not off]
    assert [param_name(p) for p in layer.get_params()] == names + ['mean', 'inv_std'] or \
        layer.name is None
    assert len(layer.get_params(trainable=True)) == len(names)
    if layer.gamma is not None:
        with torch.no_grad():
            layer.gamma.uniform_(0.5, 2)
    if layer.beta is not None:
        with torch.no_grad():
            layer.beta.normal_()
    g = None if no_gamma else _np(layer.gamma)
    b = None if no_beta else _np(layer.beta)
    x = rng.normal(size=shape)
    bm, bi = ref_stats(x, raxes, 1e-4)
    check_layer(layer, x, lambda v: ref_normalize(v, raxes, bm, bi, g, b), atol=1e-9,
                rtol=1e-9, batch_norm_update_averages=False)
    # with the (initial) averages: mean 0, inv_std 1
    out = layer.get_output_for(torch.tensor(x), deterministic=True)
    zeros = np.zeros(bm.shape)
    np.testing.assert_allclose(_np(out), ref_normalize(x, raxes, zeros, zeros + 1, g, b),
                               atol=1e-12)


@pytest.mark.parametrize("shape,axes", [
    ((4, 3, 5), (1,)), ((4, 3, 5, 2), (2, 3)), ((4, 3, 5, 2), (-1,)), ((4, 3, 5, 2), (0, 1)),
    ((4, 3, 5, 2), (0, 1, 2, 3)), ((6,), 'auto'), ((6,), 0), ((3, 4, 5), (0, 2)),
    ((3, 4, 5), 2), ((2, 3, 4, 5, 2), (1, 3)),
])
def test_core_layer_any_axes(float64, rng, shape, axes):
    raxes = _resolve(axes, len(shape))
    pshape = tuple(s for d, s in enumerate(shape) if d not in raxes)
    init = _random_params(rng, pshape)
    layer = BatchNormLayer(InputLayer(shape), axes=axes, alpha=0.2, **init)
    assert layer.axes == raxes
    assert tuple(layer.gamma.shape) == pshape
    x = rng.normal(size=shape)
    bm, bi = ref_stats(x, raxes, 1e-4)
    check_layer(layer, x, lambda v: ref_normalize(v, raxes, bm, bi, init['gamma'],
                                                  init['beta']), atol=1e-9, rtol=1e-9)
    np.testing.assert_allclose(_np(layer.mean), 0.8 * init['mean'] + 0.2 * bm, atol=1e-12)
    np.testing.assert_allclose(_np(layer.inv_std), 0.8 * init['inv_std'] + 0.2 * bi,
                               atol=1e-12)
    out = layer.get_output_for(torch.tensor(x), deterministic=True)
    np.testing.assert_allclose(_np(out), ref_normalize(x, raxes, _np(layer.mean),
                                                       _np(layer.inv_std), init['gamma'],
                                                       init['beta']), atol=1e-10)


def test_permuted_input_layouts(float64, rng):
    """Kept axes not adjacent in memory, transposed and sliced inputs."""
    x = rng.normal(size=(5, 4, 3, 6))
    base = torch.tensor(x)
    layouts = [base.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3),
               base.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0),
               torch.tensor(np.concatenate([x, x], axis=3))[..., ::2]]
    for axes in [(0,), (1,), (0, 2), (1, 3), 'auto']:
        raxes = _resolve(axes, 4)
        bm, bi = ref_stats(x, raxes, 1e-4)
        for xt in layouts[:2]:
            y, m, s = bn_ops.batch_norm_train(xt, axes=axes)
            np.testing.assert_allclose(_np(y), ref_normalize(x, raxes, bm, bi), atol=1e-9)
            np.testing.assert_allclose(_np(m), bm, atol=1e-12)
            np.testing.assert_allclose(_np(s), bi, rtol=1e-10)
    xs = layouts[2]
    xe = x[..., ::1]
    y, m, s = bn_ops.batch_norm_train(xs, axes=(0,))
    bm, bi = ref_stats(np.concatenate([x, x], axis=3)[..., ::2], (0,), 1e-4)
    assert y.shape == xs.shape and xe.shape == y.shape
    np.testing.assert_allclose(_np(m), bm, atol=1e-12)


# -- the ops -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axes", [((4, 3), 'auto'), ((3, 2, 3, 2), 'auto'),
                                        ((3, 2, 3, 2), 0), ((2, 2, 2, 2, 3), 'auto'),
                                        ((3, 2, 4), (0, 2)), ((3, 2, 4), (1,))])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_train(shape, axes, affine):
    gen = torch.Generator().manual_seed(hash((shape, str(axes), affine)) % 2 ** 31)
    x = torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)
    pshape = bn_ops.param_shape(shape, bn_ops.normalize_axes(axes, len(shape)))
    g = torch.rand(pshape, dtype=torch.float64, generator=gen).add_(0.5).requires_grad_()
    b = torch.randn(pshape, dtype=torch.float64, generator=gen).requires_grad_()
    args = (x, g, b) if affine else (x,)

    def f(x, g=None, b=None):
        return bn_ops.batch_norm_train(x, g, b, axes, 1e-3)[0]
    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("layout", [(4, 3, 5), (7, 4, 1), (5, 1, 3)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_fused_op_reference(layout, relu, affine):
    """The lasagne::batch_norm_act custom op (CPU reference) and its
    registered backward, through gradients of the batch statistics."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(layout, dtype=torch.float64, generator=gen, requires_grad=True)
    K = layout[1]
    g = (torch.rand(K, dtype=torch.float64, generator=gen) + 0.5).requires_grad_()
    b = torch.randn(K, dtype=torch.float64, generator=gen).mul_(0.3).requires_grad_()

    def f(x, g=None, b=None):
        return torch.ops.lasagne.batch_norm_act(x, g, b, 1e-3, relu)[0]
    assert torch.autograd.gradcheck(f, (x, g, b) if affine else (x,))


def test_fused_op_matches_native(rng):
    x = torch.tensor(rng.normal(size=(4, 3, 5, 6)))
    g = torch.tensor(rng.uniform(0.5, 2, size=3))
    b = torch.tensor(rng.normal(size=3))
    for axes in ['auto', 0]:
        for act in [None, 'relu']:
            y1, m1, s1 = bn_ops.batch_norm_train(x, g if axes == 'auto' else None,
                                                 b if axes == 'auto' else None, axes, 1e-3,
                                                 act, backend='native')
            y2, m2, s2 = bn_ops.batch_norm_train(x, g if axes == 'auto' else None,
                                                 b if axes == 'auto' else None, axes, 1e-3,
                                                 act, backend='triton')
            torch.testing.assert_close(y1, y2)
            torch.testing.assert_close(m1, m2)
            torch.testing.assert_close(s1, s2)


@pytest.mark.parametrize("axes", ['auto', 0, (1, 2)])
def test_gradcheck_infer(axes):
    gen = torch.Generator().manual_seed(3)
    shape = (3, 2, 3, 2)
    x = torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)
    pshape = bn_ops.param_shape(shape, bn_ops.normalize_axes(axes, 4))
    ps = [torch.rand(pshape, dtype=torch.float64, generator=gen).add_(0.5).requires_grad_()
          for _ in range(4)]
    assert torch.autograd.gradcheck(
        lambda x, m, s, g, b: bn_ops.batch_norm_infer(x, m, s, g, b, axes), [x] + ps)


def test_stats_detached_and_backend_errors(rng):
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    y, m, s = bn_ops.batch_norm_train(x)
    assert y.requires_grad and not m.requires_grad and not s.requires_grad
    with pytest.raises(ValueError, match="backend"):
        bn_ops.batch_norm_train(x, backend='nope')
    with pytest.raises(ValueError, match="activation"):
        bn_ops.batch_norm_train(x, activation='tanh')
    with pytest.raises(RuntimeError, match="cuDNN"):
        bn_ops.batch_norm_train(x, backend='cudnn')
    assert bn_ops.cudnn_unavailable_reason(x) is not None
    assert bn_ops.dnn_backend(x, (0, 2, 3)) == 'native'


# -- mixed precision --------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("axes", ['auto', 0])
def test_low_precision_input_float32_params(rng, cls, dtype, axes):
    shape = (6, 4, 3, 3)
    raxes = _resolve(axes, 4)
    pshape = tuple(s for d, s in enumerate(shape) if d not in raxes)
    init = _random_params(rng, pshape)
    layer = cls(InputLayer(shape), axes=axes, **init)
    assert layer.gamma.dtype == torch.float32
    x = torch.tensor(rng.normal(size=shape)).to(dtype)
    xr = _np(x)
    out = layer.get_output_for(x)
    assert out.dtype == dtype and layer.mean.dtype == torch.float32
    bm, bi = ref_stats(xr, raxes, 1e-4)
    np.testing.assert_allclose(_np(out), ref_normalize(xr, raxes, bm, bi, init['gamma'],
                                                       init['beta']), rtol=2e-2, atol=3e-2)
    np.testing.assert_allclose(_np(layer.mean), 0.9 * init['mean'] + 0.1 * bm, rtol=1e-5,
                               atol=1e-5)
    out = layer.get_output_for(x, deterministic=True)
    assert out.dtype == dtype
    np.testing.assert_allclose(_np(out), ref_normalize(xr, raxes, _np(layer.mean),
                                                       _np(layer.inv_std), init['gamma'],
                                                       init['beta']), rtol=2e-2, atol=3e-2)


def test_autocast_keeps_input_dtype_and_float32_stats(rng):
    layer = BatchNormLayer(InputLayer((None, 3, 4, 4)))
    x = torch.randn(5, 3, 4, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer.get_output_for(x)
    assert out.dtype == torch.bfloat16 and layer.mean.dtype == torch.float32
    np.testing.assert_allclose(_np(layer.mean), 0.1 * _np(x).mean(axis=(0, 2, 3)), atol=1e-5)


# -- autograd with updates --------------------------------------------------------------------------

@pytest.mark.parametrize("cls", LAYERS)
def test_backward_after_update_has_no_inplace_error(rng, cls):
    for use in [False, True]:
        layer = cls(InputLayer((None, 3, 4, 4)))
        for p in layer.get_params():
            p.requires_grad_(True)
        x = torch.randn(5, 3, 4, 4, requires_grad=True)
        out = layer.get_output_for(x, batch_norm_use_averages=use,
                                   batch_norm_update_averages=True)
        (out * torch.randn_like(out)).sum().backward()
        assert x.grad is not None and layer.gamma.grad is not None
        # two updating calls before one backward
        out1 = layer.get_output_for(x, batch_norm_use_averages=use)
        out2 = layer.get_output_for(x * 2, batch_norm_use_averages=use)
        (out1.sum() + (out2 ** 2).sum()).backward()


def test_gradient_flows_through_batch_stats(float64, rng):
    """With batch statistics, a constant shift of the input changes nothing,
    so the input gradient sums to zero over the normalized axes."""
    layer = BatchNormLayer(InputLayer((None, 3, 2, 2)))
    x = torch.tensor(rng.normal(size=(4, 3, 2, 2)), requires_grad=True)
    out = layer.get_output_for(x)
    (out * torch.tensor(rng.normal(size=out.shape))).sum().backward()
    np.testing.assert_allclose(_np(x.grad).sum(axis=(0, 2, 3)), 0, atol=1e-10)


# -- fused nonlinearity ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("nonlin", [nonlinearities.rectify, nonlinearities.identity,
                                    nonlinearities.tanh])
@pytest.mark.parametrize("deterministic", [False, True])
def test_fused_output_equals_unfused(float64, rng, cls, nonlin, deterministic):
    init = _random_params(rng, (3,))
    a = cls(InputLayer((None, 3, 4, 4)), **init)
    b = cls(InputLayer((None, 3, 4, 4)), **init)
    x = torch.tensor(rng.normal(size=(5, 3, 4, 4)))
    for _ in range(2):
        fused = a.get_fused_output_for(x, nonlin, deterministic=deterministic)
        plain = nonlin(b.get_output_for(x, deterministic=deterministic))
        torch.testing.assert_close(fused, plain)
        torch.testing.assert_close(a.mean, b.mean)
        torch.testing.assert_close(a.inv_std, b.inv_std)


# -- helpers: graph surgery -----------------------------------------------------------------------

@pytest.mark.parametrize("helper,cls", [(batch_norm, BatchNormLayer),
                                        (batch_norm_dnn, BatchNormDNNLayer)])
def test_helper_on_dense_layer(helper, cls):
    l_in = InputLayer((None, 6))
    dense = DenseLayer(l_in, 4, nonlinearity=nonlinearities.tanh, name='fc')
    W = dense.W
    top = helper(dense, alpha=0.2)
    assert type(top) is NonlinearityLayer and top.name == 'fc_bn_nonlin'
    assert top.nonlinearity is nonlinearities.tanh
    bn = top.input_layer
    assert type(bn) is cls and bn.name == 'fc_bn' and bn.alpha == 0.2
    assert bn.input_layer is dense
    assert dense.b is None and dense.nonlinearity is nonlinearities.identity
    assert dense.get_params() == [W]
    params = get_all_params(top)
    assert params == [W, bn.beta, bn.gamma, bn.mean, bn.inv_std]
    assert [param_name(p) for p in params] == ['fc.W', 'fc_bn.beta', 'fc_bn.gamma', 'fc_bn.mean',
                                        'fc_bn.inv_std']
    assert get_all_params(top, trainable=True) == [W, bn.beta, bn.gamma]
    assert get_all_params(top, regularizable=True) == [W, bn.gamma]
    assert get_all_params(top, batch_norm_stat=True) == [bn.mean, bn.inv_std]
    check_params(bn, {'beta': ((4,), {'trainable'}),
                      'gamma': ((4,), {'trainable', 'regularizable'}),
                      'mean': ((4,), {'batch_norm_stat'}),
                      'inv_std': ((4,), {'batch_norm_stat'})})
    out = get_output(top, torch.randn(5, 6))
    assert out.shape == (5, 4)


@pytest.mark.parametrize("helper,cls", [(batch_norm, BatchNormLayer),
                                        (batch_norm_dnn, BatchNormDNNLayer)])
def test_helper_variants(helper, cls):
    # nonlinearity=None stores identity: an identity NonlinearityLayer is still added
    dense = DenseLayer(InputLayer((None, 6)), 1, nonlinearity=None, name='d')
    top = helper(dense)
    assert type(top) is NonlinearityLayer and top.nonlinearity is nonlinearities.identity
    assert [param_name(p) for p in get_all_params(top)] == ['d.W', 'd_bn.beta', 'd_bn.gamma',
                                                     'd_bn.mean', 'd_bn.inv_std']
    assert get_output(top, torch.randn(3, 6)).shape == (3, 1)
    # unnamed layer, no bias: unnamed new layers, nothing removed
    dense = DenseLayer(InputLayer((None, 6)), 3, b=None)
    top = helper(dense)
    assert top.name is None and top.input_layer.name is None
    assert top.nonlinearity is nonlinearities.rectify
    assert dense.get_params() == [dense.W]
    # explicit name wins
    dense = DenseLayer(InputLayer((None, 6)), 3, name='x')
    top = helper(dense, name='norm', beta=None)
    assert top.name == 'norm_nonlin' and top.input_layer.name == 'norm'
    assert top.input_layer.beta is None
    # a layer without a nonlinearity attribute: the BN layer is the top
    bn = helper(InputLayer((None, 3, 4, 4), name='in'))
    assert type(bn) is cls and bn.name == 'in_bn'


def test_helper_on_conv_layer():
    conv_mod = pytest.importorskip("lasagne.layers.conv")
    from lasagne.layers.dnn import Conv2DDNNLayer
    for helper, conv_cls, bn_cls in [(batch_norm, conv_mod.Conv2DLayer, BatchNormLayer),
                                     (batch_norm_dnn, Conv2DDNNLayer, BatchNormDNNLayer)]:
        conv = conv_cls(InputLayer((None, 3, 6, 6)), 4, 3, name='conv1')
        top = helper(conv)
        bn = top.input_layer
        assert (type(top), type(bn)) == (NonlinearityLayer, bn_cls)
        assert (top.name, bn.name) == ('conv1_bn_nonlin', 'conv1_bn')
        assert top.nonlinearity is nonlinearities.rectify and conv.b is None
        assert conv.nonlinearity is nonlinearities.identity
        assert get_all_params(top) == [conv.W, bn.beta, bn.gamma, bn.mean, bn.inv_std]
        assert tuple(bn.gamma.shape) == (4,)
        out = get_output(top, torch.randn(2, 3, 6, 6))
        assert out.shape == (2, 4, 4, 4) and (out >= 0).all()


# -- documented errors ---------------------------------------------------------------------------

def test_errors():
    l4 = InputLayer((None, 3, 5, 5))
    for axes in [(1,), (0, 2), (2, 3), (0, 1, 2, 3)]:
        check_raises(ValueError, lambda: BatchNormDNNLayer(l4, axes=axes), 'BatchNormDNNLayer',
                     'axes')
    check_raises(ValueError, lambda: BatchNormDNNLayer(l4, epsilon=1e-6, name='bn'),
                 "BatchNormDNNLayer(name='bn')", 'epsilon')
    check_raises(ValueError, lambda: BatchNormDNNLayer(InputLayer((None, 3, 5))),
                 'BatchNormDNNLayer', '2D, 4D or 5D')
    check_raises(ValueError, lambda: BatchNormDNNLayer(InputLayer((None, 3, 5, 5, 5, 5))),
                 'BatchNormDNNLayer', '2D, 4D or 5D')
    for cls in LAYERS:
        check_raises(ValueError, lambda: cls(InputLayer((None, None, 5, 5))), cls.__name__,
                     'known')
        check_raises(ValueError, lambda: cls(InputLayer((None, 3, None, 5)), axes=0),
                     cls.__name__, 'known')
    check_raises(ValueError, lambda: BatchNormLayer(l4, axes=4), 'BatchNormLayer', 'axes')
    check_raises(ValueError, lambda: BatchNormLayer(l4, axes=(1, -3)), 'BatchNormLayer', 'axes')
    check_raises(TypeError, lambda: BatchNormLayer(l4, axes=1.5), 'BatchNormLayer', 'axes')
    check_raises(ValueError, lambda: BatchNormLayer(l4, axes='all'), 'BatchNormLayer', 'axes')
    # unknown sizes on normalized axes are fine
    assert BatchNormLayer(InputLayer((None, 3, None, None))).gamma.shape == (3,)
    assert BatchNormDNNLayer((None, 3, 4, 4), axes=(0,), epsilon=1e-5).mode == 'per-activation'
    assert BatchNormDNNLayer((None, 3, 4, 4), axes=(0, 3, 2)).mode == 'spatial'


# -- shapes by hypothesis --------------------------------------------------------------------------

@st.composite
def _shape_and_axes(draw):
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    axes = tuple(draw(st.sets(st.integers(0, ndim - 1), min_size=1)))
    return shape, axes


@given(_shape_and_axes())
def test_hypothesis_shapes_and_values(case):
    shape, axes = case
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        batch = None if 0 in axes else shape[0]
        layer = BatchNormLayer(InputLayer((batch,) + shape[1:]), axes=axes)
        x = np.random.default_rng().normal(size=shape)
        raxes = tuple(sorted(axes))
        bm, bi = ref_stats(x, raxes, 1e-4)
        check_layer(layer, x, lambda v: ref_normalize(v, raxes, bm, bi), atol=1e-7,
                    rtol=1e-7, grad=False)
        assert tuple(layer.mean.shape) == tuple(s for d, s in enumerate(shape)
                                                if d not in raxes)
    finally:
        torch.set_default_dtype(old)


# -- Network: train() updates, eval() is deterministic -------------------------------------------------

def test_network_train_eval(float64, rng):
    network = pytest.importorskip("lasagne.network")
    l_in = InputLayer((None, 5))
    top = batch_norm_dnn(DenseLayer(l_in, 4, name='fc'))
    net = network.Network(top)
    bn = top.input_layer
    x = torch.tensor(rng.normal(size=(8, 5)))
    net.train()
    net(x)
    assert not torch.allclose(bn.mean, torch.zeros(4, dtype=torch.float64))
    snapshot = [p.detach().clone() for p in get_all_params(top)]
    net.eval()
    y1, y2 = net(x), net(x)
    torch.testing.assert_close(y1, y2)
    for p, s in zip(get_all_params(top), snapshot):
        torch.testing.assert_close(p.detach(), s)
    h = _np(x) @ _np(top.input_layer.input_layer.W)
    expected = np.maximum(ref_normalize(h, (0,), _np(bn.mean), _np(bn.inv_std), _np(bn.gamma),
                                        _np(bn.beta)), 0)
    np.testing.assert_allclose(_np(y1), expected, atol=1e-10)


# -- the Triton kernels, in Triton's CPU interpreter ---------------------------------------------------
#
# The interpreter must be switched on (TRITON_INTERPRET=1) before Triton is
# first imported, so these checks run in a child pytest process started by
# test_triton_kernels_in_interpreter; in the parent they are skipped.

_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"


def test_triton_kernels_in_interpreter():
    pytest.importorskip("triton")
    if _INTERPRETING:
        pytest.skip("this is the child process")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           __file__, "-k", "triton_kernels_interpreted"],
                          env=env, capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert proc.returncode == 0 and " passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr


@pytest.fixture
def kernels(monkeypatch):
    """lasagne.ops.batchnorm_triton, interpreted.

    Triton 3.6's interpreter turns a scalar kernel argument into a 1-element
    array and calls int() on it for range(); NumPy 2.4 refuses that, so the
    conversion is patched to take the element."""
    if not _INTERPRETING:
        pytest.skip("runs in a child process with TRITON_INTERPRET=1")
    from triton.runtime import interpreter
    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", patched)
    from lasagne.ops import batchnorm_triton
    return batchnorm_triton


@pytest.mark.parametrize("shape,dtype,relu", [
    ((3, 5, 37), torch.float32, False), ((3, 5, 37), torch.bfloat16, True),
    ((200, 6, 1), torch.float32, True), ((200, 6, 1), torch.bfloat16, False),
    ((2, 3, 300), torch.float32, True), ((1, 70, 1), torch.float32, False),
    ((33, 130, 1), torch.bfloat16, True), ((5, 2, 3), torch.float16, True)])
def test_triton_kernels_interpreted(kernels, shape, dtype, relu):
    gen = torch.Generator().manual_seed(11)
    K = shape[1]
    x = (torch.randn(shape, generator=gen) * 2 + 3).to(dtype)
    g = torch.rand(K, generator=gen) + 0.5
    b = torch.randn(K, generator=gen) * 0.5
    dy = torch.randn(shape, generator=gen).to(dtype)
    for gamma, beta in [(g, b), (None, None)]:
        y, m, s = kernels.forward(x, gamma, beta, 1e-4, relu)
        yr, mr, sr = bn_ops.reference_forward(x, gamma, beta, 1e-4, relu)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2,
                                                                             atol=2e-2)
        assert y.dtype == dtype and m.dtype == torch.float32 and s.dtype == torch.float32
        torch.testing.assert_close(m, mr, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s, sr, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(y.float(), yr.float(), **tol)
        dx, dg, db = kernels.backward(dy, x, m, s, gamma, beta, relu)
        dxr, dgr, dbr = bn_ops.reference_backward(dy, x, m, s, gamma, beta, relu)
        assert dx.dtype == dtype
        torch.testing.assert_close(dg, dgr, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(db, dbr, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(dx.float(), dxr.float(), **tol)


def test_average_updates_applied_after_the_forward():
    """The moving averages of every layer change once the forward is over
    (the original's Theano updates): a layer later in the same forward still
    sees the old values; the new ones are (1 - alpha) * old + alpha * batch,
    per layer and alpha; a forward that fails updates nothing; a direct
    get_output_for call updates at once."""
    from lasagne.layers import ExpressionLayer, get_output
    rng = np.random.default_rng(3)
    l_in = InputLayer((6, 3, 4, 5))
    bn1 = BatchNormLayer(l_in, alpha=0.25)
    seen = {}

    def peek(t):
        seen["mean"] = bn1.mean.detach().clone()
        return t
    spy = ExpressionLayer(bn1, peek)
    bn2 = BatchNormLayer(spy, alpha=0.5, axes=(0, 2))
    for layer in (bn1, bn2):
        layer.mean.data.copy_(torch.from_numpy(rng.normal(size=layer.mean.shape)))
        layer.inv_std.data.copy_(torch.from_numpy(rng.uniform(0.5, 2, size=layer.mean.shape)))
    old = {l: (l.mean.detach().clone().double(), l.inv_std.detach().clone().double())
           for l in (bn1, bn2)}
    x = rng.normal(size=(6, 3, 4, 5)) * 2 + 1
    out = get_output(bn2, torch.tensor(x, dtype=torch.float32))
    torch.testing.assert_close(seen["mean"].double(), old[bn1][0])
    h = (x - x.mean((0, 2, 3), keepdims=True)) / np.sqrt(x.var((0, 2, 3), keepdims=True)
                                                          + 1e-4)
    for layer, data, axes, alpha in ((bn1, x, (0, 2, 3), 0.25), (bn2, h, (0, 2), 0.5)):
        mean = data.mean(axes)
        inv_std = 1 / np.sqrt(data.var(axes) + 1e-4)
        want_mean = (1 - alpha) * old[layer][0].numpy() + alpha * mean
        want_inv = (1 - alpha) * old[layer][1].numpy() + alpha * inv_std
        np.testing.assert_allclose(layer.mean.detach().numpy(), want_mean, rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(layer.inv_std.detach().numpy(), want_inv, rtol=1e-4,
                                   atol=1e-5)
    assert out.shape == x.shape

    before = [l.mean.detach().clone() for l in (bn1, bn2)]

    def fail(t):
        raise RuntimeError("failing layer")
    broken = BatchNormLayer(ExpressionLayer(bn1, fail))
    with pytest.raises(RuntimeError, match="failing layer"):
        get_output(broken, torch.tensor(x, dtype=torch.float32))
    torch.testing.assert_close(bn1.mean.detach(), before[0])

    bn1.get_output_for(torch.tensor(x, dtype=torch.float32))
    assert not torch.equal(bn1.mean.detach(), before[0])


def test_average_updates_under_torch_compile():
    """Traced by torch.compile(fullgraph=True), a training forward gives the
    eager outputs and moves the averages exactly as the eager forward does."""
    from lasagne.layers import get_output
    torch.manual_seed(4)
    nets = []
    for _ in range(2):
        l_in = InputLayer((5, 3, 4, 4))
        a = BatchNormLayer(l_in, alpha=0.3)
        b = BatchNormLayer(NonlinearityLayer(a, nonlinearities.rectify), alpha=0.2)
        nets.append((a, b))
    x = torch.randn(5, 3, 4, 4) * 2 + 1
    eager = get_output(nets[0][1], x)
    compiled = torch.compile(lambda t: get_output(nets[1][1], t), fullgraph=True,
                             backend="aot_eager")(x)
    torch.testing.assert_close(compiled, eager)
    for le, lc in zip(nets[0], nets[1]):
        torch.testing.assert_close(lc.mean, le.mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(lc.inv_std, le.inv_std, rtol=1e-6, atol=1e-6)
        assert not torch.equal(lc.mean, torch.zeros_like(lc.mean))
