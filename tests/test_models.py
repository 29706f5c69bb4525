"""lasagne.models on CPU: the Model Zoo networks' layer names, layer order,
parameter order and counts, their outputs against plain ``torch.nn.functional``
references written here, and the torchvision state-dict converters.

The architectures are described again in this file, independently of
lasagne/models: the key names and shapes of torchvision's state dicts, and
the order of the Model Zoo's parameter lists (from its ``build_model()``
code: layers in ``get_all_layers`` order, each layer's parameters in
``add_param`` order).
"""

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lasagne.layers import (get_all_layers, get_all_params, get_all_param_values, get_output,
                            get_output_shape, set_all_param_values, count_params,
                            DenseLayer, DropoutLayer, InputLayer, NonlinearityLayer,
                            ElemwiseSumLayer, GlobalPoolLayer, PadLayer, Pool2DLayer,
                            Conv2DLayer)
from lasagne.layers.dnn import (Conv2DDNNLayer, Conv3DDNNLayer, MaxPool2DDNNLayer,
                                MaxPool3DDNNLayer, BatchNormDNNLayer)
from lasagne.models import (build_vgg16, build_resnet50, build_c3d, vgg16_from_torchvision,
                            resnet50_from_torchvision, load_state_dict,
                            torchvision_vgg16_mapping, torchvision_resnet50_mapping)
from lasagne.utils import param_name


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def rel_err(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / b.abs().max()).item()


def names(layers):
    return [l.name for l in layers]


def modelzoo_style_values(layer, rng):
    """A list of new values for a network's parameters, in its parameter
    order, as a Model Zoo file holds them: the negated initial weights
    (random, distinct for every parameter, and cheaper than drawing tens of
    millions of new numbers) and random biases."""
    return [-p.detach().numpy() if p.ndim > 1 else 0.1 * rng.standard_normal(p.shape)
            .astype(p.detach().numpy().dtype) for p in get_all_params(layer)]


# --------------------------------------------------------------------------
# VGG-16: torchvision's layout (cfg "D") and a reference forward
# --------------------------------------------------------------------------

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]
VGG16_LAYER_NAMES = [
    "input", "conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2",
    "conv3_1", "conv3_2", "conv3_3", "pool3", "conv4_1", "conv4_2", "conv4_3", "pool4",
    "conv5_1", "conv5_2", "conv5_3", "pool5", "fc6", "fc6_dropout", "fc7", "fc7_dropout",
    "fc8", "prob"]


def vgg16_conv_layout():
    """[(torchvision features index, in, out)] as torchvision numbers them:
    each conv takes two indices (conv, ReLU), each max pool one."""
    out, index, channels = [], 0, 3
    for v in VGG16_CFG:
        if v == "M":
            index += 1
        else:
            out.append((index, channels, v))
            channels = v
            index += 2
    return out


def tv_vgg16_state_dict_from(values, gen):
    """A torchvision-style VGG-16 state dict holding the given Model Zoo
    order values (conv W, b, ..., dense W (in, out), b), with random biases."""
    values = iter(values)
    sd = {}
    for index, cin, cout in vgg16_conv_layout():
        sd["features.%d.weight" % index] = next(values).clone()
        sd["features.%d.bias" % index] = next(values).clone() + 0.1 * torch.randn(
            cout, generator=gen)
    for index in (0, 3, 6):
        sd["classifier.%d.weight" % index] = next(values).t().clone()
        bias = next(values)
        sd["classifier.%d.bias" % index] = bias.clone() + 0.1 * torch.randn(
            bias.shape, generator=gen)
    return sd


def ref_vgg16_logits(x, sd):
    """torchvision's VGG-16 in eval mode, written with functional ops."""
    convs = iter(vgg16_conv_layout())
    for v in VGG16_CFG:
        if v == "M":
            x = F.max_pool2d(x, 2, 2)
        else:
            index = next(convs)[0]
            x = F.relu(F.conv2d(x, sd["features.%d.weight" % index],
                                sd["features.%d.bias" % index], padding=1))
    x = F.adaptive_avg_pool2d(x, (7, 7)).flatten(1)
    x = F.relu(F.linear(x, sd["classifier.0.weight"], sd["classifier.0.bias"]))
    x = F.relu(F.linear(x, sd["classifier.3.weight"], sd["classifier.3.bias"]))
    return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])


