"""Tests of lasagne.network.Network: registration, order and keys of the
parameters, forward, train/eval, moving, state_dict, torch.compile and deep
graphs."""

import sys

import numpy as np
import pytest
import torch

import lasagne
from lasagne.layers import (InputLayer, Layer, MergeLayer, get_all_layers, get_all_params,
                            get_output)
from lasagne.network import Network
from lasagne.utils import param_name


# -- small test-local layers (independent of the core layers) --------------------------------

class Affine(Layer):
    """y = x * W + b, elementwise over the trailing axis."""

    def __init__(self, incoming, W=None, b=None, **kwargs):
        super(Affine, self).__init__(incoming, **kwargs)
        n = self.input_shape[-1]
        self.W = self.add_param(W if W is not None else (lambda s: np.random.randn(*s)), (n,),
                                name="W")
        self.b = self.add_param(b if b is not None else (lambda s: np.random.randn(*s)), (n,),
                                name="b", regularizable=False)

    def get_output_for(self, input, **kwargs):
        return input * self.W + self.b


class Bias(Layer):
    """y = x + b: the simplest parametrised layer (for the deep chain)."""

    def __init__(self, incoming, **kwargs):
        super(Bias, self).__init__(incoming, **kwargs)
        self.b = self.add_param(lambda s: np.random.uniform(-0.01, 0.01, s),
                                self.input_shape[1:], regularizable=False)

    def get_output_for(self, input, **kwargs):
        return input + self.b


class RunningMean(Layer):
    """Subtracts a running mean: updated from the batch unless deterministic
    (a stand-in for batch normalisation's statistics)."""

    def __init__(self, incoming, alpha=0.5, **kwargs):
        super(RunningMean, self).__init__(incoming, **kwargs)
        n = self.input_shape[-1]
        self.mean = self.add_param(np.zeros(n), (n,), name="mean", trainable=False,
                                   regularizable=False)
        self.alpha = alpha

    def get_output_for(self, input, deterministic=False, **kwargs):
        if deterministic:
            return input - self.mean
        batch_mean = input.mean(0)
        with torch.no_grad():
            self.mean.mul_(1 - self.alpha).add_(self.alpha * batch_mean)
        return input - batch_mean


class Sum(MergeLayer):
    def get_output_shape_for(self, input_shapes):
        return input_shapes[0]

    def get_output_for(self, inputs, **kwargs):
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


class ListParams(Layer):
    """Keeps its parameters in a list, not in attributes."""

    def __init__(self, incoming, param_names=(None, None), **kwargs):
        super(ListParams, self).__init__(incoming, **kwargs)
        n = self.input_shape[-1]
        self.scales = [self.add_param(np.ones(n), (n,), name=name) for name in param_names]

    def get_output_for(self, input, **kwargs):
        return input * self.scales[0] * self.scales[1]


def numpy_affine_chain(x, layers):
    for layer in layers:
        x = x * layer.W.detach().double().numpy() + layer.b.detach().double().numpy()
    return x


# -- construction, order, keys --------------------------------------------------------------

def test_params_registered_in_lasagne_order_with_readable_keys():
    l_in = InputLayer((None, 3), name="in")
    l1 = Affine(l_in, name="fc1")
    l2 = Affine(l1)
    l3 = Affine(l2, name="block.out")
    net = Network(l3)
    assert net.layers == get_all_layers(l3)
    assert net.input_layers == [l_in]
    assert net.output_layers == [l3]
    keys = list(dict(net.named_parameters()))
    assert keys == ["fc1_W", "fc1_b", "2_Affine_W", "2_Affine_b", "block_out_W", "block_out_b"]
    assert list(net.state_dict()) == keys
    expected = get_all_params(l3)
    got = list(net.parameters())
    assert len(got) == len(expected) and all(a is b for a, b in zip(got, expected))
    assert all(a is b for a, b in zip(net.get_params(), expected))
    assert net.get_params(regularizable=True) == [l1.W, l2.W, l3.W]
    assert "layers=4" in repr(net)


def test_keys_are_stable_across_rebuilds():
    def build():
        l = InputLayer((None, 2))
        for i in range(3):
            l = Affine(l, name="a{}".format(i) if i == 1 else None)
        return Network(l)
    assert list(build().state_dict()) == list(build().state_dict()) == [
        "1_Affine_W", "1_Affine_b", "a1_W", "a1_b", "3_Affine_W", "3_Affine_b"]


