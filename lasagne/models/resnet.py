"""ResNet-50 (He et al., "Deep Residual Learning for Image Recognition",
2015) in the Lasagne Model Zoo's layout, with a variant laid out like
torchvision's ResNet-50 v1.5."""

from ..layers import (InputLayer, DenseLayer, NonlinearityLayer, ElemwiseSumLayer,
                      GlobalPoolLayer, Pool2DLayer)
from ..layers.dnn import Conv2DDNNLayer, MaxPool2DDNNLayer, BatchNormDNNLayer
from ..nonlinearities import rectify, softmax

__all__ = ["build_resnet50", "RESNET50_VARIANTS"]

RESNET50_VARIANTS = ("caffe", "v1.5")

# (stage, blocks, bottleneck width, stride of the stage's first block)
_RESNET50_STAGES = ((2, "abc", 64, 1), (3, "abcd", 128, 2), (4, "abcdef", 256, 2),
                    (5, "abc", 512, 2))


def _conv_bn(net, incoming, conv, bn, relu, num_filters, filter_size, stride, pad, epsilon,
             bias=False):
    """conv (no nonlinearity) -> batch norm -> optional ReLU, named as in the
    Caffe model; returns the last layer."""
    kwargs = {} if bias else {"b": None}
    net[conv] = Conv2DDNNLayer(incoming, num_filters, filter_size, stride=stride, pad=pad,
                               nonlinearity=None, flip_filters=False, name=conv, **kwargs)
    net[bn] = BatchNormDNNLayer(net[conv], epsilon=epsilon, name=bn)
    if relu is None:
        return net[bn]
    net[relu] = NonlinearityLayer(net[bn], rectify, name=relu)
    return net[relu]


def _bottleneck(net, incoming, ix, width, stride, projection, stride_in_3x3, epsilon):
    """One residual block ``res<ix>``: 1x1 (width) -> 3x3 (width) -> 1x1
    (4 * width) on the right branch, the identity or a strided 1x1
    projection on the left, summed and rectified."""
    s1, s3 = (1, stride) if stride_in_3x3 else (stride, 1)
    right = _conv_bn(net, incoming, "res%s_branch2a" % ix, "bn%s_branch2a" % ix,
                     "res%s_branch2a_relu" % ix, width, 1, s1, 0, epsilon)
    right = _conv_bn(net, right, "res%s_branch2b" % ix, "bn%s_branch2b" % ix,
                     "res%s_branch2b_relu" % ix, width, 3, s3, 1, epsilon)
    right = _conv_bn(net, right, "res%s_branch2c" % ix, "bn%s_branch2c" % ix, None,
                     4 * width, 1, 1, 0, epsilon)
    left = incoming
    if projection:
        left = _conv_bn(net, incoming, "res%s_branch1" % ix, "bn%s_branch1" % ix, None,
                        4 * width, 1, stride, 0, epsilon)
    # left first: get_all_layers (and so the parameter order) visits the
    # projection shortcut before the right branch, as in the Model Zoo
    net["res%s" % ix] = ElemwiseSumLayer([left, right], coeffs=1, name="res%s" % ix)
    net["res%s_relu" % ix] = NonlinearityLayer(net["res%s" % ix], rectify,
                                               name="res%s_relu" % ix)
    return net["res%s_relu" % ix]