def modelzoo_vgg16_shapes(spatial=224):
    shapes = []
    for _, cin, cout in vgg16_conv_layout():
        shapes += [(cout, cin, 3, 3), (cout,)]
    flat = 512 * (spatial // 32) ** 2
    for cin, cout in ((flat, 4096), (4096, 4096), (4096, 1000)):
        shapes += [(cin, cout), (cout,)]
    return shapes


@pytest.fixture(scope="module")
def vgg16():
    return build_vgg16()


@pytest.fixture(scope="module")
def tv_vgg16_sd(vgg16):
    """Random values: the Glorot initialisation of a fresh VGG-16 (generating
    138M numbers again would be slow), plus random biases."""
    gen = torch.Generator().manual_seed(np.random.randint(2 ** 31))
    return tv_vgg16_state_dict_from([p.detach() for p in get_all_params(vgg16["prob"])], gen)


@pytest.fixture(scope="module")
def vgg16_small():
    with default_dtype(torch.float64):
        return build_vgg16(input_shape=(None, 3, 32, 32))


def test_vgg16_layers_names_order_and_types(vgg16):
    layers = get_all_layers(vgg16["prob"])
    assert names(layers) == VGG16_LAYER_NAMES
    assert list(vgg16) == VGG16_LAYER_NAMES
    assert all(vgg16[l.name] is l for l in layers)
    for layer in layers:
        if layer.name.startswith("conv"):
            assert type(layer) is Conv2DDNNLayer
            assert layer.flip_filters is False
            assert tuple(layer.filter_size) == (3, 3) and tuple(layer.pad) == (1, 1)
            assert tuple(layer.stride) == (1, 1)
        elif layer.name.startswith("pool"):
            assert type(layer) is MaxPool2DDNNLayer
            assert tuple(layer.pool_size) == (2, 2) and tuple(layer.stride) == (2, 2)
    assert isinstance(vgg16["fc6_dropout"], DropoutLayer) and vgg16["fc6_dropout"].p == 0.5
    assert isinstance(vgg16["fc8"], DenseLayer)
    assert isinstance(vgg16["prob"], NonlinearityLayer)
    assert vgg16["input"].output_shape == (None, 3, 224, 224)
    assert vgg16["pool5"].output_shape == (None, 512, 7, 7)
    assert vgg16["prob"].output_shape == (None, 1000)


def test_vgg16_parameters_count_and_order(vgg16):
    params = get_all_params(vgg16["prob"])
    assert count_params(vgg16["prob"]) == 138357544
    assert count_params(vgg16["prob"], trainable=True) == 138357544
    assert len(params) == 32
    assert param_name(params[0]) == "conv1_1.W" and param_name(params[1]) == "conv1_1.b"
    assert param_name(params[-2]) == "fc8.W" and param_name(params[-1]) == "fc8.b"
    assert [tuple(p.shape) for p in params] == modelzoo_vgg16_shapes()


def test_vgg16_small_loads_modelzoo_list_in_order_and_matches_reference(vgg16_small, rng):
    # reduced input: same parameter order, fc6 has 512 inputs
    net = vgg16_small
    values = modelzoo_style_values(net["prob"], rng)
    assert [v.shape for v in values] == modelzoo_vgg16_shapes(32)
    set_all_param_values(net["prob"], values)
    layers_in_order = [n for n in VGG16_LAYER_NAMES if n.startswith(("conv", "fc"))
                       and not n.endswith("dropout")]
    for i, name in enumerate(layers_in_order):
        np.testing.assert_array_equal(net[name].W.detach().numpy(), values[2 * i])
        np.testing.assert_array_equal(net[name].b.detach().numpy(), values[2 * i + 1])
    back = get_all_param_values(net["prob"])                   # the round trip
    assert len(back) == 32 and all(np.array_equal(a, b) for a, b in zip(back, values))

    x = torch.from_numpy(rng.standard_normal((2, 3, 32, 32)))
    out = get_output([net["fc8"], net["prob"]], x, deterministic=True)
    W = [torch.from_numpy(v) for v in values]
    ref = x
    convs = iter(range(13))
    for v in VGG16_CFG:
        if v == "M":
            ref = F.max_pool2d(ref, 2)
        else:
            i = next(convs)
            ref = F.relu(F.conv2d(ref, W[2 * i], W[2 * i + 1], padding=1))
    ref = F.relu(ref.flatten(1) @ W[26] + W[27])
    ref = F.relu(ref @ W[28] + W[29])
    ref = ref @ W[30] + W[31]
    assert rel_err(out[0], ref) < 1e-10
    assert rel_err(out[1], torch.softmax(ref, 1)) < 1e-10


def test_vgg16_from_torchvision_matches_reference(vgg16, tv_vgg16_sd, rng):
    assert len(tv_vgg16_sd) == 32
    assert set(tv_vgg16_sd) == set(k for k, _, _ in torchvision_vgg16_mapping())
    with torch.no_grad():
        for p in get_all_params(vgg16["prob"]):
            p.zero_()                      # every value must come from the state dict
    assert vgg16_from_torchvision(tv_vgg16_sd, vgg16) is vgg16
    np.testing.assert_array_equal(vgg16["fc6"].W.detach().numpy(),
                                  tv_vgg16_sd["classifier.0.weight"].numpy().T)
    assert tv_vgg16_sd["classifier.0.weight"].data_ptr() != vgg16["fc6"].W.data_ptr()
    x = torch.from_numpy(rng.standard_normal((1, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        logits = get_output(vgg16["fc8"], x, deterministic=True)
        ref = ref_vgg16_logits(x, tv_vgg16_sd)
    assert rel_err(logits, ref) < 1e-5


def test_vgg16_from_torchvision_shape_mismatch_names_key_and_parameter(tv_vgg16_sd,
                                                                      vgg16_small):
    net = vgg16_small                             # fc6 has 512 inputs, not 25088
    before = net["conv1_1"].W.detach().clone()
    with pytest.raises(ValueError) as info:
        vgg16_from_torchvision(tv_vgg16_sd, net)
    msg = str(info.value)
    assert "classifier.0.weight" in msg and "fc6.W" in msg and "(512, 4096)" in msg
    assert torch.equal(net["conv1_1"].W.detach(), before)     # nothing written


# --------------------------------------------------------------------------
# ResNet-50: torchvision's layout, the Model Zoo's order, a reference forward
# --------------------------------------------------------------------------

# (torchvision layer, our stage, blocks, width, stride)
RESNET50_STAGES = [(1, 2, 3, 64, 1), (2, 3, 4, 128, 2), (3, 4, 6, 256, 2), (4, 5, 3, 512, 2)]


def tv_resnet50_state_dict(gen, dtype=torch.float64, conv1_bias=False):
    sd = {}

    def conv(key, cout, cin, k):
        sd[key] = torch.randn(cout, cin, k, k, generator=gen, dtype=dtype) * math.sqrt(
            2.0 / (cin * k * k))

    def bn(key, c):
        sd[key + ".weight"] = 0.5 + torch.rand(c, generator=gen, dtype=dtype)
        sd[key + ".bias"] = 0.1 * torch.randn(c, generator=gen, dtype=dtype)
        sd[key + ".running_mean"] = 0.1 * torch.randn(c, generator=gen, dtype=dtype)
        sd[key + ".running_var"] = 0.5 + 1.5 * torch.rand(c, generator=gen, dtype=dtype)
        sd[key + ".num_batches_tracked"] = torch.tensor(0)

    conv("conv1.weight", 64, 3, 7)
    if conv1_bias:
        sd["conv1.bias"] = 0.1 * torch.randn(64, generator=gen, dtype=dtype)
    bn("bn1", 64)
    cin = 64
    for layer, _, blocks, width, _ in RESNET50_STAGES:
        for b in range(blocks):
            p = "layer%d.%d." % (layer, b)
            conv(p + "conv1.weight", width, cin, 1)
            bn(p + "bn1", width)
            conv(p + "conv2.weight", width, width, 3)
            bn(p + "bn2", width)
            conv(p + "conv3.weight", 4 * width, width, 1)
            bn(p + "bn3", 4 * width)
            if b == 0:
                conv(p + "downsample.0.weight", 4 * width, cin, 1)
                bn(p + "downsample.1", 4 * width)
            cin = 4 * width
    sd["fc.weight"] = torch.randn(1000, 2048, generator=gen, dtype=dtype) / math.sqrt(2048)
    sd["fc.bias"] = 0.1 * torch.randn(1000, generator=gen, dtype=dtype)
    return sd


def ref_resnet50_logits(x, sd, stride_in_3x3, caffe_pool1, eps):
    """ResNet-50 in eval mode with functional ops: torchvision's v1.5
    (``stride_in_3x3=True``, max pool padded by 1) or MSRA's Caffe model
    (stride in the first 1x1, max pool without pad rounding up)."""
    def bn(x, key):
        return F.batch_norm(x, sd[key + ".running_mean"], sd[key + ".running_var"],
                            sd[key + ".weight"], sd[key + ".bias"], False, 0.0, eps)

    x = F.relu(bn(F.conv2d(x, sd["conv1.weight"], sd.get("conv1.bias"), stride=2, padding=3),
                  "bn1"))
    if caffe_pool1:
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    else:
        x = F.max_pool2d(x, 3, 2, padding=1)
    for layer, _, blocks, _, stride in RESNET50_STAGES:
        for b in range(blocks):
            p = "layer%d.%d." % (layer, b)
            s = stride if b == 0 else 1
            s1, s3 = (1, s) if stride_in_3x3 else (s, 1)
            y = F.relu(bn(F.conv2d(x, sd[p + "conv1.weight"], stride=s1), p + "bn1"))
            y = F.relu(bn(F.conv2d(y, sd[p + "conv2.weight"], stride=s3, padding=1), p + "bn2"))
            y = bn(F.conv2d(y, sd[p + "conv3.weight"]), p + "bn3")
            if b == 0:
                x = bn(F.conv2d(x, sd[p + "downsample.0.weight"], stride=s), p + "downsample.1")
            x = F.relu(x + y)
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


def modelzoo_resnet50_order(sd, eps):
    """(our parameter name, value) in the Model Zoo's order, from a
    torchvision-style state dict (with ``conv1.bias``)."""
    out = []

    def bn(ours, key):
        out.extend([(ours + ".beta", sd[key + ".bias"]), (ours + ".gamma", sd[key + ".weight"]),
                    (ours + ".mean", sd[key + ".running_mean"]),
                    (ours + ".inv_std", 1 / torch.sqrt(sd[key + ".running_var"] + eps))])

    out += [("conv1.W", sd["conv1.weight"]), ("conv1.b", sd["conv1.bias"])]
    bn("bn_conv1", "bn1")
    for layer, stage, blocks, _, _ in RESNET50_STAGES:
        for b in range(blocks):
            p, ix = "layer%d.%d." % (layer, b), "%d%s" % (stage, "abcdef"[b])
            if b == 0:       # the shortcut is the ElemwiseSumLayer's first input
                out.append(("res%s_branch1.W" % ix, sd[p + "downsample.0.weight"]))
                bn("bn%s_branch1" % ix, p + "downsample.1")
            for n, branch in ((1, "2a"), (2, "2b"), (3, "2c")):
                out.append(("res%s_branch%s.W" % (ix, branch), sd[p + "conv%d.weight" % n]))
                bn("bn%s_branch%s" % (ix, branch), p + "bn%d" % n)
    out += [("fc1000.W", sd["fc.weight"].t()), ("fc1000.b", sd["fc.bias"])]
    return out


def resnet50_layer_names():
    out = ["input", "conv1", "bn_conv1", "conv1_relu", "pool1"]
    for _, stage, blocks, _, _ in RESNET50_STAGES:
        for b in range(blocks):
            ix = "%d%s" % (stage, "abcdef"[b])
            if b == 0:
                out += ["res%s_branch1" % ix, "bn%s_branch1" % ix]
            for branch in ("2a", "2b", "2c"):
                out += ["res%s_branch%s" % (ix, branch), "bn%s_branch%s" % (ix, branch)]
                if branch != "2c":
                    out.append("res%s_branch%s_relu" % (ix, branch))
            out += ["res%s" % ix, "res%s_relu" % ix]
    return out + ["pool5", "fc1000", "prob"]


@pytest.fixture(scope="module")
def resnet_caffe():
    with default_dtype(torch.float64):
        return build_resnet50()


@pytest.fixture(scope="module")
def resnet_v15():
    with default_dtype(torch.float64):
        return build_resnet50(variant="v1.5")


@pytest.fixture(scope="module")
def tv_resnet_sd():
    """A torchvision-style ResNet-50 state dict (float64), plus the Caffe
    model's conv1 bias under ``conv1.bias``."""
    return tv_resnet50_state_dict(torch.Generator().manual_seed(np.random.randint(2 ** 31)),
                                  conv1_bias=True)


def without(sd, *suffixes):
    return {k: v for k, v in sd.items() if not k.endswith(suffixes)}


def test_resnet50_layers_names_order_and_types(resnet_caffe):
    layers = get_all_layers(resnet_caffe["prob"])
    assert len(layers) == 176
    assert names(layers) == resnet50_layer_names()
    assert set(resnet_caffe) == set(resnet50_layer_names())
    assert all(resnet_caffe[l.name] is l for l in layers)
    for layer in layers:
        if isinstance(layer, Conv2DDNNLayer):
            assert layer.flip_filters is False
            assert (layer.b is None) == (layer.name != "conv1")
            assert layer.nonlinearity is None or layer.nonlinearity(torch.tensor(-1.0)) == -1
        if layer.name.startswith("bn"):
            assert type(layer) is BatchNormDNNLayer
        if layer.name.startswith("res") and len(layer.name) == 5:
            assert isinstance(layer, ElemwiseSumLayer)
    conv1 = resnet_caffe["conv1"]
    assert (tuple(conv1.filter_size), tuple(conv1.stride), tuple(conv1.pad)) == \
        ((7, 7), (2, 2), (3, 3))
    for stage, stride in ((2, 1), (3, 2), (4, 2), (5, 2)):      # Caffe: stride in the 1x1
        assert tuple(resnet_caffe["res%da_branch2a" % stage].stride) == (stride, stride)
        assert tuple(resnet_caffe["res%da_branch2b" % stage].stride) == (1, 1)
        assert tuple(resnet_caffe["res%da_branch1" % stage].stride) == (stride, stride)
    assert isinstance(resnet_caffe["pool1"], Pool2DLayer)
    assert resnet_caffe["pool1"].ignore_border is False
    shapes = {n: resnet_caffe[n].output_shape for n in
              ("conv1", "pool1", "res2c_relu", "res3d_relu", "res4f_relu", "res5c_relu",
               "pool5", "prob")}
    assert shapes == {"conv1": (None, 64, 112, 112), "pool1": (None, 64, 56, 56),
                      "res2c_relu": (None, 256, 56, 56), "res3d_relu": (None, 512, 28, 28),
                      "res4f_relu": (None, 1024, 14, 14), "res5c_relu": (None, 2048, 7, 7),
                      "pool5": (None, 2048, 1, 1), "prob": (None, 1000)}
    assert get_output_shape(resnet_caffe["res5c_relu"], (1, 3, 64, 64)) == (1, 2048, 2, 2)
    assert get_output_shape(resnet_caffe["prob"], (1, 3, 64, 64)) == (1, 1000)


def test_resnet50_parameter_count_and_order(resnet_caffe, tv_resnet_sd):
    # torchvision's ResNet-50 has 25,557,032 parameters (batch-norm weight
    # and bias included, no conv bias); the Model Zoo adds conv1's bias (64)
    # and stores the 53 batch norms' mean and inv_std (2 * 26,560).
    bn_channels = 64 + sum(
        (blocks * 6 * width) + 4 * width               # 2a, 2b, 2c per block + branch1
        for _, _, blocks, width, _ in RESNET50_STAGES)
    assert bn_channels == 26560
    net = resnet_caffe["prob"]
    assert count_params(net) == 25557032 + 64 + 2 * bn_channels == 25610216
    assert count_params(net, trainable=True) == 25557096
    params = get_all_params(net)
    expected = modelzoo_resnet50_order(tv_resnet_sd, 1e-4)
    assert len(params) == len(expected) == 268
    assert [param_name(p) for p in params] == [n for n, _ in expected]
    assert [tuple(p.shape) for p in params] == [tuple(v.shape) for _, v in expected]


def test_resnet50_caffe_loads_modelzoo_values_and_matches_reference(resnet_caffe, tv_resnet_sd,
                                                                     rng):
    eps = 1e-4
    sd = tv_resnet_sd
    values = [v.numpy() for _, v in modelzoo_resnet50_order(sd, eps)]
    set_all_param_values(resnet_caffe["prob"], values)
    x = torch.from_numpy(rng.standard_normal((1, 3, 64, 64)))
    logits, prob = get_output([resnet_caffe["fc1000"], resnet_caffe["prob"]], x,
                              deterministic=True)
    ref = ref_resnet50_logits(x, sd, stride_in_3x3=False, caffe_pool1=True, eps=eps)
    assert logits.shape == (1, 1000)
    assert rel_err(logits, ref) < 1e-10
    assert rel_err(prob, torch.softmax(ref, 1)) < 1e-10


def test_resnet50_v15_layout(resnet_v15, resnet_caffe):
    assert names(get_all_layers(resnet_v15["prob"])) == resnet50_layer_names()
    assert resnet_v15["conv1"].b is None
    for stage, stride in ((2, 1), (3, 2), (4, 2), (5, 2)):      # torchvision: stride in the 3x3
        assert tuple(resnet_v15["res%da_branch2a" % stage].stride) == (1, 1)
        assert tuple(resnet_v15["res%da_branch2b" % stage].stride) == (stride, stride)
    assert type(resnet_v15["pool1"]) is MaxPool2DDNNLayer
    assert tuple(resnet_v15["pool1"].pad) == (1, 1)
    assert isinstance(resnet_v15["pool5"], GlobalPoolLayer)
    assert resnet_v15["bn_conv1"].epsilon == 1e-5
    assert count_params(resnet_v15["prob"]) == count_params(resnet_caffe["prob"]) - 64
    caffe_order = [param_name(p) for p in get_all_params(resnet_caffe["prob"])]
    assert [param_name(p) for p in get_all_params(resnet_v15["prob"])] == \
        [n for n in caffe_order if n != "conv1.b"]
    # every input size, as torchvision's adaptive pool
    assert get_output_shape(resnet_v15["prob"], (2, 3, 100, 80)) == (2, 1000)
    with pytest.raises(ValueError, match="variant"):
        build_resnet50(variant="v2")


def test_resnet50_from_torchvision_matches_reference(resnet_v15, tv_resnet_sd, rng):
    sd = without(tv_resnet_sd, "conv1.bias")
    assert len(sd) == 320
    assert set(sd) == set(k for k, _, _ in torchvision_resnet50_mapping())
    assert resnet50_from_torchvision(sd, resnet_v15) is resnet_v15
    np.testing.assert_allclose(resnet_v15["bn3a_branch1"].inv_std.detach().numpy(),
                               1 / np.sqrt(sd["layer2.0.downsample.1.running_var"].numpy()
                                           + 1e-5), rtol=1e-15)
    x = torch.from_numpy(rng.standard_normal((1, 3, 64, 64)))
    logits = get_output(resnet_v15["fc1000"], x, deterministic=True)
    ref = ref_resnet50_logits(x, sd, stride_in_3x3=True, caffe_pool1=False, eps=1e-5)
    assert rel_err(logits, ref) < 1e-10


def test_resnet50_from_torchvision_into_output_layer_then_as_network_module(resnet_v15,
                                                                            tv_resnet_sd, rng):
    # other values, no num_batches_tracked (it may be absent), the output
    # layer standing for the network; run through lasagne.network.Network
    sd = {k: 1.25 * v for k, v in without(tv_resnet_sd, "conv1.bias",
                                             "num_batches_tracked").items()}
    resnet50_from_torchvision(sd, resnet_v15["prob"])
    network = pytest.importorskip("lasagne.network")
    model = network.Network(resnet_v15["fc1000"]).eval()
    assert sum(p.numel() for p in model.parameters()) == count_params(resnet_v15["fc1000"])
    x = torch.from_numpy(rng.standard_normal((2, 3, 32, 40)))
    with torch.no_grad():
        out = model(x)
    ref = ref_resnet50_logits(x, sd, stride_in_3x3=True, caffe_pool1=False, eps=1e-5)
    assert rel_err(out, ref) < 1e-10


def test_resnet50_from_torchvision_errors_leave_the_net_untouched(resnet_v15, resnet_caffe,
                                                                   tv_resnet_sd):
    sd = without(tv_resnet_sd, "conv1.bias")
    params = get_all_params(resnet_v15["prob"])
    before = [float(p.detach().sum()) for p in params]

    with pytest.raises(ValueError, match=r"variant='v1.5'"):
        resnet50_from_torchvision(sd, resnet_caffe)
    with pytest.raises(ValueError, match=r"unexpected key\(s\): conv1.bias"):
        resnet50_from_torchvision(tv_resnet_sd, resnet_v15)
    with pytest.raises(ValueError, match=r"missing key\(s\): fc.bias"):
        resnet50_from_torchvision(without(sd, "fc.bias"), resnet_v15)
    with pytest.raises(ValueError, match="module."):
        resnet50_from_torchvision({"module." + k: v for k, v in sd.items()}, resnet_v15)
    bad = dict(sd)
    bad["layer3.2.conv2.weight"] = bad["layer3.2.conv2.weight"][:, :, :2]
    with pytest.raises(ValueError, match=r"layer3.2.conv2.weight.*res4c_branch2b.W"):
        resnet50_from_torchvision(bad, resnet_v15)
    with pytest.raises(TypeError, match="layer1.0.bn1.bias"):
        resnet50_from_torchvision(dict(sd, **{"layer1.0.bn1.bias": [0.0] * 64}), resnet_v15)
    assert [float(p.detach().sum()) for p in params] == before


# --------------------------------------------------------------------------
# load_state_dict: the rules on small layers
# --------------------------------------------------------------------------

def test_conv_rule_flips_kernels_for_flip_filters_true_layers(rng):
    with default_dtype(torch.float64):
        l_in = InputLayer((None, 2, 7, 6))
        flip = Conv2DLayer(l_in, 3, (3, 2), flip_filters=True, nonlinearity=None, name="flip")
        corr = Conv2DDNNLayer(l_in, 3, (3, 2), flip_filters=False, nonlinearity=None,
                              name="corr")
        fc = DenseLayer(corr, 4, nonlinearity=None, name="fc")
    conv = torch.nn.Conv2d(2, 3, (3, 2)).double()
    linear = torch.nn.Linear(3 * 5 * 5, 4).double()
    sd = {"c.weight": conv.weight.detach(), "c.bias": conv.bias.detach(),
          "d.weight": conv.weight.detach().numpy(), "d.bias": conv.bias.detach().numpy(),
          "l.weight": linear.weight.detach(), "l.bias": linear.bias.detach()}
    mapping = [("c.weight", "flip.W", "conv"), ("c.bias", "flip.b", "copy"),
               ("d.weight", "corr.W", "conv"), ("d.bias", "corr.b", "copy"),
               ("l.weight", "fc.W", "dense"), ("l.bias", "fc.b", "copy")]
    layers = load_state_dict({"flip": flip, "corr": corr, "fc": fc}, sd, mapping)
    assert set(layers) == {"flip", "corr", "fc"}
    assert torch.equal(flip.W.detach(), conv.weight.detach().flip(2, 3))
    assert torch.equal(corr.W.detach(), conv.weight.detach())
    x = torch.from_numpy(rng.standard_normal((2, 2, 7, 6)))
    with torch.no_grad():
        expected = conv(x)
        expected_fc = linear(expected.flatten(1))
    got_flip, got_corr, got_fc = get_output([flip, corr, fc], x)
    assert rel_err(got_flip, expected) < 1e-12
    assert rel_err(got_corr, expected) < 1e-12
    assert rel_err(got_fc, expected_fc) < 1e-12


def test_load_state_dict_refuses_incomplete_or_repeated_tables():
    l_in = InputLayer((None, 3))
    fc = DenseLayer(l_in, 2, name="fc")
    sd = {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"no state-dict key fills them\): fc.b"):
        load_state_dict(fc, {"weight": sd["weight"]}, [("weight", "fc.W", "dense")])
    with pytest.raises(ValueError, match="more than once"):
        load_state_dict(fc, sd, [("weight", "fc.W", "dense"), ("weight", "fc.b", "copy")])
    with pytest.raises(ValueError, match="filled twice"):
        load_state_dict(fc, {"weight": sd["weight"], "w2": sd["weight"], "bias": sd["bias"]},
                        [("weight", "fc.W", "dense"), ("w2", "fc.W", "dense"),
                         ("bias", "fc.b", "copy")])
    with pytest.raises(ValueError, match="no parameter fc.gamma"):
        load_state_dict(fc, sd, [("weight", "fc.W", "dense"), ("bias", "fc.gamma", "copy")])
    with pytest.raises(ValueError, match="rule"):
        load_state_dict(fc, sd, [("weight", "fc.W", "transpose")])
    with pytest.raises(TypeError, match="dict of layers"):
        load_state_dict([fc], sd, [("weight", "fc.W", "dense"), ("bias", "fc.b", "copy")])


# --------------------------------------------------------------------------
# C3D
# --------------------------------------------------------------------------

C3D_CONVS = [("conv1a", 3, 64), ("conv2a", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
             ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512),
             ("conv5b", 512, 512)]
C3D_LAYER_NAMES = ["input", "conv1a", "pool1", "conv2a", "pool2", "conv3a", "conv3b", "pool3",
                   "conv4a", "conv4b", "pool4", "conv5a", "conv5b", "pad", "pool5",
                   "fc6-1", "fc7-1", "fc8-1", "prob"]


def c3d_shapes(fc6_inputs):
    shapes = []
    for _, cin, cout in C3D_CONVS:
        shapes += [(cout, cin, 3, 3, 3), (cout,)]
    for cin, cout in ((fc6_inputs, 4096), (4096, 4096), (4096, 487)):
        shapes += [(cin, cout), (cout,)]
    return shapes


def test_c3d_layers_parameters_and_shapes():
    net = build_c3d()
    layers = get_all_layers(net["prob"])
    assert names(layers) == C3D_LAYER_NAMES == list(net)
    for layer in layers:
        if layer.name.startswith("conv"):
            assert type(layer) is Conv3DDNNLayer and layer.flip_filters is False
            assert tuple(layer.filter_size) == (3, 3, 3) and tuple(layer.pad) == (1, 1, 1)
        if layer.name.startswith("pool"):
            assert type(layer) is MaxPool3DDNNLayer
    assert tuple(net["pool1"].pool_size) == (1, 2, 2) == tuple(net["pool1"].stride)
    assert tuple(net["pool5"].pool_size) == (2, 2, 2) == tuple(net["pool5"].stride)
    assert isinstance(net["pad"], PadLayer)
    assert [net[n].output_shape for n in ("conv1a", "pool1", "pool4", "pad", "pool5",
                                          "fc6-1", "prob")] == \
        [(None, 64, 16, 112, 112), (None, 64, 16, 56, 56), (None, 512, 2, 7, 7),
         (None, 512, 2, 8, 8), (None, 512, 1, 4, 4), (None, 4096), (None, 487)]
    params = get_all_params(net["prob"])
    assert [tuple(p.shape) for p in params] == c3d_shapes(8192)
    assert param_name(params[0]) == "conv1a.W" and param_name(params[-1]) == "fc8-1.b"
    assert count_params(net["prob"]) == 79991015 == sum(int(np.prod(s))
                                                        for s in c3d_shapes(8192))


def test_c3d_small_clip_loads_in_order_and_matches_reference(rng):
    net = build_c3d(input_shape=(None, 3, 16, 16, 16))             # float32
    values = modelzoo_style_values(net["prob"], rng)
    assert [v.shape for v in values] == c3d_shapes(512)
    set_all_param_values(net["prob"], values)
    for i, (name, _, _) in enumerate(C3D_CONVS):
        assert np.array_equal(net[name].W.detach().numpy(), values[2 * i])
    for i, name in enumerate(("fc6-1", "fc7-1", "fc8-1")):
        assert np.array_equal(net[name].b.detach().numpy(), values[17 + 2 * i])
    x = torch.from_numpy(rng.standard_normal((2, 3, 16, 16, 16)).astype(np.float32))
    with torch.no_grad():
        logits, prob = get_output([net["fc8-1"], net["prob"]], x)
    t = [torch.from_numpy(v) for v in values]
    ref = x
    for i, (name, _, _) in enumerate(C3D_CONVS):
        ref = F.relu(F.conv3d(ref, t[2 * i], t[2 * i + 1], padding=1))
        if name in ("conv1a",):
            ref = F.max_pool3d(ref, (1, 2, 2))
        elif name in ("conv2a", "conv3b", "conv4b"):
            ref = F.max_pool3d(ref, 2)
        elif name == "conv5b":
            ref = F.max_pool3d(F.pad(ref, (0, 1, 0, 1)), 2)
    ref = F.relu(ref.flatten(1) @ t[16] + t[17])
    ref = F.relu(ref @ t[18] + t[19])
    ref = ref @ t[20] + t[21]
    assert logits.shape == (2, 487)
    assert rel_err(logits, ref) < 1e-5
    assert rel_err(prob, torch.softmax(ref, 1)) < 1e-5