def test_key_fallbacks_and_collisions():
    l_in = InputLayer((None, 2))
    l1 = ListParams(l_in, name="s")
    l2 = Affine(l1, name="s")          # same layer name: keys get a suffix
    net = Network(l2)
    assert list(net.state_dict()) == ["s_param0", "s_param1", "s_W", "s_b"]
    # parameters named by add_param but held in no attribute: their names
    l1 = ListParams(l_in, param_names=("g0", "g1"), name="lst")
    l2 = ListParams(l1, param_names=("g0", None))
    assert list(Network(l2).state_dict()) == ["lst_g0", "lst_g1", "2_ListParams_g0",
                                              "2_ListParams_param1"]
    l3 = Affine(l2, name="s_W")
    l4 = Affine(l3, name="s")
    net = Network(l4)
    keys = list(net.state_dict())
    assert len(set(keys)) == len(keys) == 8
    assert all("." not in k for k in keys)


def test_tied_parameters_registered_once():
    l_in = InputLayer((None, 4))
    l1 = Affine(l_in, name="enc")
    l2 = Affine(l1, W=l1.W, name="dec")   # ties W
    net = Network(l2)
    assert list(net.state_dict()) == ["enc_W", "enc_b", "dec_b"]
    assert sum(1 for _ in net.parameters()) == len(get_all_params(l2)) == 3
    x = torch.randn(5, 4)
    net(x).sum().backward()
    assert l2.W is l1.W and l1.W.grad is not None


def test_untrainable_params_do_not_require_grad():
    l_in = InputLayer((None, 3))
    l1 = Affine(l_in)
    l1.b.requires_grad_(False)                  # frozen by the user: stays frozen
    l2 = RunningMean(l1, name="rm")
    net = Network(l2)
    assert l1.W.requires_grad
    assert not l1.b.requires_grad
    assert not l2.mean.requires_grad
    assert list(net.state_dict()) == ["1_Affine_W", "1_Affine_b", "rm_mean"]
    assert net.get_params(trainable=True) == [l1.W, l1.b]
    net(torch.randn(4, 3)).pow(2).sum().backward()
    assert l1.W.grad is not None and l2.mean.grad is None


def test_constructor_errors():
    l_in = InputLayer((None, 3))
    l1 = Affine(l_in)
    with pytest.raises(ValueError, match="empty"):
        Network([])
    with pytest.raises(TypeError, match="layer_or_layers"):
        Network(torch.zeros(2))
    other = InputLayer((None, 3), name="other")
    with pytest.raises(ValueError, match="other"):
        Network(l1, inputs=[other])
    with pytest.raises(ValueError, match="twice"):
        Network(l1, inputs=[l_in, l_in])


# -- forward ------------------------------------------------------------------------------

def test_forward_equals_get_output_and_numpy(float64):
    l_in = InputLayer((None, 3))
    layers = [Affine(l_in)]
    layers.append(Affine(layers[-1]))
    net = Network(layers[-1])
    x = np.random.randn(5, 3)
    out = net(torch.tensor(x))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.detach().numpy(), numpy_affine_chain(x, layers), rtol=1e-12)
    assert torch.equal(out, get_output(layers[-1], torch.tensor(x)))


def test_several_inputs_and_outputs():
    a = InputLayer((None, 2), name="a")
    b = InputLayer((None, 2), name="b")
    la = Affine(a)
    s = Sum([b, la], name="sum")
    out2 = Affine(s)
    net = Network([s, out2])
    # positional inputs follow get_all_layers order: b comes first here
    assert net.input_layers == [l for l in get_all_layers([s, out2]) if isinstance(l, InputLayer)]
    assert net.input_layers == [b, a]
    xa, xb = torch.randn(3, 2), torch.randn(3, 2)
    outs = net(xb, xa)
    assert isinstance(outs, list) and len(outs) == 2
    expected = get_output([s, out2], {a: xa, b: xb})
    assert all(torch.equal(o, e) for o, e in zip(outs, expected))
    by_layer = net({a: xa, b: xb})
    by_name = net({"a": xa, "b": xb})
    assert all(torch.equal(o, e) for o, e in zip(by_layer, expected))
    assert all(torch.equal(o, e) for o, e in zip(by_name, expected))
    with pytest.raises(ValueError, match="2 input layer"):
        net(xa)
    with pytest.raises(ValueError, match="'nope'"):
        net({"nope": xa})
    # a single output given as a list gives a list
    assert isinstance(Network([out2])(xb, xa), list)