def build_resnet50(input_shape=(None, 3, 224, 224), input_var=None, variant="caffe"):
    """Build ResNet-50 as the Lasagne Model Zoo's ``resnet50.py`` did.

    The Model Zoo's ResNet-50 is a conversion of MSRA's original Caffe model
    (``ResNet-50-deploy.prototxt``), and keeps its layer names: ``conv1``
    (7×7, stride 2, with a bias), ``bn_conv1``, ``conv1_relu``, ``pool1``;
    then sixteen bottleneck blocks ``res2a`` ... ``res5c``, each made of
    ``res<ix>_branch2a/2b/2c`` convolutions (no bias) each followed by
    ``bn<ix>_branch2a/2b/2c`` and, for 2a and 2b, a ReLU
    ``res<ix>_branch2a_relu``; the first block of a stage also has a
    projection shortcut ``res<ix>_branch1`` + ``bn<ix>_branch1``; the sum
    is ``res<ix>`` and its ReLU ``res<ix>_relu``; finally ``pool5``,
    ``fc1000`` (logits) and ``prob`` (softmax).

    With the default ``variant='caffe'`` the graph, layer order and
    parameter order are the Model Zoo's, so its pickle loads with
    ``set_all_param_values(net['prob'], values)``. The order is ``conv1.W,
    conv1.b``, then for every batch norm ``beta, gamma, mean, inv_std``,
    with each stage-opening block's shortcut (``branch1``) before its
    ``branch2a``: 268 arrays, 25,610,216 numbers (25,557,096 trainable:
    torchvision's 25,557,032 plus ``conv1.b``; 53,120 batch-norm
    statistics).

    Parameters
    ----------
    input_shape : tuple (default: ``(None, 3, 224, 224)``)
        Shape of the input layer.
    input_var : torch.Tensor, optional
        A default input tensor for the input layer.
    variant : ``'caffe'`` or ``'v1.5'`` (default: ``'caffe'``)
        ``'caffe'``: the Model Zoo / MSRA network. A downsampling block puts
        its stride in the first 1×1 convolution (``branch2a``), ``conv1``
        has a bias, ``pool1`` is a 3×3 stride-2 max pool without padding
        that keeps the partial window at the end (Caffe's rounding up, the
        core ``Pool2DLayer(..., ignore_border=False)`` the Model Zoo used),
        ``pool5`` the Model Zoo's 7×7 average pool (``ignore_border=False``),
        batch norm epsilon ``1e-4`` (Lasagne's default).

        ``'v1.5'``: the layout of torchvision's ``resnet50`` ("ResNet v1.5"),
        for its weights (see :mod:`lasagne.models.convert`). The stride sits
        in the 3×3 convolution (``branch2b``), ``conv1`` has no bias,
        ``pool1`` is ``MaxPool2DDNNLayer(3, stride=2, pad=1)``, ``pool5`` a
        global average (``GlobalPoolLayer``, any input size), batch norm
        epsilon ``1e-5``. Same layer names; the parameter order differs from
        the Model Zoo's only by the missing ``conv1.b``.

    Returns
    -------
    dict
        Layer name → layer; each layer's ``name`` is its key.

    Examples
    --------
    >>> from lasagne.models import build_resnet50
    >>> net = build_resnet50()
    >>> net['res5c_relu'].output_shape
    (None, 2048, 7, 7)
    >>> net['res3a_branch2a'].stride, net['res3a_branch2b'].stride
    ((2, 2), (1, 1))
    >>> v15 = build_resnet50(variant='v1.5')
    >>> v15['res3a_branch2a'].stride, v15['res3a_branch2b'].stride
    ((1, 1), (2, 2))
    """
    if variant not in RESNET50_VARIANTS:
        raise ValueError("build_resnet50: variant must be one of {}, got {!r}".format(
            RESNET50_VARIANTS, variant))
    caffe = variant == "caffe"
    epsilon = 1e-4 if caffe else 1e-5

    net = {}
    net["input"] = InputLayer(input_shape, input_var=input_var, name="input")
    layer = _conv_bn(net, net["input"], "conv1", "bn_conv1", "conv1_relu", 64, 7, 2, 3,
                     epsilon, bias=caffe)
    if caffe:
        net["pool1"] = layer = Pool2DLayer(layer, pool_size=3, stride=2, pad=0,
                                           ignore_border=False, mode="max", name="pool1")
    else:
        net["pool1"] = layer = MaxPool2DDNNLayer(layer, 3, stride=2, pad=1, name="pool1")

    for stage, blocks, width, stride in _RESNET50_STAGES:
        for letter in blocks:
            first = letter == "a"
            layer = _bottleneck(net, layer, "%d%s" % (stage, letter), width,
                                stride if first else 1, projection=first,
                                stride_in_3x3=not caffe, epsilon=epsilon)

    if caffe:
        net["pool5"] = layer = Pool2DLayer(layer, pool_size=7, stride=1, pad=0,
                                           ignore_border=False, mode="average_exc_pad",
                                           name="pool5")
    else:
        net["pool5"] = layer = GlobalPoolLayer(layer, name="pool5")
    net["fc1000"] = DenseLayer(layer, num_units=1000, nonlinearity=None, name="fc1000")
    net["prob"] = NonlinearityLayer(net["fc1000"], softmax, name="prob")
    return net
