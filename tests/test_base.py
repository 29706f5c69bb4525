"""Layer, MergeLayer and InputLayer: shapes, parameters, tags and errors."""

import copy
import io

import numpy as np
import pytest
import torch

import lasagne
from lasagne.layers import InputLayer, Layer, MergeLayer

from harness import check_raises
from lasagne.utils import param_name


class Affine(Layer):
    """A small test layer with one weight and one bias."""

    def __init__(self, incoming, W, b, **kwargs):
        super(Affine, self).__init__(incoming, **kwargs)
        n = self.input_shape[-1]
        self.W = self.add_param(W, (n, n), name="W")
        self.b = self.add_param(b, (n,), name="b", regularizable=False, custom=True)


class Pair(MergeLayer):
    def get_output_shape_for(self, input_shapes):
        return input_shapes[0]

    def get_output_for(self, inputs, **kwargs):
        return inputs[0] + inputs[1]


# --- Layer --------------------------------------------------------------------

def test_layer_from_shape_and_from_layer():
    layer = Layer((None, np.int64(3), 4), name="a")
    assert layer.input_layer is None
    assert layer.input_shape == (None, 3, 4)
    assert all(type(s) is int for s in layer.input_shape[1:])
    assert layer.output_shape == (None, 3, 4)
    assert "Layer(name='a')" in repr(layer)
    top = Layer(layer)
    assert top.input_layer is layer and top.input_shape == (None, 3, 4)
    assert top.name is None and top.params == {} and top.get_output_kwargs == []


@pytest.mark.parametrize("shape", [(0, 3), (None, -1), (2.5,), ("a",)])
def test_layer_bad_shape(shape):
    check_raises(ValueError, lambda: Layer(shape, name="x"), "Layer(name='x')", "input_shape")


def test_layer_bad_incoming():
    check_raises(TypeError, lambda: Layer(5), "Layer", "incoming")
    check_raises(TypeError, lambda: InputLayer((None, 3), bogus=1), "bogus")


def test_base_methods_not_implemented():
    check_raises(NotImplementedError, lambda: Layer((2,)).get_output_for(torch.zeros(2)), "Layer")
    check_raises(NotImplementedError, lambda: MergeLayer([(2,)]).output_shape, "MergeLayer")
    check_raises(NotImplementedError, lambda: MergeLayer([(2,)]).get_output_for([]), "MergeLayer")


# --- add_param ----------------------------------------------------------------

def test_add_param_specs_names_and_tags(rng):
    W0 = rng.standard_normal((3, 3))
    layer = Affine((None, 3), W=W0, b=lasagne.init.Constant(2.0), name="aff")
    assert isinstance(layer.W, torch.nn.Parameter) and isinstance(layer.b, torch.nn.Parameter)
    assert param_name(layer.W) == "aff.W" and param_name(layer.b) == "aff.b"
    assert layer.W.dtype == torch.get_default_dtype()
    np.testing.assert_allclose(layer.W.detach().numpy(), W0, rtol=1e-6)
    np.testing.assert_array_equal(layer.b.detach().numpy(), np.full(3, 2.0))
    assert layer.params[layer.W] == {"trainable", "regularizable"}
    assert layer.params[layer.b] == {"trainable", "custom"}
    assert layer.get_params() == [layer.W, layer.b]
    assert layer.get_params(trainable=True) == [layer.W, layer.b]
    assert layer.get_params(regularizable=True) == [layer.W]
    assert layer.get_params(regularizable=False) == [layer.b]
    assert layer.get_params(custom=True, trainable=True) == [layer.b]
    assert layer.get_params(unknown=True) == []
    assert layer.get_params(trainable=False) == []
    unnamed = Affine((None, 3), W=W0, b=np.zeros(3))
    assert param_name(unnamed.W) == "W" and param_name(unnamed.b) == "b"