def test_explicit_inputs_cut_the_graph():
    l_in = InputLayer((None, 2))
    l1 = Affine(l_in, name="below")
    l2 = Affine(l1, name="above")
    net = Network(l2, inputs=[l1])
    assert net.layers == [l1, l2]
    assert list(net.state_dict()) == ["above_W", "above_b"]
    h = torch.randn(4, 2)
    assert torch.equal(net(h), get_output(l2, {l1: h}))


def test_forward_without_inputs_uses_input_var():
    x = torch.randn(2, 3)
    l_in = InputLayer((None, 3), input_var=x)
    net = Network(Affine(l_in))
    assert torch.equal(net(), net(x))
    with pytest.raises(ValueError, match="input_var"):
        Network(Affine(InputLayer((None, 3))))()


def test_train_eval_map_to_deterministic():
    l_in = InputLayer((None, 2))
    rm = RunningMean(l_in)
    net = Network(rm)
    x = torch.randn(8, 2) + 3
    assert net.training
    out = net(x)                                   # training: batch statistics, update
    torch.testing.assert_close(out, x - x.mean(0))
    torch.testing.assert_close(rm.mean, 0.5 * x.mean(0))
    before = rm.mean.clone()
    net.eval()
    out = net(x)                                   # deterministic: running mean, no update
    torch.testing.assert_close(out, x - before)
    assert torch.equal(rm.mean, before)
    out = net(x, deterministic=False)              # an explicit kwarg wins
    assert not torch.equal(rm.mean, before)
    net.train()
    before = rm.mean.clone()
    net(x, deterministic=True)
    assert torch.equal(rm.mean, before)


def test_dtype_mismatch_names_the_layer():
    l_in = InputLayer((None, 3), name="in")
    net = Network(Affine(l_in, name="fc"))
    with pytest.raises(RuntimeError, match=r"Affine\(name='fc'\).*float64.*fc_W.*float32"):
        net(torch.randn(2, 3, dtype=torch.float64))
    # under autocast dtypes are autocast's business
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.randn(2, 3, dtype=torch.float64))


def test_device_mismatch_names_the_layer():
    l_in = InputLayer((None, 3))
    net = Network(Affine(l_in, name="fc")).to("meta")
    with pytest.raises(RuntimeError, match=r"Affine\(name='fc'\).*meta"):
        net(torch.randn(2, 3))


