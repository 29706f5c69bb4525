"""Network's fast path: fused batch-norm + nonlinearity pairs and the
channels-last layout give the same results as plain get_output."""

import numpy as np
import pytest
import torch

from lasagne.layers import (DenseLayer, InputLayer, NonlinearityLayer, batch_norm,
                            get_all_params, get_output)
from lasagne.layers.dnn import Conv2DDNNLayer, MaxPool2DDNNLayer, batch_norm_dnn
from lasagne.network import Network
from lasagne.nonlinearities import rectify, tanh


def _conv_net():
    l = InputLayer((None, 3, 9, 9))
    l = batch_norm_dnn(Conv2DDNNLayer(l, 4, 3, pad=1, name="c1"))
    l = MaxPool2DDNNLayer(l, 2)
    l = batch_norm(Conv2DDNNLayer(l, 5, 3, nonlinearity=tanh, name="c2"))
    return DenseLayer(l, 3, nonlinearity=None)


def _clone_values(net):
    return [p.detach().clone() for p in get_all_params(net)]


def _set_values(net, values):
    with torch.no_grad():
        for p, v in zip(get_all_params(net), values):
            p.copy_(v)


def test_fusion_plan_pairs_only_sole_consumers(float64):
    l_in = InputLayer((None, 4))
    bn_net = batch_norm(DenseLayer(l_in, 3, name="d"))
    net = Network(bn_net)
    assert net._fusions == {bn_net: bn_net.input_layer}
    # a batch-norm output used twice (or requested) is never fused
    bn = bn_net.input_layer
    other = NonlinearityLayer(bn, rectify)
    assert Network([bn_net, other])._fusions == {}
    assert Network([bn_net, bn])._fusions == {}
    assert Network(bn_net, fuse=False)._fusions == {}


@pytest.mark.parametrize("training", [True, False])
def test_fused_network_equals_get_output(float64, rng, training):
    out = _conv_net()
    net = Network(out)
    assert len(net._fusions) == 2
    net.train(training)
    start = _clone_values(out)
    x = torch.tensor(rng.normal(size=(6, 3, 9, 9)), requires_grad=True)
    y = net(x)
    y.backward(torch.ones_like(y))
    fused_grads = [None if p.grad is None else p.grad.clone() for p in get_all_params(out)]
    fused_values = _clone_values(out)
    _set_values(out, start)
    for p in get_all_params(out):
        p.grad = None
    x2 = x.detach().clone().requires_grad_()
    y2 = get_output(out, x2, deterministic=not training)
    y2.backward(torch.ones_like(y2))
    np.testing.assert_allclose(y.detach().numpy(), y2.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), x2.grad.numpy(), rtol=1e-9, atol=1e-12)
    for a, b in zip(fused_grads, get_all_params(out)):
        if a is None:
            assert b.grad is None
        else:
            np.testing.assert_allclose(a.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-12)
    # the moving averages were updated exactly once, identically
    for a, b in zip(fused_values, _clone_values(out)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


def test_feeding_a_fused_layer_uses_the_given_output(float64, rng):
    """A dict input that supplies a fused batch-norm layer's output: the pair
    is not fused for that call, the nonlinearity applies to the given value."""
    l_in = InputLayer((None, 4))
    top = batch_norm(DenseLayer(l_in, 3, name="d"))
    bn = top.input_layer
    net = Network(top)
    assert net._fusions == {top: bn}
    h = torch.tensor(rng.normal(size=(5, 3)))
    np.testing.assert_array_equal(net({bn: h}).numpy(), np.maximum(h.numpy(), 0))
    # and the usual input still runs the fused pair
    x = torch.tensor(rng.normal(size=(5, 4)))
    np.testing.assert_allclose(net(x).detach().numpy(),
                               get_output(top, x).detach().numpy(), rtol=1e-12)


def test_meta_device_forward_gives_shapes():
    """A network on the meta device (no data, no autocast there) runs and
    infers the output shape."""
    net = Network(_conv_net()).to("meta")
    out = net(torch.empty(2, 3, 9, 9, device="meta"))
    assert out.is_meta and out.shape == (2, 3)


def test_memory_format_argument():
    with pytest.raises(ValueError, match="memory_format"):
        Network(DenseLayer(InputLayer((None, 2)), 2), memory_format="nhwc")


def test_cpu_keeps_layout(rng):
    net = Network(_conv_net())
    x = torch.tensor(rng.normal(size=(2, 3, 9, 9)), dtype=torch.float32)
    net(x)
    for w in net._conv_weights:
        assert w.is_contiguous()


@pytest.mark.gpu
def test_cuda_channels_last_same_result(rng):
    out = _conv_net()
    net = Network(out, memory_format="preserve").cuda().eval()
    x = torch.tensor(rng.normal(size=(4, 3, 9, 9)), dtype=torch.float32, device="cuda")
    torch.backends.cudnn.allow_tf32 = False
    try:
        expected = net(x)
        fast = Network(out).cuda().eval()
        for w in fast._conv_weights:
            assert w.is_contiguous(memory_format=torch.channels_last)
        got = fast(x)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