def test_add_param_tensor_is_shared_and_parameter_is_tied():
    base = torch.zeros(2, 2)
    layer = Affine((None, 2), W=base, b=torch.zeros(2), name="l")
    with torch.no_grad():
        base[0, 0] = 5.0
    assert layer.W[0, 0].item() == 5.0  # shares memory with the given leaf tensor
    other = Affine(layer, W=layer.W, b=layer.b, name="m")
    assert other.W is layer.W and other.b is layer.b
    assert param_name(other.W) == "l.W"  # the shared parameter keeps its first name
    mine = torch.nn.Parameter(torch.ones(2, 2))
    assert Affine((None, 2), W=mine, b=np.zeros(2)).W is mine


def test_add_param_errors_name_layer_and_parameter(rng):
    check_raises(ValueError, lambda: Affine((None, 3), W=np.zeros((3, 2)), b=np.zeros(3),
                                            name="aff"),
                 "Affine(name='aff')", "aff.W", "(3, 3)")
    check_raises(ValueError, lambda: Affine((None, 3), W=np.zeros(3), b=np.zeros(3)),
                 "Affine", "'W'", "dimensions")
    check_raises(ValueError, lambda: Affine((None, 3), W="zeros", b=np.zeros(3)),
                 "Affine", "'W'")
    leaf = torch.zeros(3, requires_grad=True)
    check_raises(TypeError, lambda: Affine((None, 3), W=np.zeros((3, 3)), b=leaf * 2),
                 "Affine", "'b'")
    check_raises(RuntimeError, lambda: Affine((None, 3), W=lambda s: np.zeros((2, 2)),
                                              b=np.zeros(3)), "Affine", "'W'")
    check_raises(ValueError, lambda: Affine((None, None), W=np.zeros((3, 3)), b=np.zeros(3)),
                 "Affine", "'W'")


def test_parameters_copy_save_and_train(rng):
    layer = Affine((None, 3), W=rng.standard_normal((3, 3)), b=np.zeros(3), name="aff")
    clone = copy.deepcopy(layer.W)
    assert clone is not layer.W  # (torch's Parameter.__deepcopy__ drops the name)
    assert torch.equal(clone, layer.W)
    buf = io.BytesIO()
    torch.save({"W": layer.W}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["W"]
    assert isinstance(loaded, torch.nn.Parameter) and torch.equal(loaded, layer.W)
    opt = torch.optim.SGD(layer.get_params(trainable=True), lr=0.1)
    (layer.W.sum() + layer.b.sum()).backward()
    opt.step()
    np.testing.assert_allclose(layer.b.detach().numpy(), np.full(3, -0.1), rtol=1e-6)
    assert param_name(layer.W) == "aff.W"


# --- MergeLayer ---------------------------------------------------------------

def test_merge_layer_inputs():
    l_in = InputLayer((None, 3))
    merge = Pair([l_in, (None, 3)], name="p")
    assert merge.input_layers == [l_in, None]
    assert merge.input_shapes == [(None, 3), (None, 3)]
    assert merge.output_shape == (None, 3)
    assert not hasattr(merge, "input_layer")
    check_raises(ValueError, lambda: Pair([l_in, (None, 0)], name="p"), "Pair(name='p')")


# --- InputLayer ---------------------------------------------------------------

def test_input_layer():
    l_in = InputLayer((None, 3, 4), name="in")
    assert l_in.shape == l_in.output_shape == (None, 3, 4)
    assert l_in.input_layer is None and l_in.input_var is None and l_in.params == {}
    var = torch.zeros(2, 3, 4)
    assert InputLayer((None, 3, 4), input_var=var).input_var is var


def test_input_layer_errors():
    check_raises(ValueError, lambda: InputLayer((None, 0), name="in"), "InputLayer(name='in')")
    check_raises(TypeError, lambda: InputLayer((None, 3), input_var=np.zeros((2, 3))),
                 "InputLayer", "input_var")
    check_raises(ValueError, lambda: InputLayer((None, 3), input_var=torch.zeros(2)),
                 "InputLayer", "input_var")