def test_optimizer_updates_the_layers():
    l_in = InputLayer((None, 3))
    l1 = Affine(l_in)
    net = Network(RunningMean(l1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    before = l1.W.detach().clone()
    net(torch.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(l1.W, before)


# -- moving, state_dict ---------------------------------------------------------------------

def _build():
    l_in = InputLayer((None, 3))
    l1 = Affine(l_in, name="fc")
    l2 = RunningMean(l1, name="rm")
    return Network(Affine(l2)), (l1, l2)


def test_to_dtype_keeps_parameter_objects():
    net, (l1, l2) = _build()
    params = list(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    assert net.to(torch.float64) is net
    assert all(a is b for a, b in zip(net.parameters(), params))
    assert l1.W is params[0] and l1.W.dtype == torch.float64
    assert l1.W.grad.dtype == torch.float64
    assert not l2.mean.requires_grad and l2.mean.dtype == torch.float64
    x = torch.randn(4, 3, dtype=torch.float64)
    assert net(x).dtype == torch.float64
    net.float()
    assert l1.W.dtype == torch.float32 and l1.W.grad.dtype == torch.float32
    net.double()
    assert all(p.dtype == torch.float64 for p in params)


@pytest.mark.parametrize("flag", ["overwrite", "swap"])
def test_to_keeps_objects_under_future_flags(flag):
    setter = getattr(torch.__future__, "set_{}_module_params_on_conversion".format(flag))
    getter = getattr(torch.__future__, "get_{}_module_params_on_conversion".format(flag))
    old = getter()
    setter(True)
    try:
        net, (l1, l2) = _build()
        l1.W.marker = "kept"
        params = list(net.parameters())
        net.double()
        assert all(a is b for a, b in zip(net.parameters(), params))
        assert l1.W.dtype == torch.float64 and l1.W.marker == "kept"
        assert param_name(l1.W) == "fc.W" and type(l1.W) is type(params[-1])
        assert net(torch.randn(2, 3, dtype=torch.float64)).dtype == torch.float64
        net.load_state_dict({k: v.float() for k, v in net.state_dict().items()}, assign=True)
        assert all(a is b for a, b in zip(net.parameters(), params))
        assert l1.W.marker == "kept" and param_name(l1.W) == "fc.W"
        assert l1.W.dtype == torch.float32
    finally:
        setter(old)


def test_to_meta_and_back_keeps_objects():
    net, (l1, l2) = _build()
    params = list(net.parameters())
    net.to("meta")                       # incompatible tensor type: swapped in place
    assert l1.W.is_meta and l1.W is params[0] and param_name(l1.W) == "fc.W"
    net.to_empty(device="cpu")
    assert not l1.W.is_meta and all(a is b for a, b in zip(net.parameters(), params))


def test_state_dict_round_trip():
    net, (l1, l2) = _build()
    net(torch.randn(6, 3) + 1)                  # moves the running mean off zero
    state = net.state_dict()
    assert "rm_mean" in state
    other, (m1, m2) = _build()
    assert not torch.equal(m1.W, l1.W)
    other.load_state_dict(state)
    for (k, a), (k2, b) in zip(net.state_dict().items(), other.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert torch.equal(m2.mean, l2.mean) and not m2.mean.requires_grad
    net.eval()
    other.eval()
    x = torch.randn(3, 3)
    assert torch.equal(net(x), other(x))
    with pytest.raises(RuntimeError, match="Missing key"):
        other.load_state_dict({k: v for k, v in state.items() if k != "fc_W"})
    wrong = dict(state)
    wrong["fc_W"] = torch.zeros(4)
    with pytest.raises(RuntimeError, match="fc_W"):
        other.load_state_dict(wrong)


def test_load_state_dict_assign_keeps_objects():
    net, (l1, l2) = _build()
    params = list(net.parameters())
    state = {k: v.double() + 1 for k, v in net.state_dict().items()}
    net.load_state_dict(state, assign=True)
    assert all(a is b for a, b in zip(net.parameters(), params))
    assert l1.W.dtype == torch.float64 and torch.equal(l1.W, state["fc_W"])
    assert l1.W.requires_grad and not l2.mean.requires_grad
    assert param_name(l1.W) == "fc.W" and param_name(l2.mean) == "rm.mean"


def _dense_or_bias(incoming):
    """DenseLayer when the core layer works here, else the local Bias layer."""
    try:
        from lasagne.layers.dense import DenseLayer
        return DenseLayer(incoming, num_units=4, nonlinearity=torch.tanh)
    except (ImportError, AttributeError):
        return Bias(incoming)


# -- torch.compile ---------------------------------------------------------------------------

def _compile_net():
    l_in = InputLayer((None, 4))
    l = Affine(l_in)
    l = RunningMean(l)
    l = Bias(l)
    l = _dense_or_bias(l)
    return Network(l)


def test_compile_fullgraph():
    net = _compile_net().eval()
    x = torch.randn(3, 4)
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), net(x))
    out = compiled(x)
    out.sum().backward()
    assert net.get_params()[0].grad is not None


@pytest.mark.slow
def test_compile_fullgraph_inductor():
    net = _compile_net().eval()
    x = torch.randn(3, 4)
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True)
    torch.testing.assert_close(compiled(x), net(x))


# -- deep graphs ----------------------------------------------------------------------------

def test_5000_layer_chain_under_default_recursion_limit():
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        l = InputLayer((None, 4))
        for _ in range(5000):
            l = _dense_or_bias(l)
        net = Network(l)
        assert len(net.layers) == 5001
        params = list(net.parameters())
        assert len(params) == len(get_all_params(l)) >= 5000
        x = torch.randn(2, 4)
        out = net(x)
        out.sum().backward()
        assert params[0].grad is not None
        net.to(torch.float64)
        assert all(p.dtype == torch.float64 for p in params)
        assert all(a is b for a, b in zip(net.parameters(), params))
        state = {k: v.clone() for k, v in net.state_dict().items()}
        for p in params:
            p.data.zero_()
        net.load_state_dict(state)
        assert all(torch.equal(p, v) for p, v in zip(params, state.values()))
        assert net(x.double()).dtype == torch.float64
        repr(net)
    finally:
        sys.setrecursionlimit(old)
